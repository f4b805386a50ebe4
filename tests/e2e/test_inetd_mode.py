"""mailserver.py as inetd runs it: a real subprocess, SMTP over its stdin/stdout pipes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import MAILSERVER, Server, codes, replies, wait_until

EHLO = b"EHLO client.example\r\n"
MAIL = b"MAIL FROM:<alice@sender.example>\r\n"
RCPT = b"RCPT TO:<sink@example.org>\r\n"
MESSAGE = b"From: Alice <alice@sender.example>\r\nSubject: hello\r\n\r\nHi there.\r\n"


def send(server: Server, body: bytes = MESSAGE, rcpt: bytes = RCPT, **kw: object) -> bytes:
    return server.smtp(EHLO + MAIL + rcpt + b"DATA\r\n" + body + b".\r\nQUIT\r\n", **kw)  # type: ignore[arg-type]


def test_a_message_reaches_the_program_handler_with_its_environment(server: Server) -> None:
    out = send(server, remote_addr="203.0.113.7")
    assert codes(out) == [220, 250, 250, 250, 354, 250, 221]
    [(message, env)] = server.got()
    assert message.startswith(b"Authentication-Results: mx.test.example; none\nReceived: from client.example")
    assert message.endswith(b"Subject: hello\n\nHi there.\n")  # LF line endings for programs
    assert env["SENDER"] == "alice@sender.example"
    assert env["RECIPIENT"] == "sink@example.org"
    assert env["REMOTE_ADDR"] == "203.0.113.7"
    assert env["HELO"] == "client.example"
    assert env["QUEUE_ID"] in replies(out)[5].decode()
    assert server.ids("queue") == []  # handled and keep_done = 0


def test_stdout_carries_nothing_but_smtp_replies(server: Server) -> None:
    out = server.smtp(EHLO + b"BOGUS\r\n" + MAIL + RCPT + b"DATA\r\n" + MESSAGE + b".\r\nQUIT\r\n")
    for line in out.split(b"\r\n")[:-1]:
        assert line[:3].isdigit() and line[3:4] in (b" ", b"-"), line
    assert out.endswith(b"\r\n")


def test_client_address_comes_from_the_environment_on_pipes(server: Server) -> None:
    for variable in ("REMOTE_ADDR", "TCPREMOTEIP", "REMOTE_HOST"):
        server.smtp(
            EHLO + MAIL + RCPT + b"DATA\r\n" + MESSAGE + b".\r\nQUIT\r\n",
            remote_addr="",
            env={variable: "198.51.100.4"},
        )
    assert [env["REMOTE_ADDR"] for _, env in server.got()] == ["198.51.100.4"] * 3


def test_without_any_client_address_the_client_is_unknown(server: Server) -> None:
    send(server, remote_addr="")
    [(message, env)] = server.got()
    assert env["REMOTE_ADDR"] == ""
    assert b"Received: from client.example (unknown)" in message


def test_a_broken_config_gets_421_and_exit_78_and_the_error_reaches_the_configured_log(
    server: Server,
) -> None:
    server.config.write_text("[server]\ndomains = example.org\nlog = server.log\nmax_recipients = many\n")
    result = server.run(input=EHLO)
    assert result.returncode == 78
    assert result.stdout == b"421 4.3.0 Service not available: configuration error\r\n"
    assert result.stderr == b""
    assert "[server] max_recipients: expected an integer" in server.log()


def test_with_no_syslog_socket_lines_fall_back_to_a_visible_stderr_and_say_why(server: Server) -> None:
    from inbound import log

    if log.target_problem("syslog") == "":
        pytest.skip("this machine has a syslog socket: nothing to fall back from")
    server.config.write_text("[server]\ndomains = example.org\nmax_recipients = many\n")  # log = syslog
    result = server.run(input=EHLO)
    assert result.returncode == 78
    text = result.stderr.decode()
    assert "cannot log to syslog" in text and "max_recipients" in text


def test_the_summary_line_is_logged_once_per_connection(server: Server) -> None:
    out = server.smtp(
        EHLO
        + MAIL
        + b"RCPT TO:<nobody@example.org>\r\nRCPT TO:<x@elsewhere.example>\r\n"
        + RCPT
        + b"DATA\r\n"
        + MESSAGE
        + b".\r\nQUIT\r\n"
    )
    queue_id = replies(out)[7].split()[-1].decode()
    summaries = [line for line in server.log().splitlines() if " client=" in line]
    assert len(summaries) == 1
    line = summaries[0]
    for field in (
        "client=192.0.2.10",
        "helo=client.example",
        "sender=alice@sender.example",
        "recipients=sink@example.org",
        f"queue_ids={queue_id}",
        "duration=",
        "refused=nobody@example.org:550,x@elsewhere.example:550",
    ):
        assert field in line
    assert f'reply="250 2.0.0 OK queued as {queue_id}"' in line  # the message's reply, not QUIT's


def test_the_summary_says_each_transactions_final_reply_not_the_quit(server: Server) -> None:
    bouncer = (
        "from mailserver import Reject\nINLINE = True\ndef handle(envelope):\n    raise Reject('no thanks')\n"
    )
    server.add_python("bouncer", bouncer)
    out = server.smtp(EHLO + MAIL + b"RCPT TO:<bouncer@example.org>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n"
                      + MAIL + RCPT + b"DATA\r\nSubject: y\r\n\r\nhi\r\n.\r\nQUIT\r\n")  # fmt: skip
    assert codes(out) == [220, 250, 250, 250, 354, 550, 250, 250, 354, 250, 221]
    [line] = [line for line in server.log().splitlines() if " client=" in line]
    assert 'reply="550 5.7.1 Message refused: rejected: no thanks | 250 2.0.0 OK queued as ' in line


def test_control_characters_from_the_client_are_escaped_in_the_log(server: Server) -> None:
    """Escape sequences and bells from the client (and a handler's output) are written as
    escapes: each log line stays one line of printable text."""
    server.add_program("noisy", "#!/bin/sh\ncat > /dev/null\nprintf 'clear\\033[2J bell\\007 end\\n'\n")
    out = server.smtp(
        EHLO
        + b"MAIL FROM:<alice@sender.example>\r\nRCPT TO:<noisy@example.org>\r\nDATA\r\n"
        + MESSAGE
        + b".\r\n"
    )
    assert codes(out) == [220, 250, 250, 250, 354, 250]
    # with no message, the summary line logs the last reply, which quotes the client
    assert codes(server.smtp(EHLO + b"MAIL FROM:<\x1b]2;owned\x07\x0b\x0c@x>\r\n")) == [220, 250, 501]
    log = wait_until(lambda: "bell" in server.log() and server.log(), what="the handler's output logged")
    assert all(c == "\n" or c.isprintable() for c in log), [c for c in log if not c.isprintable()]
    assert "<\\x1b]2;owned\\x07\\x0b\\x0c@x>" in log
    assert "clear\\x1b[2J bell\\x07 end" in log


def test_the_client_is_released_before_handlers_run(server: Server) -> None:
    """The session ends (EOF on our stdout) while a slow handler is still running."""
    server.add_program("slow", "#!/bin/sh\nsleep 3\ncat > /dev/null\n")
    proc = subprocess.Popen(
        [sys.executable, str(MAILSERVER), "--config", str(server.config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin and proc.stdout
    proc.stdin.write(EHLO + MAIL + b"RCPT TO:<slow@example.org>\r\nDATA\r\n" + MESSAGE + b".\r\nQUIT\r\n")
    proc.stdin.close()
    started = time.monotonic()
    out = proc.stdout.read()  # returns at EOF: when the server closed stdout
    released = time.monotonic() - started
    assert codes(out)[-1] == 221
    assert released < 2.5
    assert proc.wait(timeout=20) == 0
    assert time.monotonic() - started >= 2.9


def test_postmaster_without_handler_or_catchall_goes_to_failed(server: Server) -> None:
    out = send(server, rcpt=b"RCPT TO:<postmaster@example.net>\r\n")
    assert codes(out)[-2] == 250
    assert len(server.ids("failed")) == 1


def test_shipped_postmaster_handler_keeps_a_maildir_under_the_spool(server: Server) -> None:
    repo_handler = MAILSERVER.parent / "handlers" / "postmaster.py"
    (server.handlers / "postmaster.py").write_text(repo_handler.read_text())
    send(server, rcpt=b"RCPT TO:<postmaster>\r\n")
    new = server.spool / "postmaster" / "new"
    [name] = os.listdir(new)
    assert (new / name).read_bytes().endswith(b"Hi there.\n")


def test_a_session_that_accepts_nothing_imports_no_parser_or_dns_stack(server: Server) -> None:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", str(MAILSERVER), "--config", str(server.config)],
        input=EHLO + MAIL + b"RCPT TO:<nobody@example.org>\r\nQUIT\r\n",
        capture_output=True,
        env={**os.environ, "REMOTE_ADDR": "192.0.2.1"},
    )
    assert codes(result.stdout) == [220, 250, 250, 550, 221]
    imported = {line.split("|")[-1].strip() for line in result.stderr.decode().splitlines()}
    for heavy in (
        "email.parser",
        "email.feedparser",
        "dkim",
        "spf",
        "dns.resolver",
        "ssl",
        "asyncio",
        "subprocess",
        "inbound.checks",
        "inbound.envelope",
        "json",
    ):
        assert heavy not in imported, heavy


def test_sigkill_before_the_250_leaves_nothing_accepted(server: Server) -> None:
    proc = subprocess.Popen(
        [sys.executable, str(MAILSERVER), "--config", str(server.config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin and proc.stdout
    proc.stdin.write(EHLO + MAIL + RCPT + b"DATA\r\n" + MESSAGE)
    proc.stdin.flush()
    assert wait_until(lambda: server.ids("incoming"))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert server.ids("queue") == [] and server.ids("failed") == []


@pytest.mark.parametrize("recipient", [RCPT, b"RCPT TO:<postmaster@example.org>\r\n"])
def test_sigkill_after_the_250_is_recovered_by_queue_run(server: Server, recipient: bytes) -> None:
    """Killed after 250 but before the handler finished: `queue --run` delivers it later."""
    server.add_program("sink", "#!/bin/sh\nsleep 30\n")
    proc = subprocess.Popen(
        [sys.executable, str(MAILSERVER), "--config", str(server.config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert proc.stdin and proc.stdout
    proc.stdin.write(EHLO + MAIL + recipient + b"DATA\r\n" + MESSAGE + b".\r\n")
    proc.stdin.flush()
    accepted = b""
    while b"250 2.0.0 OK queued" not in accepted:
        accepted += proc.stdout.read1(4096)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    [queue_id] = server.ids("queue")
    from conftest import SINK

    server.add_program("sink", SINK)
    result = server.run("queue", "--run")
    assert result.returncode == 0, result.stderr
    assert server.ids("queue") == []
    if recipient == RCPT:
        assert len(server.got()) == 1
    else:
        assert server.ids("failed") == [queue_id]
        state = json.loads((server.spool / "failed" / queue_id / "state.json").read_text())
        assert state["handlers"]["-failed"]["status"] == "failed"
