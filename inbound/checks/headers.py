"""Raw header scanning shared by the checks: the header block, its fields, the From domains.

The checks read the message as bytes, exactly as received: no email-package parsing,
so what DKIM signs is what we look at.  Nothing here decodes encoded words.  From
addresses are read by inbound/addresses.py, the parser the Envelope uses.
"""

from __future__ import annotations

import re


def header_block(message: bytes) -> tuple[list[bytes], int]:
    """The header lines (each with its line ending) and the offset where the body starts."""
    lines: list[bytes] = []
    pos = 0
    while pos < len(message):
        end = message.find(b"\n", pos)
        end = len(message) if end < 0 else end + 1
        line = message[pos:end]
        if line in (b"\r\n", b"\n"):
            return lines, pos
        lines.append(line)
        pos = end
    return lines, pos


def fields_of(lines: list[bytes]) -> list[list[bytes]]:
    """Header lines grouped into fields (a field's first line and its continuations)."""
    fields: list[list[bytes]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    return fields


def header_fields(message: bytes) -> list[tuple[str, str]]:
    """(lower-case name, unfolded value) of each header field of MESSAGE, in order."""
    out = []
    for group in fields_of(header_block(message)[0]):
        text = b"".join(group).decode("utf-8", "replace")
        name, sep, value = text.partition(":")
        if sep:
            out.append((name.strip().lower(), re.sub(r"\r?\n", "", value).strip()))
    return out


#: From values longer than this are read up to here (the Envelope reads 8 KB of each field).
MAX_FROM_CHARS = 256 * 1024


def from_domains(fields: list[tuple[str, str]]) -> tuple[list[str], str]:
    """Every domain the From fields name, in order, and what is wrong with them ("" when
    nothing): DMARC evaluates each (RFC 7489 6.6.1).  The addresses are read by the one
    parser the Envelope uses too (inbound/addresses.py), so the From addresses a handler
    sees are those whose domains were evaluated; malformed ones give their domains too."""
    values = [value for name, value in fields if name == "from"]
    if not values:
        return [], "no From header field"
    from ..addresses import domains

    found: dict[str, None] = {}  # (ordered, and each look-up costs nothing)
    problems = ["several From header fields"] if len(values) > 1 else []
    for value in values:
        if len(value) > MAX_FROM_CHARS:
            problems.append(f"From field longer than {MAX_FROM_CHARS} characters")
        named, missing = domains(value[:MAX_FROM_CHARS])
        found.update(dict.fromkeys(named))
        if missing or not named:
            problems.append("From address without a domain")
    return list(found), "; ".join(dict.fromkeys(problems))


def from_domain(fields: list[tuple[str, str]]) -> tuple[str, str]:
    """(the one From domain, "") or ("", why there is not exactly one): the domain that DKIM
    alignment and the reply rules compare with (DMARC reads from_domains)."""
    found, problem = from_domains(fields)
    if problem:
        return "", problem
    if len(found) > 1:
        return "", "From addresses in several domains"
    return found[0], ""
