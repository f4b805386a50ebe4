"""Bounds on hostile mail before the stdlib parser sees it, and the cleaning of what comes out.

The header block is capped (MAX_HEADER_BYTES), each header field is cut at
MAX_HEADER_LINE (a Subject of 32,000 encoded words takes CPython 22 s to decode), at most
MAX_HEADER_FIELDS fields are kept, MIME nesting deeper than MAX_MIME_DEPTH is measured
so the caller can refuse to descend (CPython raises RecursionError near 1,000), and a
parse that still runs longer than PARSE_SECONDS is abandoned (ParseTimeout, raised by
the alarm).  Decoded values are cleaned (`clean`: one line, no control characters,
valid Unicode) and file names made safe (`safe_filename`).

`email_policy()` carries the bounds into the parse of every body part, and into what a
handler does with the parsed message: each header field is cut at MAX_HEADER_LINE, and
only text charsets are decoded (`text_charset`, an allow-list: punycode decodes in
quadratic time, unicode_escape makes surrogates and controls of escapes; such text is
read as UTF-8).  Pure functions of bytes and text: no I/O.
"""

from __future__ import annotations

import re

TYPE_CHECKING = False
if TYPE_CHECKING:
    from email.policy import EmailPolicy
    from typing import Any

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


# Line breaks and control characters of every kind: C0 (CR, LF, NUL, tab, VT, FF, ESC, the
# separators 1C-1F that str.splitlines() breaks at), DEL, C1 (NEL...), U+2028, U+2029;
# a run of them with the spaces around it is one space.
_CONTROLS = re.compile(r" *[\x00-\x1f\x7f-\x9f\u2028\u2029][\x00-\x20\x7f-\x9f\u2028\u2029]*")
_ESCAPED_BYTES = re.compile(r"[\udc80-\udcff]+")  # raw 8-bit octets as the email parser keeps them
_SURROGATES = re.compile(r"[\ud800-\udfff]")


def valid_text(text: str) -> str:
    """TEXT as valid Unicode (encodable as UTF-8, no lone surrogates).

    The email parser keeps raw 8-bit header octets as lone surrogates (surrogateescape);
    each run of them is decoded as UTF-8 (RFC 6532), a malformed sequence becoming
    U+FFFD.  We do not guess another charset (latin-1...) for it: the same octets always
    give the same text.  Any other lone surrogate becomes U+FFFD."""
    if text.isascii():
        return text
    text = _ESCAPED_BYTES.sub(
        lambda m: bytes(ord(c) - 0xDC00 for c in m.group()).decode("utf-8", "replace"), text
    )
    return _SURROGATES.sub("\ufffd", text)


def clean(value: object) -> str:
    """A decoded header value as one line of valid text: each run of line breaks and control
    characters (with the spaces around it) becomes one space, as an encoded CRLF, form
    feed or U+2028 must not split a header in a reply or a log; raw 8-bit is decoded as
    UTF-8 (valid_text)."""
    return _CONTROLS.sub(" ", valid_text(str(value))).strip()


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

    Cheap first: with few boundaries declared there is nothing to measure.  Linear: each
    boundary line is one dictionary look-up, each opened boundary is closed at most once."""
    declared = re.findall(rb'(?i)boundary\s*=\s*"?([^"\r\n;]+)', data)
    if len(declared) <= MAX_MIME_DEPTH:
        return len(declared)
    known = {b.strip() for b in declared}
    stack: list[bytes] = []  # the boundaries open, outermost first
    depth_of: dict[bytes, int] = {}  # each open boundary -> its place in the stack
    deepest = 0
    for line in re.findall(rb"(?m)^--([^\r\n]*)", data):
        line = line.rstrip()
        if line.endswith(b"--") and line[:-2] in known:
            place = depth_of.get(line[:-2])
            while place is not None and len(stack) > place:  # close it and what it holds
                del depth_of[stack.pop()]
        elif line in known and line not in depth_of:
            depth_of[line] = len(stack)
            stack.append(line)
            deepest = max(deepest, len(stack))
    return deepest


def nesting(message: Any) -> int:
    """How deep the parts of a parsed MESSAGE nest (1: a single part), counted without
    recursion and given up past MAX_MIME_DEPTH; message/rfc822 parts count as a level."""
    deepest = 0
    stack = [(message, 1)]
    while stack and deepest <= MAX_MIME_DEPTH:
        part, depth = stack.pop()
        deepest = max(deepest, depth)
        payload = part.get_payload() if part.is_multipart() else None
        if isinstance(payload, list):
            stack.extend((child, depth + 1) for child in payload)
    return deepest


def mime_depth_ok(data: bytes) -> bool:
    return mime_depth(data) <= MAX_MIME_DEPTH


# -- charsets -------------------------------------------------------------------------------

# The Python codecs that are text charsets with linear-time decoders: ASCII, the ISO 8859
# and code page tables, UTF-7/8/16/32, KOI8, Mac, the CJK charsets.  Everything else is
# refused before a codec is even looked up: unknown names, and codecs that are no
# charsets of mail (punycode decodes in quadratic time, idna, unicode_escape and
# raw_unicode_escape make surrogates and control characters of escapes, undefined...).
_TEXT_CODECS = re.compile(
    r"ascii|latin_1|iso8859_\d+|cp\d+|utf_(?:8(?:_sig)?|7|16(?:_[bl]e)?|32(?:_[bl]e)?)|koi8_[rtu]"
    r"|kz1048|ptcp154|tis_620|mac_[a-z0-9]+|big5(?:hkscs)?|gb2312|gbk|gb18030|hz|johab"
    r"|euc_[a-z0-9_]+|iso2022_[a-z0-9_]+|shift_jis[a-z0-9_]*"
)


def text_charset(name: object) -> str | None:
    """The Python codec of the MIME charset NAME when it is a text charset; None otherwise."""
    if not isinstance(name, str) or not name or len(name) > 40:
        return None
    import encodings  # (loaded at every interpreter start: costs nothing)
    from encodings.aliases import aliases

    key = encodings.normalize_encoding(name.strip().lower())
    key = re.sub(r"^windows_(?=\d+$)", "cp", key)  # windows-874 and the like that Python lacks
    codec = aliases.get(key) or aliases.get(key.replace(".", "_")) or key
    return codec if _TEXT_CODECS.fullmatch(codec) else None


def decode_text(data: bytes, charset: object) -> str:
    """DATA as text in CHARSET when it is a text charset, else as UTF-8; malformed octets
    become U+FFFD, and the result is valid Unicode (valid_text)."""
    codec = text_charset(charset) or "utf-8"
    try:
        text = data.decode(codec, "replace")
    except LookupError:  # a name of the right shape that Python does not have (cp12345)
        text = data.decode("utf-8", "replace")
    return valid_text(text)


_ENCODED_WORD_CHARSET = re.compile(r"=\?([^?*\s]*)((?:\*[^?\s]*)?\?[bBqQ]\?)")
_RFC2231_CHARSET = re.compile(r"(\*\s*=\s*\"?)([^'\";\s]*)(')")


def bound_value(value: str) -> str:
    """A raw header field value as the parser may decode it: cut at MAX_HEADER_LINE, and the
    charset of each encoded word (RFC 2047) or parameter value (RFC 2231) that is no text
    charset renamed unknown-8bit, which the email package reads as raw octets."""
    value = value[:MAX_HEADER_LINE]
    if "=?" in value:
        value = _ENCODED_WORD_CHARSET.sub(_relabel, value)
    if "'" in value and "*" in value:
        value = _RFC2231_CHARSET.sub(_relabel, value)
    return value


def _relabel(match: re.Match[str]) -> str:
    charset = match.group(2) if match.re is _RFC2231_CHARSET else match.group(1)
    if not charset or text_charset(charset):
        return match.group()
    if match.re is _RFC2231_CHARSET:
        return f"{match.group(1)}unknown-8bit{match.group(3)}"
    return f"=?unknown-8bit{match.group(2)}"


_policy: Any = None


def email_policy() -> EmailPolicy:
    """policy.default with this module's bounds on every part of the message, also for what a
    handler does with it: each header field of each body part is cut at MAX_HEADER_LINE
    and its charsets checked (bound_value), and text content is decoded by decode_text."""
    global _policy
    if _policy is None:
        import copy
        from email.contentmanager import raw_data_manager
        from email.policy import EmailPolicy

        class BoundedPolicy(EmailPolicy):
            def header_source_parse(self, sourcelines: list[str]) -> tuple[str, str]:
                name, value = super().header_source_parse(sourcelines)
                return name, bound_value(value)

        manager = copy.deepcopy(raw_data_manager)  # (its handler tables copied, not shared)
        manager.add_get_handler("text", _text_content)
        _policy = BoundedPolicy(content_manager=manager)
    return _policy  # type: ignore[no-any-return]


def _text_content(part: Any, errors: str = "replace") -> str:
    """get_content() of a text part: decode_text of its payload in its charset."""
    payload = part.get_payload(decode=True)
    return decode_text(payload if isinstance(payload, bytes) else b"", part.get_content_charset("us-ascii"))


def parse_deadline() -> deadline:
    """The alarm's deadline of PARSE_SECONDS for one parse or decode (ParseTimeout)."""
    from .alarm import deadline

    return deadline(PARSE_SECONDS, ParseTimeout)
