"""The SMTP command grammar the session needs: paths, mailboxes, parameters, HELO names.

RFC 5321 4.1.2 addresses, with RFC 6531 UTF-8 (SMTPUTF8) allowed in the patterns; the
session refuses non-ASCII itself when the client did not ask for SMTPUTF8.  Parameters
are separated by ASCII space only (no control or Unicode "whitespace"), keywords are
ASCII.  Everything here is a pure function of its text: no I/O, no replies.

The patterns are regular expressions, compiled on first need: the common forms (a HELO
name, a dot-atom mailbox and a domain of plain ASCII, a keyword) are recognised by the
`_plain_*` scanners first, exactly as the expressions would, so a session of ordinary
mail never imports `re` (~5 ms of every connection: re, enum, functools, collections).
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# Non-ASCII as a negated class (ranges up to U+10FFFF take 100 ms to compile): UTF-8 text,
# but not the C1 controls (NEL...) nor U+2028/U+2029, which are line breaks to Python's
# email package and to many a terminal and log viewer (RFC 6532 3.1 refers to RFC 5198).
_UTF8 = r"[^\x00-\x9f\u2028\u2029]"
_ATOM = rf"(?:[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~\-]|{_UTF8})+"
_LOCAL = rf'(?:{_ATOM}(?:\.{_ATOM})*|"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|{_UTF8}|\\[\x20-\x7e])*")'
_ALNUM = rf"(?:[A-Za-z0-9]|{_UTF8})"
_LABEL = rf"{_ALNUM}(?:(?:[A-Za-z0-9\-]|{_UTF8})*{_ALNUM})?"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*\.?|\[[\x21-\x5a\x5e-\x7e]+\])"  # a literal: RFC 5321 dcontent
_ATEXT = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+/=?^_`{|}~-")
_LDH = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-")


class _Match:
    """What `re.Match` gives the callers of a plain form: its groups."""

    __slots__ = ("groups_",)

    def __init__(self, *groups: str) -> None:
        self.groups_ = groups

    def group(self, n: int = 0) -> str:
        return self.groups_[n - 1] if n else "@".join(self.groups_)


def _plain_domain(text: str) -> bool:
    labels = text[:-1].split(".") if text.endswith(".") else text.split(".")
    return all(x and _LDH.issuperset(x) and x[0] != "-" and x[-1] != "-" for x in labels)


def _plain_mailbox(text: str) -> _Match | None:
    """local@domain, both plain ASCII (a dot-atom, LDH labels); None: ask the expression."""
    local, at, domain = text.partition("@")
    if not at or not text.isascii() or "@" in domain:
        return None
    if not all(x and _ATEXT.issuperset(x) for x in local.split(".")) or not _plain_domain(domain):
        return None
    return _Match(local, domain)


def _plain_helo(text: str) -> _Match | None:
    ok = 0 < len(text) <= 255 and text.isascii() and text.isprintable() and " " not in text
    return _Match(text) if ok else None


def _plain_keyword(text: str) -> _Match | None:
    ok = text[:1].isalnum() and text.isascii() and text.replace("-", "").isalnum()
    return _Match(text) if ok else None


class _Pattern:
    """A regular expression compiled on first need, tried after a plain-form scanner that
    recognises what the expression would match (None from it means: ask the expression)."""

    def __init__(self, pattern: str, plain: Callable[[str], _Match | None] | None = None) -> None:
        self.pattern = pattern
        self.plain = plain
        self._compiled: Any = None

    def compiled(self) -> Any:
        if self._compiled is None:
            import re

            self._compiled = re.compile(self.pattern)
        return self._compiled

    def fullmatch(self, text: str) -> Any:
        found = self.plain(text) if self.plain else None
        return found if found is not None else self.compiled().fullmatch(text)

    def sub(self, replacement: str, text: str, count: int = 0) -> str:
        return str(self.compiled().sub(replacement, text, count=count))


MAILBOX = _Pattern(rf"({_LOCAL})@({_DOMAIN})", _plain_mailbox)
SOURCE_ROUTE = _Pattern(rf"@{_DOMAIN}(?:,@{_DOMAIN})*:")
HELO_ARG = _Pattern(r"[^\x00-\x20\x7f-\x9f\u2028\u2029]{1,255}", _plain_helo)
PARAM_KEYWORD = _Pattern(r"[A-Za-z0-9][A-Za-z0-9\-]*", _plain_keyword)
MAX_ADDRESS = 320


def parse_path(text: str, keyword: str) -> tuple[str, str] | None:
    """'FROM:<a@b> SIZE=1' -> ('a@b', 'SIZE=1'); None when it is not of that form."""
    if not text[: len(keyword)].isascii() or text[: len(keyword)].upper() != keyword:
        return None
    rest = text[len(keyword) :].lstrip(" ")
    if not rest.startswith("<"):
        return None
    quoted, escaped = False, False
    for i, ch in enumerate(rest[1:], 1):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            params = rest[i + 1 :]
            if params and not params.startswith(" "):
                return None
            return rest[1:i], params.strip(" ")
    return None


def without_source_route(path: str) -> str:
    """'@a,@b:x@y' -> 'x@y' (RFC 5321 4.1.2: a source route is accepted and ignored)."""
    return SOURCE_ROUTE.sub("", path, count=1) if path.startswith("@") else path


def check_mailbox(path: str) -> tuple[str, str] | str:
    """(local, domain) of a path, or a reason it is malformed."""
    path = without_source_route(path)
    if len(path) > MAX_ADDRESS:
        return "address too long"
    match = MAILBOX.fullmatch(path)
    if not match:
        return f"<{path}> is not local@domain"
    return match.group(1), match.group(2)


def parse_params(text: str) -> dict[str, str] | str:
    """'SIZE=10 BODY=8BITMIME' -> {'SIZE': '10', 'BODY': '8BITMIME'}; the bad item as text."""
    params: dict[str, str] = {}
    for item in filter(None, text.split(" ")):
        key, _, value = item.partition("=")
        if not PARAM_KEYWORD.fullmatch(key) or key.upper() in params:
            return item
        params[key.upper()] = value
    return params


def mail_params_problem(params: dict[str, str]) -> tuple[str, str] | None:
    """(reply name, field) for the first MAIL parameter we refuse; None when all are fine."""
    for key, value in params.items():
        if key == "SIZE" and not (value.isascii() and value.isdigit() and len(value) <= 20):
            return "bad_syntax", "SIZE=number"
        if key == "BODY" and not (value.isascii() and value.upper() in ("7BIT", "8BITMIME")):
            return "bad_syntax", "BODY=7BIT or BODY=8BITMIME"
        if key == "SMTPUTF8" and value:
            return "bad_syntax", "SMTPUTF8 takes no value"
        if key not in ("SIZE", "BODY", "SMTPUTF8"):
            return "unknown_parameter", key
    return None


def bdat_arguments(arg: str) -> tuple[int, bool] | None:
    """'1000 LAST' -> (1000, True); None when it is not `size [LAST]` (RFC 3030)."""
    parts = [part for part in arg.split(" ") if part]  # SP only, as RFC 3030 writes it
    if not 1 <= len(parts) <= 2:
        return None
    size = parts[0]
    if not (size.isascii() and size.isdigit() and len(size) <= 20):
        return None
    if len(parts) == 2 and not (parts[1].isascii() and parts[1].upper() == "LAST"):
        return None
    return int(size), len(parts) == 2
