"""`mailserver.py send` (inbound/cli/send.py): the test client against a real aiosmtpd sink and the
real server, its exit statuses, and `send --reply` as program handlers use it."""

from __future__ import annotations

import argparse
import email
from email import policy
from pathlib import Path

import pytest
from conftest import Server, Sink, free_port, wait_until

from inbound.cli import send


def args(*argv: str, config: str | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    send.add_arguments(parser)
    namespace = parser.parse_args(list(argv))
    namespace.config = config
    return namespace


def run(*argv: str, config: str | None = None) -> int:
    parsed = args(*argv, config=config)
    if parsed.reply is not None:
        from inbound.cli.reply import reply_main

        return reply_main(parsed)
    return send.main(parsed)


def parse(data: bytes) -> email.message.EmailMessage:
    return email.message_from_bytes(data.replace(b"\r\n", b"\n"), policy=policy.default)  # type: ignore[return-value]


# -- sending ------------------------------------------------------------------------------------


def test_send_delivers_a_message_and_prints_the_final_reply(
    smtp_sink: Sink, capsys: pytest.CaptureFixture[str]
) -> None:
    server = f"127.0.0.1:{smtp_sink.port}"
    status = run("--to", "8ball@localhost", "--to", "echo@localhost", "--server", server,
                 "--subject", "Will it work?", "--body", "Tell me.")  # fmt: skip
    assert status == 0
    assert capsys.readouterr().out.strip() == "250 2.0.0 Ok: queued as SINK1"
    [got] = smtp_sink.messages
    assert got.mail_from == "you@localhost"
    assert got.rcpt_tos == ["8ball@localhost", "echo@localhost"]
    message = parse(got.data)
    assert message["Subject"] == "Will it work?"
    assert message["To"] == "8ball@localhost, echo@localhost"
    assert message["Message-ID"] and message["Date"]
    assert message.get_content() == "Tell me.\n"


def test_send_file_goes_as_it_is_with_crlf_line_endings(smtp_sink: Sink, tmp_path: Path) -> None:
    eml = tmp_path / "m.eml"
    eml.write_bytes(b"From: a@example.net\nTo: b@localhost\nSubject: as is\n\n.leading dot\nbody\n")
    assert run("--to", "b@localhost", "--from", "a@example.net", "--file", str(eml),
               "--server", f"127.0.0.1:{smtp_sink.port}") == 0  # fmt: skip
    [got] = smtp_sink.messages
    assert got.mail_from == "a@example.net"
    assert (
        got.data
        == b"From: a@example.net\r\nTo: b@localhost\r\nSubject: as is\r\n\r\n.leading dot\r\nbody\r\n"
    )


def test_send_attaches_files(smtp_sink: Sink, tmp_path: Path) -> None:
    (tmp_path / "report.csv").write_text("a,b\n1,2\n")
    assert run("--to", "x@localhost", "--attach", str(tmp_path / "report.csv"),
               "--server", f"127.0.0.1:{smtp_sink.port}") == 0  # fmt: skip
    [part] = parse(smtp_sink.messages[0].data).iter_attachments()
    assert part.get_filename() == "report.csv" and part.get_content_type() == "text/csv"


def test_verbose_prints_the_smtp_dialogue_on_stderr(
    smtp_sink: Sink, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("-v", "--to", "x@localhost", "--server", f"127.0.0.1:{smtp_sink.port}") == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("S: 220 ")
    assert "C: ehlo localhost" in err
    assert any(line.startswith("C: mail FROM:<you@localhost>") for line in err)
    assert "C: rcpt TO:<x@localhost>" in err
    assert "S: 354 End data with <CR><LF>.<CR><LF>" in err
    assert "C: ." in err
    assert "S: 250 2.0.0 Ok: queued as SINK1" in err


@pytest.mark.parametrize(
    "rcpt_reply, data_reply, status",
    [
        ("450 4.2.0 greylisted", None, 75),
        ("550 5.1.1 no such user", None, 69),
        (None, "451 4.3.0 try later", 75),
        (None, "554 5.6.0 refused", 69),
    ],
)
def test_exit_status_follows_the_reply(
    smtp_sink: Sink,
    capsys: pytest.CaptureFixture[str],
    rcpt_reply: str | None,
    data_reply: str | None,
    status: int,
) -> None:
    smtp_sink.rcpt_reply, smtp_sink.data_reply = rcpt_reply, data_reply
    assert run("--to", "x@localhost", "--server", f"127.0.0.1:{smtp_sink.port}") == status
    assert (rcpt_reply or data_reply or "")[:3] in capsys.readouterr().err


def test_no_server_listening_is_a_temporary_failure(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("--to", "x@localhost", "--server", f"127.0.0.1:{free_port()}") == 75
    assert "ConnectionRefusedError" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, status",
    [
        ((), 64),
        (("--to", "x@localhost", "--server", "nohost:port"), 64),
        (("--to", "x@localhost", "--file", "/nonexistent.eml"), 66),
        (("--to", "x@localhost", "--file", "/dev/null", "--subject", "s"), 64),
    ],
)
def test_usage_errors(argv: tuple[str, ...], status: int) -> None:
    assert run(*argv) == status


def test_body_and_file_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        args("--to", "x@localhost", "--body", "b", "--file", "f")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("127.0.0.1:2525", ("127.0.0.1", 2525)),
        ("[::1]:25", ("::1", 25)),
        ("::1:25", ("::1", 25)),
        ("::1", ("::1", 25)),
        ("[::1:25]", ("::1:25", 25)),
        ("2001:db8::5:2525", ("2001:db8::5", 2525)),
        ("2001:db8::", ("2001:db8::", 25)),
        ("mx.example.org", ("mx.example.org", 25)),
    ],
)
def test_server_option_forms(text: str, expected: tuple[str, int]) -> None:
    assert send.parse_server(text) == expected


def test_send_reaches_a_handler_through_listen(server: Server, listening: int) -> None:
    assert (
        run("--to", "sink@example.org", "--subject", "via listen", "--server", f"127.0.0.1:{listening}") == 0
    )
    runs = wait_until(lambda: server.got("sink"), timeout=15)
    assert runs and b"Subject: via listen" in runs[0][0]


# -- send --reply: replies from program handlers ------------------------------------------------------

REPLIER = """\
#!/bin/sh
exec "$PYTHON" "$MAILSERVER" send --reply --body "Hello from a program, $SENDER"
"""

QUESTION = (
    b"From: Alice <alice@example.net>\nTo: replier@example.org\n"
    b"Subject: hi\nMessage-ID: <m1@example.net>\n\nhi\n"
)


def outbox(server: Server) -> list[bytes]:
    folder = server.root / "outbox"
    return [p.read_bytes() for p in sorted(folder.glob("*.eml"))] if folder.exists() else []


def deliver(
    server: Server, data: bytes, to: str = "replier@example.org", sender: str = "alice@example.net"
) -> str:
    eml = server.root / "in.eml"
    eml.write_bytes(data)
    result = server.run("deliver", "--from", sender, "--to", to, str(eml))
    assert result.returncode == 0, result.stderr
    return result.stdout.decode().split(":")[0]


def test_a_program_replies_through_send_reply(server: Server) -> None:
    server.add_program("replier", REPLIER)
    deliver(server, QUESTION)
    [data] = outbox(server)
    reply = parse(data)
    assert reply["To"] == "alice@example.net"
    assert reply["From"] == "replier@example.org"
    assert reply["Subject"] == "Re: hi"
    assert reply["In-Reply-To"] == "<m1@example.net>"
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["X-Mailserver-Auto-Reply"] == "replier"
    assert reply.get_content() == "Hello from a program, alice@example.net\n"
    deliver(server, QUESTION)  # the same sender again today: no second reply, and no error
    assert len(outbox(server)) == 1


def test_a_program_reply_obeys_rfc_3834(server: Server) -> None:
    server.add_program("replier", REPLIER)
    deliver(server, QUESTION.replace(b"Subject: hi", b"Precedence: bulk\nSubject: hi"))
    deliver(server, QUESTION, sender="")
    assert outbox(server) == []
    assert "Precedence: bulk" in server.log()


def test_send_reply_outside_a_handler(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    server.write_config(handlers={"keep_done": "1"})  # the message stays in done/ to be answered
    queue_id = deliver(server, QUESTION.replace(b"replier@", b"sink@"), to="sink@example.org")
    config = str(server.config)
    assert run("--reply", queue_id, "--body", "answer", "--handler", "manual", config=config) == 0
    assert "sent to alice@example.net via outbox" in capsys.readouterr().out
    assert parse(outbox(server)[0])["X-Mailserver-Auto-Reply"] == "manual"
    assert run("--reply", queue_id, "--body", "again", "--handler", "manual", config=config) == 0
    assert "already answered" in capsys.readouterr().err
    assert run("--reply", "NOSUCHID", "--body", "x", config=config) == 66
    assert run("--reply", "../../etc", "--body", "x", config=config) == 66
    assert run("--reply", queue_id, config=config) == 64  # no body
    assert run("--reply", queue_id, "--to", "x@y", "--body", "x", config=config) == 64
