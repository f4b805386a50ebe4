"""Raw header scanning shared by the checks: the header block, its fields, the From domain.

The checks read the message as bytes, exactly as received: no email-package parsing,
so what DKIM signs is what we look at.  Nothing here decodes encoded words.
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


def from_domain(fields: list[tuple[str, str]]) -> tuple[str, str]:
    """(the From domain, "") or ("", why there is no single one)."""
    values = [value for name, value in fields if name == "from"]
    if not values:
        return "", "no From header field"
    if len(values) > 1:
        return "", "several From header fields"
    import email.utils  # only for mail that has a From field to look at

    addresses = [addr for _, addr in email.utils.getaddresses(values) if addr]
    domains = {addr.rpartition("@")[2].strip().lower().rstrip(".") for addr in addresses if "@" in addr}
    if not domains or "" in domains:
        return "", "From address without a domain"
    if len(domains) > 1:
        return "", "From addresses in several domains"
    domain = domains.pop()
    if not re.fullmatch(r"[^\s()<>\[\]:;@\\,\"]+", domain):
        return "", "From domain is not a domain name"
    return domain, ""
