"""Bounds on hostile mail before the stdlib parser sees it, and the cleaning of what comes out.

The header block is capped (MAX_HEADER_BYTES), each header field is cut at
MAX_HEADER_LINE (a Subject of 32,000 encoded words takes CPython 22 s to decode), at most
MAX_HEADER_FIELDS fields are kept, MIME nesting deeper than MAX_MIME_DEPTH is measured
so the caller can refuse to descend (CPython raises RecursionError near 1,000), and a
parse that still runs longer than PARSE_SECONDS is abandoned (ParseTimeout, raised by
the alarm).  Decoded values are cleaned (`clean`) and file names made safe
(`safe_filename`).  Pure functions of bytes and text: no I/O.
"""

from __future__ import annotations

import re

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .alarm import deadline

MAX_HEADER_BYTES = 256 * 1024
MAX_HEADER_LINE = 8 * 1024
MAX_HEADER_FIELDS = 1000
MAX_MIME_DEPTH = 32
MAX_FILENAME_BYTES = 200
PARSE_SECONDS = 10.0


class ParseTimeout(BaseException):
    """A parse ran past PARSE_SECONDS (a BaseException: the stdlib's own handlers cannot eat it)."""


def safe_filename(name: str | None, fallback: str = "attachment") -> str:
    """A name that is only a name: no folders, no leading dots, no control characters,
    never only dots (".", "..", ". .."), at most MAX_FILENAME_BYTES octets of UTF-8."""
    name = (name or "").replace("\\", "/").split("/")[-1]
    name = "".join(c for c in name if c.isprintable() and c not in '<>:"|?*')
    name = name.lstrip(" .")  # (no surrogates are left: they are not printable)
    # bytes, not characters: file systems count bytes (one cut: linear in the name)
    name = name.encode("utf-8")[:MAX_FILENAME_BYTES].decode("utf-8", "ignore").rstrip(" ")
    return name or fallback


def clean(value: object) -> str:
    """A decoded header value with CR/LF flattened (an encoded CRLF must not split a header)."""
    return re.sub(r"[\r\n\x00]+", " ", str(value)).strip()


def split_header_block(data: bytes) -> tuple[bytes, bool]:
    """The header block of DATA (up to the blank line), capped; True when it was cut."""
    end = -1
    for separator in (b"\r\n\r\n", b"\n\n"):
        found = data.find(separator, 0, MAX_HEADER_BYTES + 4)
        if found >= 0 and (end < 0 or found < end):
            end = found + len(separator)
    if end < 0:
        return data[:MAX_HEADER_BYTES], len(data) > MAX_HEADER_BYTES
    return data[:end], False


def bound_headers(block: bytes, defects: list[str]) -> bytes:
    """Cut over-long (folded) header fields, and fields past MAX_HEADER_FIELDS, so the stdlib
    decoder stays fast."""
    fields = re.split(rb"\r?\n(?![ \t])", block)
    if len(fields) > MAX_HEADER_FIELDS:
        defects.append(f"more than {MAX_HEADER_FIELDS} header fields: the rest were dropped")
        fields = fields[:MAX_HEADER_FIELDS] + [b""]
    out = []
    for item in fields:
        if len(item) > MAX_HEADER_LINE:
            defects.append(f"header {item[:40]!r}... longer than {MAX_HEADER_LINE} octets was cut")
            item = item[:MAX_HEADER_LINE]
        out.append(item)
    return b"\r\n".join(out)


def mime_depth(data: bytes) -> int:
    """How deep multiparts nest: boundaries opened (--b) and not yet closed (--b--) at once.

    Cheap first: with few boundaries declared there is nothing to measure."""
    declared = re.findall(rb'(?i)boundary\s*=\s*"?([^"\r\n;]+)', data)
    if len(declared) <= MAX_MIME_DEPTH:
        return len(declared)
    known = {b.strip() for b in declared}
    open_: list[bytes] = []
    deepest = 0
    for line in re.findall(rb"(?m)^--([^\r\n]*)", data):
        line = line.rstrip()
        if line.endswith(b"--") and line[:-2] in known:
            if line[:-2] in open_:
                del open_[open_.index(line[:-2]) :]
        elif line in known and line not in open_:
            open_.append(line)
            deepest = max(deepest, len(open_))
    return deepest


def mime_depth_ok(data: bytes) -> bool:
    return mime_depth(data) <= MAX_MIME_DEPTH


def parse_deadline() -> deadline:
    """The alarm's deadline of PARSE_SECONDS for one parse or decode (ParseTimeout)."""
    from .alarm import deadline

    return deadline(PARSE_SECONDS, ParseTimeout)
