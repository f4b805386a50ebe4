"""A seeded, bounded fuzz of the Envelope: every accessor a handler can touch, on hostile mail.

Each seed makes one message with random.Random(seed) from hostile fragments: encoded words
(RFC 2047) in text and non-text charsets (punycode, unicode_escape, idna, utf-7,
utf-16...), raw 8-bit (valid and malformed UTF-8, encoded surrogates), line breaks other
than CRLF and control characters (form feed, VT, NEL, U+2028, ESC, NUL...), address lists
with quotes, comments, groups and angle brackets, RFC 2231 file names (path traversal,
dot names), multiparts nested and wide (sometimes deeper than MAX_MIME_DEPTH), broken
transfer encodings and message/rfc822 parts.  Then:

1. no accessor raises: subject, header(), from_/to/cc, message_id, headers, message, text,
   html, attachments, defects, as_dict(with_attachments=True) and its JSON as UTF-8, a
   reply built from it (compose.build + message_bytes: what 8ball does), echo's report;
2. the case takes less than CASE_SECONDS;
3. decoded header values (subject, header(), names, addresses, defects, content types)
   are one line: no control character (C0, C1, DEL), no U+2028/2029, no surrogate;
   text and html hold no surrogate (every string encodes as UTF-8);
4. attachment file names are safe: not empty, no folder, no leading dot, never only
   dots, printable, at most 200 octets; content types are type/subtype tokens.

More seeds by hand (not part of the suite):
    PYTHONPATH=. .venv/bin/python tests/unit/test_fuzz_envelope.py 0 20000
"""

from __future__ import annotations

import base64
import json
import random
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from inbound.autoreply.compose import build, message_bytes
from inbound.delivery.router import load_python
from inbound.envelope import Envelope

ROOT = Path(__file__).resolve().parents[2]
CASES = 1000  # seeds run by the suite (a few seconds); the hand run above goes further
CASE_SECONDS = 5.0  # far above what a case takes (milliseconds), far below a hang

NOT_ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")
SURROGATE = re.compile(r"[\ud800-\udfff]")
TYPE_SUBTYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")  # RFC 2045 tokens, lower case
ECHO = load_python("echo", str(ROOT / "handlers" / "echo.py")).module

CHARSETS = [
    "utf-8", "UTF-8", "utf8", "us-ascii", "iso-8859-1", "ISO-8859-15", "windows-1252", "koi8-r",
    "shift_jis", "iso-2022-jp", "gb18030", "big5", "utf-16", "utf-16-le", "utf-32", "utf-7",
    "punycode", "idna", "unicode_escape", "raw-unicode-escape", "undefined", "base64", "zlib",
    "rot13", "hex", "x-unknown", "unknown-8bit", "", "utf-8*en", "cp65001", "..", "a" * 60,
]  # fmt: skip
HOSTILE = [
    "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x1f", "\x85", "\u2028", "\u2029", "\x00", "\x07",
    "\x1b[31m", "\x7f", "\x9b", "\t", "\ufeff", "\u202e", "é", "Jörg", "日本", "😀", "\ufffd",
    "=?", "?=", '"', "\\", "(", ")", "<", ">", ",", ";", ":", "@", ".", " ", "..", "/",
]  # fmt: skip
RAW = [
    b"\xff", b"\xfe", b"\xc3", b"\xc3\xb6", b"\xed\xa0\x80", b"\xed\xb2\x80", b"\xe2\x80\xa8",
    b"\xc2\x85", b"\x80", b"\xf4\x90\x80\x80", b"\xc0\xaf", b"\x0c", b"\x0b", b"\r", b"\n",
]  # fmt: skip
WORDS = ["hello", "Re:", "question", "alice", "example", "x" * 40, "a", "Jörg", "Grüße"]


def pick(rng: random.Random, *weighted: tuple[float, Callable[[random.Random], bytes]]) -> bytes:
    make = rng.choices([m for _, m in weighted], weights=[w for w, _ in weighted])[0]
    return make(rng)


def text(rng: random.Random, n: int = 6) -> bytes:
    """Words, hostile characters (UTF-8) and raw octets."""
    parts = []
    for _ in range(rng.randint(1, n)):
        roll = rng.random()
        if roll < 0.45:
            parts.append(rng.choice(WORDS).encode())
        elif roll < 0.8:
            parts.append(rng.choice(HOSTILE).encode())
        else:
            parts.append(rng.choice(RAW))
    return (b" " if rng.random() < 0.5 else b"").join(parts)


def encoded_word(rng: random.Random) -> bytes:
    charset = rng.choice(CHARSETS)
    data = text(rng, 4)
    if rng.random() < 0.3:
        try:
            data = data.decode("utf-8", "replace").encode(charset)  # sometimes really in it
        except Exception:
            pass
    if rng.random() < 0.5:
        payload = base64.b64encode(data).decode()
        if rng.random() < 0.2:
            payload = payload[: rng.randint(0, len(payload))]  # broken padding
        kind = "b"
    else:
        payload = "".join(f"={b:02X}" if b > 126 or b < 33 or chr(b) in "=?_" else chr(b) for b in data)
        kind = rng.choice("qQ")
    return f"=?{charset}?{kind}?{payload}?=".encode()


def header_value(rng: random.Random) -> bytes:
    pieces = []
    for _ in range(rng.randint(1, 6)):
        pieces.append(
            pick(
                rng,
                (4, lambda r: text(r, 3)),
                (4, encoded_word),
                (1, lambda r: b"\r\n " + text(r, 2)),  # folded
                (1, lambda r: r.choice([b"\r\n\t", b"\r\n  ", b"  "])),
            )
        )
    return b" ".join(pieces)


def address(rng: random.Random) -> bytes:
    local = pick(
        rng,
        (5, lambda r: r.choice([b"alice", b"bob.smith", b"x+tag", "jörg".encode(), b"a\xff"])),
        (2, lambda r: b'"' + text(r, 2).replace(b'"', b"") + b'"'),
        (1, lambda r: r.choice([b"", b"@", b"a@b", b"<", b"(c)", b"a..b"])),
    )
    domain = rng.choice(
        [b"example.org", b"sender.example", "bücher.example".encode(), b"[192.0.2.1]", b"", b"a@b"]
    )
    return local + b"@" + domain


def mailbox(rng: random.Random) -> bytes:
    return pick(
        rng,
        (3, address),
        (3, lambda r: text(r, 3) + b" <" + address(r) + b">"),
        (2, lambda r: b'"' + text(r, 3) + b'" <' + address(r) + b">"),
        (2, lambda r: encoded_word(r) + b" <" + address(r) + b">"),
        (1, lambda r: b"group: " + address(r) + b", " + address(r) + b";"),
        (1, lambda r: address(r) + b" (" + text(r, 2) + b")"),
        (1, lambda r: text(r, 4)),
    )


def address_list(rng: random.Random) -> bytes:
    return b", ".join(mailbox(rng) for _ in range(rng.randint(1, 3)))


def filename_param(rng: random.Random) -> bytes:
    name = pick(
        rng,
        (3, lambda r: r.choice([b"report.pdf", b"../../etc/passwd", b"..\\..\\boot.ini", b".bashrc", b". ..",
                                b"...", b".", b"a/b/c.txt", b"CON", b"x" * 300 + b".txt", b""])),
        (2, lambda r: text(r, 3) + b".txt"),
        (1, encoded_word),
    )  # fmt: skip
    return pick(
        rng,
        (3, lambda r: b'filename="' + name.replace(b'"', b"") + b'"'),
        (1, lambda r: b"filename=" + name),
        (2, lambda r: b"filename*=" + r.choice(CHARSETS).encode() + b"''"
         + b"".join(b"%%%02X" % b for b in text(r, 3) + b".bin")),
        (1, lambda r: b"filename*0*=utf-8''%2E%2E; filename*1=%2F" + name),
    )  # fmt: skip


def leaf(rng: random.Random) -> bytes:
    kind = rng.choice(
        [b"text/plain", b"text/html", b"application/octet-stream", b"image/png", b"text/x-\xc3"]
    )
    head = b"Content-Type: " + kind
    if kind.startswith(b"text/") or rng.random() < 0.2:
        head += b"; charset=" + rng.choice(CHARSETS).encode()
    head += b"\r\n"
    if rng.random() < 0.4:
        head += b"Content-Disposition: " + rng.choice([b"attachment", b"inline", b"\xff"]) + b"; "
        head += filename_param(rng) + b"\r\n"
    body = text(rng, 12)
    cte = rng.choice([b"", b"7bit", b"8bit", b"base64", b"quoted-printable", b"x-uuencode", b"bogus"])
    if cte:
        head += b"Content-Transfer-Encoding: " + cte + b"\r\n"
    if cte == b"base64" and rng.random() < 0.7:
        body = base64.encodebytes(body)
        if rng.random() < 0.2:
            body = body[:-3] + b"!!"
    elif cte == b"quoted-printable":
        body = body.replace(b"=", b"=3D") + rng.choice([b"", b"=ZZ", b"=\r\n"])
    elif cte == b"x-uuencode":
        body = b"begin 644 x\r\n" + rng.choice([b"#86)C\r\n", b"garbage\r\n"]) + b"`\r\nend\r\n"
    return head + b"\r\n" + body.replace(b"\r", b"").replace(b"\n", b"\r\n") + b"\r\n"


def part(rng: random.Random, depth: int) -> bytes:
    roll = rng.random()
    if depth > 3 or roll < 0.5:
        return leaf(rng)
    if roll < 0.6:
        return b"Content-Type: message/rfc822\r\n\r\n" + message_headers(rng) + part(rng, depth + 1)
    boundary = rng.choice([b"b", b"=_b", b"b%d" % depth, b'"q b"', b"", b"--"])
    bare = boundary.strip(b'"')
    subtype = rng.choice([b"mixed", b"alternative", b"related", b"report", b"digest"])
    out = b"Content-Type: multipart/" + subtype + b"; boundary=" + boundary + b"\r\n\r\n"
    if rng.random() < 0.3:
        out += b"preamble " + text(rng, 2) + b"\r\n"
    for _ in range(rng.randint(0, 4)):
        out += b"--" + bare + b"\r\n" + part(rng, depth + 1)
    if rng.random() < 0.8:
        out += b"--" + bare + b"--\r\n"
    return out


def deep(rng: random.Random) -> bytes:
    """Nesting past MAX_MIME_DEPTH: multiparts or message/rfc822 parts."""
    levels = rng.choice([20, 33, 40, 200])
    if rng.random() < 0.5:
        head = b"".join(
            b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(levels)
        )
    else:
        head = b"Content-Type: message/rfc822\r\n\r\n" * levels
    return head + leaf(rng)


def message_headers(rng: random.Random) -> bytes:
    out = b""
    names = [b"Subject", b"From", b"To", b"Cc", b"Message-ID", b"References", b"X-Any", b"Date",
             b"Reply-To", b"Auto-Submitted", b"Resent-To", b"\xff-Name"]  # fmt: skip
    for _ in range(rng.randint(1, 8)):
        name = rng.choice(names)
        if name in (b"From", b"To", b"Cc", b"Reply-To", b"Resent-To"):
            value = address_list(rng)
        elif name in (b"Message-ID", b"References"):
            value = rng.choice([b"<a@b>", b"<" + text(rng, 2) + b">", text(rng, 2)])
        else:
            value = header_value(rng)
        out += name + b": " + value + b"\r\n"
    return out


def make_message(seed: int) -> bytes:
    rng = random.Random(seed)
    head = message_headers(rng)
    roll = rng.random()
    if roll < 0.1:
        return head + deep(rng)
    if roll < 0.15:  # a larger body in a costly or odd charset
        charset = rng.choice(["punycode", "utf-7", "unicode_escape", "utf-16", "idna"]).encode()
        body = b"a" * 10 + b"-" + b"b" * rng.choice([1000, 50_000, 200_000])
        return head + b"Content-Type: text/plain; charset=" + charset + b"\r\n\r\n" + body + b"\r\n"
    if roll < 0.2:  # no header block end, or garbage first
        return rng.choice([head, b"\xff\xfe\r\n" + head, b"\r\n" + head]) + text(rng)
    return head + part(rng, 0)


# -- the invariants --------------------------------------------------------------------------


def one_line(what: str, value: object, found: list[str]) -> None:
    if not isinstance(value, str):
        found.append(f"{what} is {type(value).__name__}, not str")
    elif NOT_ONE_LINE.search(value):
        found.append(f"{what} holds {NOT_ONE_LINE.search(value).group()!r}: {value[:80]!r}")  # type: ignore[union-attr]


def safe_name(name: str) -> bool:
    return bool(
        name
        and "/" not in name
        and "\\" not in name
        and not name.startswith(".")
        and name.strip(". ")
        and name.isprintable()
        and len(name.encode("utf-8")) <= 200
        and not any(c in name for c in '<>:"|?*')
    )


def violations(seed: int, tmp_path: Path | None = None) -> list[str]:
    raw = make_message(seed)
    found: list[str] = []
    started = time.monotonic()
    kwargs: dict[str, object] = {"raw": raw}
    if tmp_path is not None and seed % 3 == 0:  # from the spool file: the header path reads a prefix
        path = tmp_path / f"{seed}.eml"
        path.write_bytes(raw)
        kwargs = {"message_path": str(path)}
    env = Envelope(queue_id="Q1", sender="alice@example.net", recipients=["x@example.org"], **kwargs)  # type: ignore[arg-type]
    try:
        one_line("subject", env.subject, found)
        one_line("message_id", env.message_id, found)
        for name in ("From", "To", "X-Any", "Date", "References", "Content-Type", "\udcff-name", "Nope"):
            one_line(f"header({name!r})", env.header(name), found)
        for name, addresses in (("from_", env.from_), ("to", env.to), ("cc", env.cc)):
            for a in addresses:
                one_line(f"{name} name", a.name, found)
                one_line(f"{name} address", a.address, found)
                one_line(f"{name} str", str(a), found)
        list(env.headers.keys())
        env.message  # noqa: B018
        for name, body in (("text", env.text), ("html", env.html)):
            if body is not None and (not isinstance(body, str) or SURROGATE.search(body)):
                found.append(f"{name} is not valid text: {body[:80]!r}")
        for a in env.attachments:
            if not safe_name(a.filename):
                found.append(f"unsafe file name {a.filename!r}")
            if not TYPE_SUBTYPE.fullmatch(a.content_type):
                found.append(f"content type {a.content_type!r}")
            if not isinstance(a.data, bytes) or a.size != len(a.data):
                found.append(f"attachment data of {a.filename!r}")
        json.dumps(env.as_dict(with_attachments=True), ensure_ascii=False).encode("utf-8")
        message_bytes(build(env, "The answer."))  # what 8ball's reply does (RFC 3834 aside)
        ECHO.report(env).encode("utf-8")
        for defect in env.defects:
            one_line("defect", defect, found)
    except Exception as e:  # noqa: BLE001 - the first invariant
        import traceback

        found.append(f"raised {type(e).__name__}: {e}\n{traceback.format_exc()}")
    elapsed = time.monotonic() - started
    if elapsed > CASE_SECONDS:
        found.append(f"took {elapsed:.1f} s")
    return found


@pytest.mark.parametrize("seed", range(CASES))
def test_fuzzed_envelope_keeps_the_invariants(seed: int, tmp_path: Path) -> None:
    found = violations(seed, tmp_path)
    assert not found, f"seed {seed}: {make_message(seed)[:3000]!r}\n" + "\n".join(found)


# -- by hand: many more seeds -------------------------------------------------------------------


def hunt(first: int, last: int) -> int:
    import tempfile

    failures = 0
    started = time.monotonic()
    folder = Path(tempfile.mkdtemp(prefix="fuzz-envelope-"))
    for seed in range(first, last):
        found = violations(seed, folder)
        if found:
            failures += 1
            print(f"FAIL seed {seed}: {make_message(seed)[:500]!r}\n  " + "\n  ".join(found), flush=True)
    print(f"{last - first} seeds, {failures} failing, {time.monotonic() - started:.1f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(hunt(int(sys.argv[1]), int(sys.argv[2])))
