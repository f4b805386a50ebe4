"""Address lists of header fields (RFC 5322 3.4): the one parser of From, To and Cc, used by
the DMARC check and the Envelope alike, so a handler is shown the From addresses whose
domains DMARC evaluated, and nothing else.

`parse(value)` reads a raw field value (encoded words not decoded) as Mailbox items: the
display name as written, the address, its domain.  It is lenient the way mail readers
are: obsolete forms (a route, words of a local part with spaces, comments anywhere) are
read, groups give their members, an unterminated quoted string, comment or angle
bracket runs to the end, and `<a@b> c@d` is two addresses.  `domains(value)` gives, for
DMARC, the domain of every mailbox and also every domain-like part of a malformed one
(`a@b@c`), so that no form of From hides a domain from the check; and whether some item
had no domain at all.

Linear in the value: one regular-expression scan into tokens (no nested quantifiers),
one pass over them; comments nest to any depth without recursion.  It imports nothing
from the email package (the check path pays for no email.utils).  `display_name()`
decodes RFC 2047 encoded words of a display name for the Envelope, in text charsets only
(bounded.decode_text).  Nothing here decides anything about what it parses.
"""

from __future__ import annotations

import re

# quoted string | domain literal | comment start | specials | folding white space | atom |
# any other character (a stray backslash or bracket: a token of its own, never an atom)
_TOKENS = re.compile(
    r'"(?:[^"\\]|\\.)*"?|\[(?:[^\[\]\\]|\\.)*\]?|\(|[)<>,;:@.]|[ \t\r\n]+|[^ \t\r\n"()<>,;:@.\[\]\\]+|\\.?|.',
    re.DOTALL,
)
_COMMENT_PARTS = re.compile(r"[()]|\\.", re.DOTALL)
_ATEXT = r'[^\x00-\x20\x7f"(),.:;<>@\[\\\]]'  # (negated: ranges up to U+10FFFF compile slowly)
_ATOM = re.compile(rf"{_ATEXT}+")
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*")
_DOMAIN = re.compile(r"(?:[A-Za-z0-9_-]|[^\x00-\x7f])+(?:\.(?:[A-Za-z0-9_-]|[^\x00-\x7f])+)*\.?")
_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")


class Mailbox:
    """One address of a field: `name` as written (undecoded), `address` (local@domain, the
    local part quoted when it must be), `domain` as written."""

    __slots__ = ("name", "address", "domain")

    def __init__(self, name: str, address: str, domain: str) -> None:
        self.name = name
        self.address = address
        self.domain = domain

    def __repr__(self) -> str:
        return f"Mailbox({self.name!r}, {self.address!r})"


def _tokens(value: str) -> list[str]:
    """VALUE as tokens; a comment (nested to any depth) becomes one space token."""
    out: list[str] = []
    pos, end = 0, len(value)
    while pos < end:
        match = _TOKENS.match(value, pos)
        assert match is not None  # every character starts some token
        token = match.group()
        if token == "(":
            depth = 1
            for part in _COMMENT_PARTS.finditer(value, match.end()):
                depth += {"(": 1, ")": -1}.get(part.group(), 0)
                if depth == 0:
                    break
            pos = part.end() if depth == 0 else end
            out.append(" ")
            continue
        out.append(token)
        pos = match.end()
    return out


def _units(tokens: list[str]) -> list[list[str]]:
    """The tokens of each address: split at commas, semicolons and after a closing '>'
    outside angle brackets; a group's name (up to its ':') is dropped."""
    units: list[list[str]] = []
    unit: list[str] = []
    angle = False
    for token in tokens:
        if angle:
            unit.append(token)
            if token == ">":
                angle = False
                units.append(unit)
                unit = []
        elif token in (",", ";"):
            units.append(unit)
            unit = []
        elif token == ":":
            unit = []  # what came before was a group's display name
        else:
            unit.append(token)
            angle = token == "<"
    units.append(unit)
    return [u for u in units if any(not t.isspace() for t in u)]


def _unquote(token: str) -> str:
    if token.startswith('"'):
        return re.sub(r"\\(.)", r"\1", token[1:-1] if len(token) > 1 and token.endswith('"') else token[1:])
    return token


def _words(tokens: list[str]) -> str:
    """Tokens as text: quoted strings unquoted, white space and comments between words one space."""
    out: list[str] = []
    for token in tokens:
        if not token.isspace():
            out.append(_unquote(token))
        elif out and out[-1] != " ":
            out.append(" ")
    return "".join(out).strip()


def _split_address(tokens: list[str]) -> tuple[list[str], list[list[str]]]:
    """An addr-spec's tokens as (local part tokens, the tokens after each '@')."""
    if tokens and tokens[0] == "<":
        tokens = tokens[1:-1] if tokens[-1] == ">" else tokens[1:]
        if ":" in tokens:  # obs-route: @a,@b:local@domain
            tokens = tokens[len(tokens) - tokens[::-1].index(":") :]
    parts: list[list[str]] = [[]]
    for token in tokens:
        if token == "@":
            parts.append([])
        elif not token.isspace() or len(parts) == 1:  # (white space matters in a local part only)
            parts[-1].append(token)
    return parts[0], parts[1:]


def _local_part(tokens: list[str]) -> str | None:
    """The local part's text (quoted when it must be), or None when it is not one: words
    (atoms, quoted strings) and dots; white space between two words is one space."""
    words: list[str] = []
    space = False
    for token in tokens:
        if token.isspace():
            space = True
            continue
        if token != "." and not token.startswith('"') and not _ATOM.fullmatch(token):
            return None
        if space and words and words[-1] != "." and token != ".":
            words.append(" ")
        words.append(_unquote(token) if token.startswith('"') else token)
        space = False
    text = "".join(words)
    if not text:
        return None
    return text if _DOT_ATOM.fullmatch(text) else '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _domain(tokens: list[str]) -> str:
    text = "".join(tokens)
    return text if _DOMAIN.fullmatch(text) else ""


def _items(value: str) -> list[tuple[str, list[str], list[list[str]]]]:
    """(display name, local part tokens, tokens after each '@') of each address in VALUE."""
    found = []
    for unit in _units(_tokens(value)):
        name: list[str] = []
        if "<" in unit:
            at = unit.index("<")
            name, unit = unit[:at], unit[at:]
        local, after = _split_address(unit)
        found.append((_words(name), local, after))
    return found


def parse(value: str) -> list[Mailbox]:
    """The mailboxes of a raw field VALUE: those with a local part and one domain."""
    found = []
    for name, local, after in _items(value):
        domain = _domain(after[0]) if len(after) == 1 else ""
        text = _local_part(local) if domain else None
        if text is not None:
            found.append(Mailbox(name, f"{text}@{domain}", domain))
    return found


def domains(value: str) -> tuple[list[str], bool]:
    """For DMARC: every domain VALUE names (lower case, no final dot), in order, those of
    malformed addresses too; and True when some address in it has no domain at all."""
    found: dict[str, None] = {}  # (ordered, and each look-up costs nothing)
    missing = False
    for _, _, after in _items(value):
        named = [d.lower().rstrip(".") for d in map(_domain, after) if d]
        missing = missing or not named
        found.update(dict.fromkeys(named))
    return list(found), missing


def display_name(raw: str) -> str:
    """RAW with its RFC 2047 encoded words decoded: white space between two of them is
    dropped, adjacent words of one charset are decoded together (a character may be split
    between them); text charsets only (bounded.decode_text), else UTF-8."""
    if "=?" not in raw:
        return raw
    import binascii

    from .bounded import decode_text

    out: list[str] = []
    run: list[bytes] = []  # the octets of adjacent encoded words in CHARSET
    charset = ""
    pos = 0
    seen = False
    for match in _ENCODED_WORD.finditer(raw):
        between = raw[pos : match.start()]
        adjacent = seen and (not between or between.isspace())
        word_charset = match.group(1).split("*", 1)[0]  # RFC 2231 5: charset*language
        if not (adjacent and word_charset.lower() == charset.lower()):
            if run:
                out.append(decode_text(b"".join(run), charset))
                run = []
            if not adjacent:
                out.append(between)
        charset, text = word_charset, match.group(3)
        try:
            if match.group(2) in "bB":
                run.append(binascii.a2b_base64(text + "=" * (-len(text) % 4)))
            else:
                run.append(binascii.a2b_qp(text.encode("utf-8", "replace"), header=True))
        except (binascii.Error, ValueError):
            run.append(match.group().encode("utf-8", "replace"))
        pos, seen = match.end(), True
    if run:
        out.append(decode_text(b"".join(run), charset))
    out.append(raw[pos:])
    return "".join(out)
