"""The Envelope against hostile messages: bounded, never raising, safe values."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

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


def test_nested_message_parts_are_bounded_like_multiparts() -> None:
    """message/rfc822 in message/rfc822...: no boundary to measure, and 900 levels parse but
    make a handler's message.as_bytes() or a recursive walk raise RecursionError."""
    for levels in (900, 5000):
        raw = b"Subject: nested\r\n" + b"Content-Type: message/rfc822\r\n\r\n" * levels + b"deep\r\n"
        env = envelope(raw)
        assert env.message.get_content_type() == "text/plain"
        env.message.as_bytes()  # must not raise
        assert env.text is not None and env.text.endswith("deep\n")
        assert any("MIME nesting deeper than 32" in d for d in env.defects)


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


# -- hostile characters: one line of valid text in every decoded value ----------------------

LINE_BREAKS_AND_CONTROLS = "\x0b\x0c\x1c\x1d\x1e\x1f\x85\u2028\u2029\x00\x07\x1b\x7f\x9b\t"


def test_decoded_header_values_hold_no_line_break_or_control_character() -> None:
    encoded = "".join(f"={b:02X}" for b in LINE_BREAKS_AND_CONTROLS.encode())
    raw = (
        f"Subject: a{LINE_BREAKS_AND_CONTROLS}b =?utf-8?q?c{encoded}d?=\r\n"
        f'From: "x{LINE_BREAKS_AND_CONTROLS}y" <a@b.example>, =?utf-8?q?z{encoded}?= <c@d.example>\r\n'
        f"X-Any: =?utf-8?q?{encoded}e?=\r\n\r\nbody\r\n"
    ).encode()
    env = envelope(raw)
    values = [env.subject, env.header("X-Any"), *(a.name for a in env.from_), *(str(a) for a in env.from_)]
    assert values[:4] == ["a b c d", "e", "x y", "z"]
    for value in values:
        assert not any(c in value for c in LINE_BREAKS_AND_CONTROLS), repr(value)
        assert value.splitlines() == [value]


def test_raw_utf8_in_header_fields_is_decoded_as_utf8_never_as_surrogates() -> None:
    raw = (
        b"From: J\xc3\xb6rg <j\xc3\xb6rg@b.example>\r\nTo: \xe6\x97\xa5\xe6\x9c\xac <x@example.org>\r\n"
        b"Subject: caf\xc3\xa9 \xff end\r\n\r\nbody\r\n"
    )
    env = envelope(raw)
    assert [(a.name, a.address) for a in env.from_] == [("Jörg", "jörg@b.example")]
    assert [a.name for a in env.to] == ["日本"]
    assert env.subject == "café \ufffd end"
    import json

    json.dumps(env.as_dict(with_attachments=True), ensure_ascii=False).encode("utf-8")  # the webhook's way


def test_every_string_of_the_envelope_is_valid_unicode() -> None:
    raw = (
        b"From: \xed\xa0\x80 <a@b.example>\r\nSubject: =?unicode-escape?q?\\ud800?= \xc3\r\n"
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n"
        b"--b\r\nContent-Type: text/plain; charset=utf-7\r\n\r\n+2AA-\r\n"
        b"--b\r\nContent-Type: text/plain; charset=unicode_escape\r\n\r\n\\udcff\\x1b\r\n"
        b'--b\r\nContent-Type: application/x-\xc3; name="\xed\xb2\x80.txt"\r\n'
        b"Content-Disposition: attachment\r\n\r\nx\r\n--b--\r\n"
    )
    env = Envelope(queue_id="Q", sender="a\udcff@b.example", recipients=["x@example.org"], raw=raw)
    strings = [env.sender, env.subject, env.text or "", *(str(a) for a in env.from_), *env.defects]
    strings += [f"{a.filename} {a.content_type}" for a in env.attachments]
    for value in strings:
        value.encode("utf-8")  # no lone surrogate anywhere
    assert (env.text or "").startswith("\ufffd")  # utf-7 of a lone surrogate
    assert [a.content_type for a in env.attachments] == ["text/plain", "application/octet-stream"]


# -- CPU bombs: bounded and linear in the input -------------------------------------------------


def test_a_punycode_body_is_not_decoded_as_punycode() -> None:
    """punycode decodes in quadratic time (4.8 s for 821 KB): it is no charset of mail."""
    body = b"a" * 10 + b"-" + b"b" * 300_000
    env = envelope(b"Content-Type: text/plain; charset=punycode\r\n\r\n" + body + b"\r\n")
    started = time.monotonic()
    assert env.text == (body + b"\n").decode()  # read as UTF-8
    assert env.text is env.text  # decoded once, then cached
    assert time.monotonic() - started < 1
    assert any("not a text charset" in d for d in env.defects)


def test_codecs_that_are_no_charsets_are_refused_in_bodies_and_headers() -> None:
    for charset in ("unicode_escape", "raw-unicode-escape", "idna", "punycode", "undefined", "x-unknown"):
        env = envelope(
            f"Subject: =?{charset}?q?caf=C3=A9_\\x41?=\r\n"
            f"Content-Type: text/plain; charset={charset}\r\n\r\ncaf\xe9 \\x41\r\n".encode("latin-1")
        )
        assert env.subject == "café \\x41", charset
        assert env.text == "caf\ufffd \\x41\n", charset


def test_text_charsets_are_decoded() -> None:
    for charset, data, text in [
        ("iso-8859-1", b"caf\xe9", "café"),
        ("windows-1252", b"\x80", "€"),
        ("koi8-r", b"\xf0\xd2\xc9", "При"),
        ("shift_jis", b"\x93\xfa\x96{", "日本"),
        ("utf-16", "hé".encode("utf-16"), "hé"),
        ("us-ascii", b"plain", "plain"),
    ]:
        env = envelope(f"Content-Type: text/plain; charset={charset}\r\n\r\n".encode() + data)
        assert env.text == text, charset


def test_mime_depth_is_measured_in_linear_time() -> None:
    """2.6 MB of nested boundaries took the measurement more than 30 s."""
    from inbound.bounded import mime_depth

    levels = 20_000
    raw = b"".join(
        b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1) for i in range(levels)
    )
    raw = b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n" + raw + b"x\r\n"
    started = time.monotonic()
    assert mime_depth(raw) == levels
    assert time.monotonic() - started < 1
    closing = raw + b"".join(b"--b%d--\r\n" % i for i in reversed(range(levels)))
    assert mime_depth(closing + closing.split(b"\r\n\r\n", 1)[1]) == levels


def test_body_part_headers_are_cut_like_the_top_level_ones() -> None:
    """A filename of 30,000 encoded words in an attachment's header took 20 s to decode."""
    words = b"\r\n ".join([b"=?utf-8?q?a?="] * 30_000)
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n"
        b"--b\r\nContent-Type: application/octet-stream\r\n"
        b'Content-Disposition: attachment; filename="' + words + b'"\r\n\r\ndata\r\n--b--\r\n'
    )
    env = envelope(raw)
    started = time.monotonic()
    [attachment] = env.attachments
    assert time.monotonic() - started < 2
    assert attachment.filename.startswith("aaaa") and attachment.data == b"data"
    part = env.message.get_payload()[1]
    assert len(part["Content-Disposition"]) <= MAX_HEADER_LINE  # also for what a handler reads


def test_body_and_attachments_are_decoded_under_the_parse_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    import inbound.bounded as module

    parts = b"".join(
        b"--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; "
        b'filename="=?utf-8?q?%d?="\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n' % n
        for n in range(2000)
    )
    env = envelope(b"Content-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n")
    assert len(env.message.get_payload()) == 2000  # parsed first, under its own deadline
    safe_filename = module.safe_filename

    def slow(*args: str) -> str:  # 2 ms an attachment: 4 s for all, on any machine
        time.sleep(0.002)
        return safe_filename(*args)

    monkeypatch.setattr(module, "safe_filename", slow)
    monkeypatch.setattr(module, "PARSE_SECONDS", 0.3)
    started = time.monotonic()
    found = env.attachments
    assert time.monotonic() - started < 3
    assert len(found) < 2000  # what was decoded in time
    assert any("attachments: decoding took longer than" in d for d in env.defects)
    assert env.attachments == found  # cached: not decoded again
