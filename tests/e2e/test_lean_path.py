"""What each inetd-mode process pays, asserted on real processes (issue 10): a refused
session imports none of the check stack, nor configparser (the config comes from its
compiled cache), nor even `re`; a checked session imports neither dnspython nor publicsuffixlist, nor
dataclasses/inspect, and dkimpy only for a signed message; the Public Suffix List is
built once, into the spool, never per connection.
"""

from __future__ import annotations

import os
import subprocess
import sys

import dkim
from conftest import MAILSERVER, TEST_DATA, Server, codes
from conftest_dns import checks_against

EHLO = b"EHLO mail.sender.example\r\n"
REFUSED = EHLO + b"MAIL FROM:<alice@sender.example>\r\nRCPT TO:<nobody@example.org>\r\nQUIT\r\n"
KEYS = TEST_DATA / "dkim"


def imported(server: Server, data: bytes) -> tuple[bytes, set[str]]:
    """One session under -I -S -X importtime: the replies and the modules it imported."""
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-X", "importtime", str(MAILSERVER), "--config", str(server.config)],
        input=data,
        capture_output=True,
        env={"REMOTE_ADDR": "192.0.2.10"},
        timeout=60,
    )
    return result.stdout, {line.split("|")[-1].strip() for line in result.stderr.decode().splitlines()}


def checks_on(server: Server, dns_server) -> None:  # type: ignore[no-untyped-def]
    public = (KEYS / "test-rsa2048.pub.b64").read_text().strip()
    dns_server.serve(
        {
            "sender.example": [{"TXT": "v=spf1 ip4:192.0.2.10 -all"}],
            "sel._domainkey.sender.example": [{"TXT": f"v=DKIM1; k=rsa; p={public}"}],
            "_dmarc.sender.example": [{"TXT": "v=DMARC1; p=none"}],
        }
    )
    server.write_config(checks=checks_against(dns_server))
    server.spool.mkdir(exist_ok=True)


def session(body: bytes) -> bytes:
    return (
        EHLO
        + b"MAIL FROM:<alice@sender.example>\r\nRCPT TO:<sink@example.org>\r\nDATA\r\n"
        + body
        + b".\r\nQUIT\r\n"
    )


MESSAGE = b"From: Alice <alice@sender.example>\r\nTo: sink@example.org\r\nSubject: hi\r\n\r\nHello.\r\n"


def signed() -> bytes:
    key = (KEYS / "test-rsa2048.pem").read_bytes()
    return dkim.sign(MESSAGE, b"sel", b"sender.example", key, include_headers=[b"from", b"to"]) + MESSAGE


def test_a_refused_session_imports_no_check_stack_and_no_configparser(server: Server) -> None:
    server.spool.mkdir(exist_ok=True)
    out, first = imported(server, REFUSED)  # parses config.ini, keeps it compiled in the spool
    assert codes(out) == [220, 250, 250, 550, 221]
    assert "configparser" in first
    out, modules = imported(server, REFUSED)
    assert codes(out) == [220, 250, 250, 550, 221]
    heavy = ["configparser", "inbound.checks", "inbound.envelope", "inbound.delivery.deliver", "email"]
    heavy += ["dkim", "spf", "dns", "nacl", "publicsuffixlist", "json", "subprocess", "ssl", "socket"]
    heavy += ["dataclasses", "inspect", "typing", "importlib.util", "importlib.metadata", "asyncio"]
    heavy += ["re", "fnmatch", "enum", "collections", "functools"]
    assert [m for m in heavy if m in modules] == []


def test_a_checked_session_imports_no_dnspython_publicsuffixlist_or_dataclasses(
    server: Server, dns_server
) -> None:  # type: ignore[no-untyped-def]
    checks_on(server, dns_server)
    for body in (MESSAGE, MESSAGE):  # the first builds the caches
        out, modules = imported(server, session(body))
    assert codes(out)[-2:] == [250, 221]
    [(_, env), _] = server.got()
    assert (env["SPF_RESULT"], env["DKIM_RESULT"], env["DMARC_RESULT"]) == ("pass", "none", "pass")
    assert "spf" in modules and "dkim" not in modules  # no DKIM-Signature, no ARC: no dkimpy
    unwanted = ["dns", "publicsuffixlist", "dataclasses", "inspect", "importlib.metadata", "configparser"]
    unwanted += ["email.message", "logging"]
    assert [m for m in unwanted if m in modules] == []
    out, modules = imported(server, session(signed()))
    assert server.got()[-1][1]["DKIM_RESULT"] == "pass"
    assert "dkim" in modules and "dns" not in modules and "publicsuffixlist" not in modules


def test_the_public_suffix_list_is_built_once_not_per_connection(server: Server, dns_server) -> None:  # type: ignore[no-untyped-def]
    checks_on(server, dns_server)
    server.smtp(session(signed()))
    cache = server.spool / "cache" / "psl.marshal"
    first = os.stat(cache)
    for _ in range(2):
        server.smtp(session(signed()))
    again = os.stat(cache)
    assert (again.st_ino, again.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)
    assert all(env["DMARC_RESULT"] == "pass" for _, env in server.got())
    assert sorted(p.name for p in cache.parent.iterdir()) == ["config.marshal", "psl.marshal"]


def test_forwarding_code_is_imported_only_for_a_bounce_to_an_srs_address(server: Server) -> None:
    from inbound import srs

    server.write_config(forward={"srs_domain": "example.org", "srs_secret": "s3", "bounces": "sink"})
    server.spool.mkdir(exist_ok=True)
    for body in (MESSAGE, MESSAGE):  # the first builds the caches
        out, modules = imported(server, session(body))
    assert codes(out)[-2:] == [250, 221]
    assert [m for m in ("inbound.srs", "inbound.autoreply", "hmac") if m in modules] == []
    address = srs.encode("alice@sender.example", "example.org", "s3").encode()
    bounce = EHLO + b"MAIL FROM:<>\r\nRCPT TO:<%s>\r\nDATA\r\n%s.\r\nQUIT\r\n" % (address, MESSAGE)
    out, modules = imported(server, bounce)
    assert codes(out)[-2:] == [250, 221]
    assert "inbound.srs" in modules and "inbound.autoreply" not in modules
    assert server.got()[-1][1]["SRS_ORIGINAL"] == "alice@sender.example"
