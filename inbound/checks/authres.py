"""Authentication-Results (RFC 8601) both ways: our field's value, and forged ones removed.

`header_value(results)` is the one-line value handed to handlers (authserv-id = our
hostname, pvalues quoted so the `authres` library parses them); `remove_our_authres()`
drops fields that arrived bearing our authserv-id (RFC 8601 section 5), and so does
forged.py, to a spooled file, by the same `is_ours()`.  Nothing here runs a check.
"""

from __future__ import annotations

import re

from .headers import fields_of, header_block

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .results import AuthResults


def header_value(results: AuthResults, authserv_id: str | None = None) -> str:
    """The Authentication-Results field value of RESULTS, one line."""
    parts = [_pvalue(authserv_id or results.authserv_id or "localhost")]
    if results.spf:
        entry = f"spf={results.spf.result}"
        entry += _reason(results.spf.result, results.spf.reason)
        if results.spf.sender:
            prop = "smtp.helo" if results.spf.identity == "helo" else "smtp.mailfrom"
            entry += f" {prop}={_identity_pvalue(results.spf.sender)}"
        parts.append(entry)
    if results.dkim_checked and not results.dkim:
        parts.append("dkim=none")
    for sig in results.dkim:
        entry = f"dkim={sig.result}" + _reason(sig.result, sig.reason)
        for name, value in (("header.d", sig.domain), ("header.s", sig.selector), ("header.b", sig.b)):
            if value:
                entry += f" {name}={_pvalue(value)}"
        parts.append(entry)
    if results.dmarc:
        entry = f"dmarc={results.dmarc.result}"
        if results.dmarc.result in ("temperror", "permerror"):
            entry += _reason(results.dmarc.result, results.dmarc.reason)
        if results.dmarc.policy:
            entry += f" (p={results.dmarc.policy} dis={results.dmarc.disposition})"
        if results.dmarc.from_domain:
            entry += f" header.from={_identity_pvalue(results.dmarc.from_domain)}"
        parts.append(entry)
    if results.arc:
        parts.append(f"arc={results.arc.result}" + _reason(results.arc.result, results.arc.reason))
    if len(parts) == 1:
        parts.append("none")
    return "; ".join(parts)


_AUTHRES_NAME = re.compile(rb"authentication-results[ \t]*:", re.IGNORECASE)


#: An Authentication-Results field longer than this counts as ours, whatever it says: no
#: real one is, and no authserv-id may hide behind that much comment.
MAX_FIELD = 64 * 1024


def is_ours(field: bytes, authserv_id: str) -> bool:
    """Whether FIELD (one header field, its lines joined) is an Authentication-Results
    field bearing AUTHSERV_ID (compared without regard to case), or one over MAX_FIELD."""
    match = _AUTHRES_NAME.match(field)
    if not match:
        return False
    if len(field) > MAX_FIELD:
        return True
    value = field[match.end() :].decode("utf-8", "replace")
    return _authserv_id(value).lower() == authserv_id.strip().lower()


def remove_our_authres(message: bytes, authserv_id: str) -> bytes:
    """MESSAGE without the Authentication-Results fields bearing AUTHSERV_ID (compared
    without regard to case) in its header block; every other byte stays as it was.
    (forged.py does the same to a file, streaming.)"""
    lines, body_start = header_block(message)
    kept: list[bytes] = []
    removed = False
    for group in fields_of(lines):
        if is_ours(b"".join(group), authserv_id):
            removed = True
            continue
        kept.extend(group)
    if not removed:
        return message
    return b"".join(kept) + message[body_start:]


def _authserv_id(value: str) -> str:
    """The authserv-id at the start of an Authentication-Results value (CFWS skipped)."""
    text = re.sub(r"\s+", " ", value)
    pos = 0
    while pos < len(text):  # skip white space and (nested) comments
        if text[pos] == " ":
            pos += 1
        elif text[pos] == "(":
            depth = 0
            while pos < len(text):
                if text[pos] == "\\":
                    pos += 1
                elif text[pos] == "(":
                    depth += 1
                elif text[pos] == ")":
                    depth -= 1
                    if depth == 0:
                        pos += 1
                        break
                pos += 1
        else:
            break
    text = text[pos:]
    if text.startswith('"'):
        match = re.match(r'"((?:[^"\\]|\\.)*)"', text)
        return re.sub(r"\\(.)", r"\1", match.group(1)) if match else ""
    return re.split(r"[\s;(]", text, maxsplit=1)[0]


_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_ATOM = r"[!#$%&'*+\-/=?^_`{|}~0-9A-Za-z]+"
_LOCAL = rf'(?:{_ATOM}(?:\.{_ATOM})*|"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*")'
_ADDRESS = re.compile(rf"(?:{_LOCAL})?@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def _pvalue(value: str) -> str:
    """VALUE as an RFC 8601 pvalue: bare when a token or a plain address, else quoted.
    Kept to ASCII (what `authres` parses): anything else becomes "?"."""
    value = value.encode("ascii", "replace").decode("ascii")
    if _TOKEN.fullmatch(value) or _ADDRESS.fullmatch(value):
        return value
    return _quoted(value)


def _identity_pvalue(value: str) -> str:
    """A MAIL FROM address or HELO name as a pvalue: an internationalised domain as its
    A-label; an address whose local part is not ASCII is reported by its domain alone."""
    local, at, domain = value.rpartition("@")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            pass
    if at and not local.isascii():
        return _pvalue(domain)
    return _pvalue(local + at + domain)


def _quoted(value: str) -> str:
    value = re.sub(r"[\x00-\x1f\x7f]", " ", value.encode("ascii", "replace").decode("ascii"))
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _reason(result: str, reason: str) -> str:
    """` reason="..."` for results worth explaining (not pass/none), else ""."""
    if not reason or result in ("pass", "none"):
        return ""
    reason = " ".join(reason.split()).replace('"', "'").replace("\\", "/")
    if len(reason) > 120:
        reason = reason[:117] + "..."
    return f" reason={_quoted(reason)}"
