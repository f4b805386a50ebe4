"""The shipped automations end to end: the real mailserver.py with the repository's handlers/,
replies going out through `[reply] transport = smtp` to an aiosmtpd sink on 127.0.0.1.

A question reaches 8ball once over pipes (inetd mode) and once over TCP (`listen`, with
`mailserver.py send` as the client); the sink must get the answer."""

from __future__ import annotations

import email
import os
import subprocess
import sys
from email import policy
from pathlib import Path

import pytest
from conftest import MAILSERVER, ROOT, Sink, free_port, wait_for_port, wait_until

from inbound.delivery.router import load_python

ANSWERS = load_python("8ball", str(ROOT / "handlers" / "8ball.py")).module.ANSWERS  # type: ignore[union-attr]

QUESTION = (
    b"From: Alice <alice@example.net>\r\n"
    b"To: 8ball@example.org\r\n"
    b"Subject: Will the tests pass?\r\n"
    b"Message-ID: <e2e-1@example.net>\r\n"
    b"\r\n"
    b"Tell me.\r\n"
)


@pytest.fixture
def config(tmp_path: Path, smtp_sink: Sink) -> Path:
    """A config with the shipped handlers and replies to the sink."""
    path = tmp_path / "config.ini"
    path.write_text(
        f"""\
[server]
hostname = mx.test.example
domains = example.org
spool = spool
log = server.log
log_level = debug

[handlers]
dir = {ROOT / "handlers"}
timeout = 30

[checks]
spf = no
dkim = no
dmarc = no
arc = no

[reply]
transport = smtp
smtp_host = 127.0.0.1
smtp_port = {smtp_sink.port}
smtp_starttls = no
require_auth = no
"""
    )
    return path


def mailserver(*argv: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REMOTE_", "TCPREMOTE", "MAILSERVER"))}
    env["REMOTE_ADDR"] = "192.0.2.10"
    return subprocess.run(
        [sys.executable, str(MAILSERVER), *argv], capture_output=True, env=env, timeout=60, **kwargs
    )  # type: ignore[call-overload]


def deliver(config: Path, to: str, eml: Path) -> None:
    result = mailserver(
        "deliver", "--config", str(config), "--from", "alice@example.net", "--to", to, str(eml)
    )
    assert result.returncode == 0, result.stderr


def answer_in(sink: Sink, to: str) -> str:
    [got] = sink.messages
    assert got.mail_from in ("<>", "")
    assert got.rcpt_tos == [to]
    reply = email.message_from_bytes(got.data.replace(b"\r\n", b"\n"), policy=policy.default)
    assert reply["To"] == to
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["Subject"].startswith("Re: ")
    body = reply.get_content()  # type: ignore[attr-defined]
    return str(body)


def test_8ball_answers_a_question_sent_over_pipes(config: Path, smtp_sink: Sink, tmp_path: Path) -> None:
    dialogue = (
        b"EHLO client.example.net\r\n"
        b"MAIL FROM:<alice@example.net>\r\n"
        b"RCPT TO:<8ball@example.org>\r\n"
        b"DATA\r\n" + QUESTION + b".\r\n"
        b"QUIT\r\n"
    )
    result = mailserver("--config", str(config), input=dialogue)
    assert b"\r\n250 " in result.stdout and result.stderr == b""
    body = answer_in(smtp_sink, "alice@example.net")
    assert "Will the tests pass?" in body
    assert sum(answer in body for answer in ANSWERS) == 1, body
    log = (tmp_path / "server.log").read_text()
    assert "reply of 8ball sent to alice@example.net via smtp" in log


def test_8ball_answers_mailserver_send_through_listen(config: Path, smtp_sink: Sink) -> None:
    port = free_port()
    listener = subprocess.Popen(
        [sys.executable, str(MAILSERVER), "listen", "--port", str(port), "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        sent = mailserver(
            "send", "--to", "8ball@example.org", "--from", "bob@example.net",
            "--subject", "Is listen working?", "--server", f"127.0.0.1:{port}",
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        assert sent.stdout.startswith(b"250 ")
        assert wait_until(lambda: smtp_sink.messages, timeout=20)
    finally:
        listener.terminate()
        listener.wait(timeout=15)
    body = answer_in(smtp_sink, "bob@example.net")
    assert "Is listen working?" in body and any(answer in body for answer in ANSWERS)


def test_echo_reports_what_the_server_saw(config: Path, smtp_sink: Sink, tmp_path: Path) -> None:
    eml = tmp_path / "attachment.eml"
    eml.write_bytes(
        (ROOT / "examples" / "mail" / "attachment.eml").read_bytes().replace(b"localhost", b"example.org")
    )
    deliver(config, "echo@example.org", eml)
    body = answer_in(smtp_sink, "alice@example.net")
    assert "RCPT TO:     <echo@example.org>" in body
    assert '      text/csv (filename="report.csv", base64, 29 octets)' in body


def test_list_mail_to_8ball_gets_no_answer(config: Path, smtp_sink: Sink, tmp_path: Path) -> None:
    eml = tmp_path / "list.eml"
    eml.write_bytes(QUESTION.replace(b"Subject:", b"List-Id: <x.example.net>\r\nSubject:"))
    deliver(config, "8ball@example.org", eml)
    assert smtp_sink.messages == []
