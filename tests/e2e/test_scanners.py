"""[checks] rspamd and clamd: verdicts from the real daemons (Debian's rspamd and clamd on
loopback), in the Envelope, the environment and our trace fields; spam_reject and
virus_reject answer 550 5.7.1 before the 250; a scanner that is down, hangs, resets or
answers garbage gives the verdict `unknown` and the message is accepted, logged once per
connection."""

from __future__ import annotations

import json
import time
from email.message import EmailMessage

import pytest
from conftest import Server, codes, dialogue, replies
from scanner_daemons import EICAR, EICAR_NAME, GTUBE, Misbehaving, free_port

CLEAN = b"From: Alice <alice@sender.example>\r\nTo: sink@example.org\r\nSubject: hi\r\n\r\nHello.\r\n"
SPAM = (
    b"From: Alice <alice@sender.example>\r\nTo: sink@example.org\r\nSubject: offer\r\n\r\n" + GTUBE + b"\r\n"
)


def with_eicar() -> bytes:
    """A MIME message with the EICAR test file as a base64 attachment (not in the raw bytes)."""
    message = EmailMessage()
    message["From"] = "alice@sender.example"
    message["To"] = "sink@example.org"
    message["Subject"] = "the file"
    message.set_content("attached")
    message.add_attachment(EICAR, maintype="application", subtype="octet-stream", filename="eicar.com")
    data = message.as_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    assert EICAR not in data
    return data


def accepted(out: bytes) -> bool:
    return b"250 2.0.0 OK queued" in out


# -- rspamd ------------------------------------------------------------------------------
def test_gtube_gets_rspamd_action_reject_in_env_envelope_and_trace_field(server: Server, rspamd) -> None:  # type: ignore[no-untyped-def]
    server.write_config(checks={"rspamd": rspamd.address})
    assert accepted(server.smtp(dialogue(body=SPAM)))  # spam_reject = no: only reported
    [(message, env)] = server.got()
    assert env["SPAM_ACTION"] == "reject"
    assert float(env["SPAM_SCORE"]) >= 15
    assert env["VIRUS"] == "" and env["VIRUS_STATUS"] == ""  # clamd not configured
    top = message.split(b"\n\n")[0].decode()
    assert "X-Spam-Result: mx.test.example; action=reject; score=15.00; required=15.00; symbols=GTUBE" in top
    assert top.index("Authentication-Results:") < top.index("X-Spam-Result:") < top.index("Received:")


def test_a_clean_message_gets_no_action(server: Server, rspamd) -> None:  # type: ignore[no-untyped-def]
    server.write_config(checks={"rspamd": rspamd.address, "spam_reject": "yes"})
    assert accepted(server.smtp(dialogue(body=CLEAN)))
    [(_, env)] = server.got()
    assert env["SPAM_ACTION"] == "no action"
    assert env["SPAM_SCORE"] and float(env["SPAM_SCORE"]) < 15


def test_spam_reject_refuses_gtube_with_550_before_the_250(server: Server, rspamd) -> None:  # type: ignore[no-untyped-def]
    server.write_config(checks={"rspamd": rspamd.address, "spam_reject": "yes"})
    out = server.smtp(dialogue(body=SPAM))
    assert replies(out)[-2] == b"550 5.7.1 Message refused as spam (score 15.00)"
    assert server.got() == [] and server.ids("queue") == [] and server.ids("incoming") == []
    assert "refused: spam, score 15.00 (rspamd)" in server.log()


def test_a_python_handler_reads_envelope_spam(server: Server, rspamd) -> None:  # type: ignore[no-untyped-def]
    server.write_config(checks={"rspamd": rspamd.address})
    server.add_python(
        "judge",
        """
        import json, os
        def handle(envelope):
            spam = envelope.spam
            out = {"action": spam.action, "score": spam.score, "symbols": sorted(spam.symbols),
                   "virus": envelope.virus, "virus_status": envelope.virus_status}
            with open(os.path.join(envelope.spool, "..", "judged.json"), "w") as f:
                json.dump(out, f)
        """,
    )
    assert accepted(server.smtp(dialogue("judge@example.org", body=SPAM)))
    judged = json.loads((server.root / "judged.json").read_text())
    assert judged == {
        "action": "reject",
        "score": 15.0,
        "symbols": ["GTUBE"],
        "virus": None,
        "virus_status": "",
    }


def test_the_verdict_is_kept_for_a_retry(server: Server, rspamd) -> None:  # type: ignore[no-untyped-def]
    server.write_config(checks={"rspamd": rspamd.address})
    server.add_program("flaky", '#!/bin/sh\necho "$SPAM_ACTION" >> "$(dirname "$0")/../flaky.txt"\nexit 75\n')
    assert accepted(server.smtp(dialogue("flaky@example.org", body=SPAM)))
    [queue_id] = server.ids("queue")
    state = json.loads((server.spool / "queue" / queue_id / "state.json").read_text())
    assert state["scan"]["spam"]["action"] == "reject" and state["scan"]["virus"] is None
    assert server.run("queue", "--run", "--now").returncode == 0
    shown = server.run("queue", "--show", queue_id).stdout.decode()
    assert "spam:        action=reject; score=15.00; required=15.00; symbols=GTUBE" in shown
    assert (server.root / "flaky.txt").read_text().split("\n")[:2] == ["reject", "reject"]


# -- clamd -------------------------------------------------------------------------------
def test_virus_reject_is_the_default_and_refuses_eicar_with_550(server: Server, clamd) -> None:  # type: ignore[no-untyped-def]
    server.write_config(checks={"clamd": clamd.address})
    out = server.smtp(dialogue(body=with_eicar()))
    assert replies(out)[-2] == f"550 5.7.1 Message refused: virus found ({EICAR_NAME})".encode()
    assert server.got() == [] and server.ids("queue") == []
    assert f"refused: virus {EICAR_NAME} (clamd)" in server.log()


def test_with_virus_reject_off_the_virus_is_reported_over_tcp_too(server: Server, clamd) -> None:  # type: ignore[no-untyped-def]
    server.write_config(checks={"clamd": clamd.tcp, "virus_reject": "no"})
    assert accepted(server.smtp(dialogue(body=with_eicar())))
    [(message, env)] = server.got()
    assert env["VIRUS"] == EICAR_NAME and env["VIRUS_STATUS"] == "infected"
    assert env["SPAM_ACTION"] == "" and env["SPAM_SCORE"] == ""  # rspamd not configured
    assert f"X-Virus-Result: mx.test.example; infected; name={EICAR_NAME}".encode() in message


def test_a_clean_message_passes_clamd_and_both_scanners_together(server: Server, clamd, rspamd) -> None:  # type: ignore[no-untyped-def]
    server.write_config(checks={"clamd": clamd.address, "rspamd": rspamd.address, "spam_reject": "yes"})
    assert accepted(server.smtp(dialogue(body=CLEAN)))
    [(message, env)] = server.got()
    assert (env["VIRUS"], env["VIRUS_STATUS"], env["SPAM_ACTION"]) == ("", "clean", "no action")
    assert b"X-Virus-Result: mx.test.example; clean\n" in message


# -- scanners that fail ------------------------------------------------------------------
def test_a_scanner_that_is_down_gives_unknown_and_is_logged_once_per_connection(server: Server) -> None:
    port = free_port()  # nothing listens there
    server.write_config(
        checks={"rspamd": f"http://127.0.0.1:{port}", "spam_reject": "yes", "clamd": f"127.0.0.1:{port}"}
    )
    two = (
        dialogue(body=CLEAN, quit=False) + dialogue(body=CLEAN).split(b"\r\n", 1)[1]
    )  # 2 messages, 1 session
    out = server.smtp(two)
    assert codes(out).count(250) >= 6 and out.count(b"OK queued") == 2
    runs = server.got()
    assert len(runs) == 2
    for _, env in runs:
        assert (env["SPAM_ACTION"], env["SPAM_SCORE"], env["VIRUS"], env["VIRUS_STATUS"]) == (
            "unknown",
            "",
            "",
            "unknown",
        )
    log = server.log()
    assert log.count(f"rspamd: http://127.0.0.1:{port}: Connection refused; verdict unknown") == 1
    assert log.count(f"clamd: 127.0.0.1:{port}: Connection refused; verdict unknown") == 1
    assert (
        b"X-Spam-Result: mx.test.example; action=unknown (http://127.0.0.1:%d: Connection" % port
        in runs[0][0]
    )


@pytest.mark.parametrize(
    "mode, garbage, why",
    [
        ("hang", b"", "no answer within 1 s"),
        ("reset", b"", "Connection reset by peer"),
        ("garbage", b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nnot json!", "answer is not JSON"),
        ("garbage", b"\x00\xff junk", "bad HTTP answer: BadStatusLine"),
        (
            "garbage",
            b'HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n{"action": "deport"}',
            "unknown action 'deport'",
        ),
    ],
)
def test_rspamd_that_hangs_resets_or_answers_garbage_gives_unknown(
    server: Server, mode: str, garbage: bytes, why: str
) -> None:
    fake = Misbehaving(mode, garbage)
    try:
        server.write_config(
            checks={"rspamd": f"http://127.0.0.1:{fake.port}", "spam_reject": "yes", "scan_timeout": "1"}
        )
        started = time.monotonic()
        assert accepted(server.smtp(dialogue(body=SPAM)))
        assert time.monotonic() - started < 10
    finally:
        fake.close()
    [(_, env)] = server.got()
    assert env["SPAM_ACTION"] == "unknown"
    assert f"rspamd: http://127.0.0.1:{fake.port}: {why}; verdict unknown" in server.log()


@pytest.mark.parametrize(
    "mode, garbage, why",
    [
        ("hang", b"", "no answer within 1 s"),
        ("reset", b"", "Connection reset by peer"),
        ("garbage", b"stream: what?\0", "unexpected answer 'stream: what?'"),
        ("garbage", b"INSTREAM size limit exceeded. ERROR\0", "INSTREAM size limit exceeded."),
        ("garbage", b"", "connection closed without an answer"),
    ],
)
def test_clamd_that_hangs_resets_or_answers_garbage_gives_unknown(
    server: Server, mode: str, garbage: bytes, why: str
) -> None:
    fake = Misbehaving(mode, garbage)
    try:
        server.write_config(checks={"clamd": f"127.0.0.1:{fake.port}", "scan_timeout": "1"})
        assert accepted(server.smtp(dialogue(body=with_eicar())))  # virus_reject, but no verdict
    finally:
        fake.close()
    [(_, env)] = server.got()
    assert (env["VIRUS"], env["VIRUS_STATUS"]) == ("", "unknown")
    assert f"clamd: 127.0.0.1:{fake.port}: {why}; verdict unknown" in server.log()


# -- config ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key, value, why",
    [
        ("rspamd", "127.0.0.1:11333", "expected an http:// URL"),
        ("rspamd", "ftp://127.0.0.1", "expected an http:// URL"),
        ("rspamd", "http://127.0.0.1:99999", "expected an http:// URL"),
        ("clamd", "clamd.sock", "expected a unix socket path"),
        ("clamd", "127.0.0.1:0", "expected a unix socket path"),
        ("clamd", "tcp://127.0.0.1:3310", "expected a unix socket path"),
        ("scan_timeout", "0", "expected a number of seconds > 0"),
    ],
)
def test_a_bad_scanner_setting_is_one_line_naming_the_key(
    server: Server, key: str, value: str, why: str
) -> None:
    server.write_config(checks={key: value})
    result = server.run("check")
    assert result.returncode == 78
    [line] = result.stderr.decode().strip().splitlines()
    assert f"[checks] {key}: {why}" in line and str(server.config) in line


def test_settings_as_users_write_them_work(server: Server, rspamd, clamd) -> None:  # type: ignore[no-untyped-def]
    import os

    relative = os.path.relpath(clamd.address, server.root)  # relative to the config file
    server.write_config(
        checks={"rspamd": rspamd.address + "/checkv2", "clamd": "./" + relative, "virus_reject": "no"}
    )
    assert server.run("check").returncode == 0
    assert accepted(server.smtp(dialogue(body=with_eicar())))
    [(_, env)] = server.got()
    assert (env["SPAM_ACTION"], env["VIRUS_STATUS"]) == ("no action", "infected")
    assert "rspamd action='no action'" in server.log() and f"clamd infected {EICAR_NAME}" in server.log()
