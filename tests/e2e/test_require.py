"""Authentication-gated handlers: REQUIRE = [...] in a Python handler, `[handler.NAME]
require = ...` for a program.  A handler runs only when one of the results holds; else
its outcome is `unauthenticated` (failed/ for that handler, 550 5.7.1 when INLINE)."""

from __future__ import annotations

import json

from conftest import Server, dialogue
from conftest_dns import checks_against

GATED = """\
REQUIRE = {require!r}
INLINE = {inline}


def handle(envelope):
    open(envelope.config["mark"], "w").write(envelope.auth.environment()["SPF_RESULT"])
"""


def checks_on(server: Server, dns_server, **handler_sections: dict[str, str]) -> None:  # type: ignore[no-untyped-def]
    dns_server.serve({"sender.example": [{"TXT": "v=spf1 ip4:192.0.2.10 -all"}]})
    server.write_config(
        checks=checks_against(dns_server),
        **handler_sections,
    )


def state(server: Server, folder: str) -> dict:
    [queue_id] = server.ids(folder)
    return json.loads((server.spool / folder / queue_id / "state.json").read_text())


def test_a_python_handler_runs_when_one_requirement_holds(server: Server, dns_server) -> None:  # type: ignore[no-untyped-def]
    mark = server.root / "ran"
    server.add_python("gated", GATED.format(require=["dmarc=pass", "spf=pass"], inline=False))
    checks_on(server, dns_server, handler__gated={"mark": str(mark)})
    out = server.smtp(dialogue("gated@example.org"), remote_addr="192.0.2.10")
    assert b"250 2.0.0 OK queued" in out
    assert mark.read_text() == "pass"


def test_a_python_handler_that_no_requirement_admits_is_unauthenticated_and_failed(
    server: Server, dns_server
) -> None:  # type: ignore[no-untyped-def]
    mark = server.root / "ran"
    server.add_python("gated", GATED.format(require=["spf=pass"], inline=False))
    checks_on(server, dns_server, handler__gated={"mark": str(mark)})
    server.smtp(dialogue("gated@example.org", "sink@example.org"), remote_addr="203.0.113.66")  # SPF fails
    assert not mark.exists()
    entry = state(server, "failed")["handlers"]
    assert (
        entry["gated"]["status"] == "unauthenticated"
        and "none of spf=pass holds" in entry["gated"]["last_error"]
    )
    assert entry["sink"]["status"] == "done"  # the other handler is not held back
    assert "status=unauthenticated" in server.log()


def test_with_checks_off_nothing_is_authenticated(server: Server) -> None:
    mark = server.root / "ran"
    server.add_python("gated", GATED.format(require=["dkim=pass"], inline=False))
    server.write_config(handler__gated={"mark": str(mark)})
    server.smtp(dialogue("gated@example.org"))
    assert not mark.exists() and server.ids("failed")


def test_an_inline_handler_refuses_unauthenticated_mail_with_550(server: Server, dns_server) -> None:  # type: ignore[no-untyped-def]
    server.add_python("gated", GATED.format(require=["spf=pass"], inline=True))
    checks_on(server, dns_server, handler__gated={"mark": str(server.root / "ran")})
    out = server.smtp(dialogue("gated@example.org"), remote_addr="203.0.113.66")
    assert b"550 5.7.1 Message refused: REQUIRE: none of spf=pass holds" in out
    assert server.ids("queue") == [] and server.ids("failed") == []


def test_a_program_handler_is_gated_by_its_require_setting(server: Server, dns_server) -> None:  # type: ignore[no-untyped-def]
    checks_on(server, dns_server, handler__sink={"require": "dmarc=pass, spf=pass"})
    server.smtp(dialogue("sink@example.org"), remote_addr="192.0.2.10")
    assert len(server.got()) == 1
    server.smtp(dialogue("sink@example.org"), remote_addr="203.0.113.66")
    assert len(server.got()) == 1  # not run for the forged one
    assert state(server, "failed")["handlers"]["sink"]["status"] == "unauthenticated"


def test_a_malformed_require_is_a_broken_handler(server: Server) -> None:
    server.add_python("gated", GATED.format(require="dkim=pass", inline=False))
    result = server.run("check")
    assert result.returncode == 78 and b"REQUIRE" in result.stderr
    server.write_config(handler__sink={"require": "dkim=maybe"})
    result = server.run("check")
    assert result.returncode == 78 and b"[handler.sink] require" in result.stderr


def test_the_require_setting_gates_a_python_handler_and_wins_over_its_require(
    server: Server, dns_server
) -> None:  # type: ignore[no-untyped-def]
    mark = server.root / "ran"
    server.add_python("gated", GATED.format(require=["spf=pass"], inline=False))
    checks_on(server, dns_server, handler__gated={"mark": str(mark), "require": "dkim=pass"})
    server.smtp(dialogue("gated@example.org"), remote_addr="192.0.2.10")  # SPF passes, no DKIM
    assert not mark.exists()
    assert "none of dkim=pass holds" in state(server, "failed")["handlers"]["gated"]["last_error"]


def test_svnsync_shipped_is_gated_by_require_dkim_pass_as_documented(server: Server, dns_server) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from conftest import ROOT

    shutil.copy(ROOT / "handlers" / "svnsync.py", server.handlers / "svnsync.py")
    section = {"mirror": "file:///nonexistent", "senders": "alice@sender.example", "require": "dkim=pass"}
    checks_on(server, dns_server, handler__svnsync=section)
    server.smtp(dialogue("svnsync@example.org"), remote_addr="192.0.2.10")  # SPF pass is not enough now
    entry = state(server, "failed")["handlers"]["svnsync"]
    assert entry["status"] == "unauthenticated" and "dkim=pass" in entry["last_error"]
