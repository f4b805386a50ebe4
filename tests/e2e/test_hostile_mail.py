"""Hostile mail on the whole path: SMTP over pipes into the real mailserver.py, the shipped
handlers (8ball, echo) answering through the outbox, and what the Envelope gives them.

Line breaks that are not CR/LF (form feed, VT, NEL, U+2028), controls and raw 8-bit in
header fields must neither crash a handler (the email package refuses them in a reply's
header with ValueError, and the message would be retried for five days) nor reach what
the Envelope hands out."""

from __future__ import annotations

import email
import shutil
from email import policy
from pathlib import Path

import pytest
from conftest import ROOT, Server, codes, dialogue

HOSTILE_SUBJECTS = [
    b"Will it\x0cwork?",  # form feed
    b"Will it\x0bwork?",  # vertical tab
    "Will it\u0085work?".encode(),  # NEL, raw UTF-8
    "Will it\u2028work\u2029?".encode(),  # line and paragraph separators, raw UTF-8
    b"Will it \x1b[31mwork\x07?",  # an escape sequence and a bell
    b"=?utf-8?q?Will_it=0Cwork=E2=80=A8=1C=C2=85?=",  # the same, encoded
    b"J\xc3\xb6rg asks: =?utf-8?b?d2lsbCBpdAt3b3JrPw==?=",  # raw UTF-8 and an encoded VT
]


def shipped(server: Server, *names: str) -> None:
    for name in names:
        shutil.copy(ROOT / "handlers" / f"{name}.py", server.handlers / f"{name}.py")


def outbox(server: Server) -> list[email.message.EmailMessage]:
    folder = server.root / "outbox"
    files = sorted(folder.glob("*.eml")) if folder.exists() else []
    return [email.message_from_bytes(f.read_bytes(), policy=policy.default) for f in files]  # type: ignore[misc]


def question(subject: bytes, to: str) -> bytes:
    return (
        b"From: =?utf-8?q?J=C3=B6rg=0C?= <joerg@sender.example>\r\nTo: " + to.encode() + b"\r\n"
        b"Subject: " + subject + b"\r\nMessage-ID: <q1@sender.example>\r\n\r\nPlease answer.\r\n"
    )


@pytest.mark.parametrize("handler", ["8ball", "echo"])
@pytest.mark.parametrize("subject", HOSTILE_SUBJECTS, ids=range(len(HOSTILE_SUBJECTS)))
def test_a_subject_with_any_line_break_or_control_is_answered(
    server: Server, handler: str, subject: bytes
) -> None:
    shipped(server, handler)
    to = f"{handler}@example.org"
    out = server.smtp(dialogue(to, sender="joerg@sender.example", body=question(subject, to)))
    assert codes(out)[-2:] == [250, 221]
    assert server.ids("queue") == [] and server.ids("failed") == []  # done, not deferred
    [reply] = outbox(server)
    assert reply["To"] == "joerg@sender.example"
    assert str(reply["Subject"]).startswith("Re: Will it") or str(reply["Subject"]).startswith("Re: Jörg")
    assert all(c.isprintable() for c in str(reply["Subject"]))
    assert "crashed" not in server.log()


def test_an_smtputf8_recipient_with_a_line_break_is_refused_at_rcpt(server: Server) -> None:
    shipped(server, "8ball")
    for recipient in ("8ball+\u0085x@example.org", "8ball+\u2028@example.org", "8ball+\x9b@example.org"):
        out = server.smtp(
            b"EHLO client.example\r\nMAIL FROM:<joerg@sender.example> SMTPUTF8\r\n"
            b"RCPT TO:<" + recipient.encode() + b">\r\nQUIT\r\n"
        )
        assert codes(out) == [220, 250, 250, 501, 221], out
    assert server.ids("queue") == [] and server.ids("failed") == []


def test_a_recipient_with_a_line_break_given_to_deliver_gets_no_reply_and_no_crash(server: Server) -> None:
    shipped(server, "8ball")
    message = server.root / "q.eml"
    to = "8ball+\u2028@example.org"
    message.write_bytes(question(b"Will it work?", to))
    result = server.run("deliver", "--from", "joerg@sender.example", "--to", to, str(message))
    assert result.returncode == 0, result.stdout + result.stderr
    assert outbox(server) == []
    assert "cannot be the From of a reply" in server.log() and "crashed" not in server.log()


def test_a_handler_gets_raw_utf8_names_and_control_free_values(server: Server, tmp_path: Path) -> None:
    """What a Python handler reads: valid Unicode, one line each, safe file names."""
    got = tmp_path / "got.json"
    server.add_python(
        "look",
        f"""
        import json

        def handle(envelope):
            data = envelope.as_dict(with_attachments=True)
            data["names"] = [a.name for a in envelope.from_ + envelope.to]
            with open({str(got)!r}, "w", encoding="utf-8") as f:
                json.dump(data, f, ensure_ascii=False)
        """,
    )
    body = (
        b"From: J\xc3\xb6rg M\xc3\xbcller <j\xc3\xb6rg@sender.example>\r\n"
        b'To: "Ren\xc3\xa9e\x0b\xe2\x80\xa8" <look@example.org>,\r\n'
        b" =?utf-8?q?Zo=C3=AB=C2=85?= <zoe@example.org>\r\n"
        b"Subject: Gr\xc3\xbc\xc3\x9fe\x0c aus \xe2\x80\xa8K\xc3\xb6ln \xff\xfe\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHallo.\r\n"
        b"--b\r\nContent-Type: text/plain\r\n"
        b"Content-Disposition: attachment; filename*=utf-8''%C3%BC%0C%E2%80%A8x%1B.txt\r\n\r\nx\r\n"
        b"--b--\r\n"
    )
    out = server.smtp(dialogue("look@example.org", body=body))
    assert codes(out)[-2:] == [250, 221]
    import json

    data = json.loads(got.read_text(encoding="utf-8"))
    assert data["names"] == ["Jörg Müller", "Renée", "Zoë"]
    assert data["from"] == ["Jörg Müller <jörg@sender.example>"]
    assert data["subject"] == "Grüße aus Köln \ufffd\ufffd"
    assert [a["filename"] for a in data["attachments"]] == ["ü x .txt"]
    for value in (data["subject"], *data["names"], *data["from"], *data["to"], *data["defects"]):
        assert value.isprintable(), value
