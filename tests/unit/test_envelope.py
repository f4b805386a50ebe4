"""The Envelope against hostile messages: bounded, never raising, safe values."""

from __future__ import annotations

import time
from pathlib import Path

from inbound.bounded import MAX_HEADER_LINE, safe_filename
from inbound.envelope import Envelope


def envelope(raw: bytes) -> Envelope:
    return Envelope(queue_id="Q1", sender="a@b.example", recipients=["x@example.org"], raw=raw)


def test_headers_are_read_without_loading_a_large_body(tmp_path: Path) -> None:
    path = tmp_path / "message"
    with open(path, "wb") as f:
        f.write(b"Subject: big one\r\nFrom: a@b.example\r\n\r\n")
        line = b"x" * 76 + b"\r\n"
        for _ in range(20 * 1024 * 1024 // len(line)):
            f.write(line)
    env = Envelope(queue_id="Q", sender="", recipients=["x@example.org"], message_path=str(path))
    assert env.subject == "big one"
    assert [a.address for a in env.from_] == ["a@b.example"]
    assert env._raw is None and env._message is None  # the body was never read


def test_deep_mime_nesting_does_not_recurse_to_death() -> None:
    depth = 1500
    head = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(depth)
    )
    raw = b"Subject: nested\r\n" + head + b"Content-Type: text/plain\r\n\r\ndeep\r\n"
    env = envelope(raw)
    assert env.subject == "nested"
    env.text  # noqa: B018 - must not raise
    env.attachments  # noqa: B018
    assert any("MIME nesting" in d for d in env.defects)


def test_a_subject_of_32000_encoded_words_is_cut_and_fast() -> None:
    subject = b" ".join([b"=?utf-8?q?a?="] * 32000)
    env = envelope(b"Subject: " + subject + b"\r\n\r\nbody\r\n")
    started = time.monotonic()
    value = env.subject
    assert time.monotonic() - started < 5
    assert len(value) < MAX_HEADER_LINE
    assert any("was cut" in d for d in env.defects)


def test_an_encoded_crlf_does_not_split_a_decoded_header() -> None:
    env = envelope(b"Subject: =?utf-8?b?aGVsbG8NCkJjYzogdmljdGltQGV4YW1wbGUub3Jn?=\r\n\r\nx\r\n")
    assert env.subject == "hello Bcc: victim@example.org"
    assert "\r" not in env.subject and "\n" not in env.subject


def test_attachment_filenames_are_made_safe() -> None:
    for hostile, safe in [
        ("../../etc/passwd", "passwd"),
        ("..\\..\\boot.ini", "boot.ini"),
        (".bashrc", "bashrc"),
        ("a\x00b\x07c.txt", "abc.txt"),
        ("", "attachment"),
        ("....", "attachment"),
        ("/", "attachment"),
    ]:
        assert safe_filename(hostile) == safe


def test_display_name_tricks_do_not_change_the_address() -> None:
    """CVE-2023-27043: parseaddr could be fooled; the header parser is not."""
    env = envelope(
        b'From: "alice@trusted.example" <mallory@evil.example>\r\n'
        b"To: a@example.org, b@example.org\r\n\r\nx\r\n"
    )
    assert [a.address for a in env.from_] == ["mallory@evil.example"]
    assert [a.name for a in env.from_] == ["alice@trusted.example"]
    assert [a.address for a in env.to] == ["a@example.org", "b@example.org"]


def test_garbage_gives_empty_values_and_defects_not_exceptions() -> None:
    env = envelope(b"\x00\xff\xfe garbage without headers\r\n\r\n\xff")
    assert env.subject == ""
    assert env.from_ == []
    env.text  # noqa: B018
    env.html  # noqa: B018
    assert isinstance(env.attachments, list)


def test_bad_charset_and_transfer_encoding_give_best_effort_text() -> None:
    env = envelope(
        b"Content-Type: text/plain; charset=no-such-charset\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9 =ZZ\r\n"
    )
    assert env.text is not None and "caf" in env.text


def test_html_and_text_alternatives_and_attachments() -> None:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["Subject"] = "parts"
    msg.set_content("plain body\n")
    msg.add_alternative("<p>html body</p>\n", subtype="html")
    msg.add_attachment(b"\x00\x01binary", maintype="application", subtype="octet-stream", filename="data.bin")
    env = envelope(msg.as_bytes().replace(b"\n", b"\r\n"))
    assert env.text == "plain body\n"
    assert env.html == "<p>html body</p>\n"
    [attachment] = env.attachments
    assert (attachment.filename, attachment.content_type, attachment.size) == (
        "data.bin",
        "application/octet-stream",
        8,
    )
    assert attachment.data == b"\x00\x01binary"


def test_as_dict_is_json_safe() -> None:
    import json

    env = envelope(b"Subject: s\r\nFrom: a@b.example\r\n\r\nbody\r\n")
    assert json.loads(json.dumps(env.as_dict(with_attachments=True)))["subject"] == "s"


def test_many_sibling_multiparts_are_not_mistaken_for_deep_nesting() -> None:
    from email.message import EmailMessage

    msg = EmailMessage()
    msg["Subject"] = "wide, not deep"
    msg.set_content("top\n")
    msg.make_mixed()
    for i in range(40):  # 40 multipart/alternative siblings: 41 boundaries, depth 2
        part = EmailMessage()
        part.set_content(f"text {i}\n")
        part.add_alternative(f"<p>{i}</p>\n", subtype="html")
        msg.attach(part)
    msg.add_attachment(b"%PDF-1.4", maintype="application", subtype="pdf", filename="report.pdf")
    env = envelope(msg.as_bytes().replace(b"\n", b"\r\n"))
    assert [a.filename for a in env.attachments][-1] == "report.pdf"
    assert not any("MIME nesting" in d for d in env.defects)


def test_pathological_address_headers_are_bounded_in_time() -> None:
    import inbound.bounded as module

    raw = b"".join(b'To: "' + b'"a' * 4000 + b"\r\n" for _ in range(30)) + b"\r\nbody\r\n"
    old = module.PARSE_SECONDS
    module.PARSE_SECONDS = 1.0
    try:
        env = envelope(raw)
        started = time.monotonic()
        env.to  # noqa: B018
        env.to  # noqa: B018  (cached: no second cost)
        assert time.monotonic() - started < 4
    finally:
        module.PARSE_SECONDS = old


def test_a_file_name_is_never_only_dots() -> None:
    for hostile in (".", "..", "...", ". ..", " . . ", "/..", "..\\..", ". .\t."):
        assert safe_filename(hostile) == "attachment", hostile
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename=". .."\r\n\r\ndata\r\n--b--\r\n'
    )
    assert [a.filename for a in envelope(raw).attachments] == ["attachment-1"]


def test_a_long_file_name_is_cut_to_200_octets_in_linear_time() -> None:
    started = time.monotonic()
    name = safe_filename("é" * 400_000 + ".txt")
    assert time.monotonic() - started < 1
    assert name == "é" * 100
