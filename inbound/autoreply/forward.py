"""Forwarding: the message as we received it, resent to another address by the [reply] transport.

`forward(envelope, to)` is what `envelope.forward(to)` and `send --forward ADDR` call.
The message goes out byte for byte as the handler got it (our Authentication-Results and
Received on top, the body untouched), with on top of it:

* an ARC set (ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results; dkimpy's
  `arc_sign`, instance i=N+1 of the chain it came with) whose ARC-Authentication-Results
  are the results we verified (our Authentication-Results, authserv-id `[server]
  hostname`), and cv= our ARC result (pass, fail, or none for a first set);
* a DKIM-Signature of `[reply] dkim_domain`, `dkim_selector`, `dkim_key` (compose.sign).

Both are made with the `[reply] dkim_*` key; with none configured the forward goes out
unsigned (SRS alone keeps SPF passing; DKIM of the author survives an untouched body),
and dkimpy seals ARC with an RSA key only, so an Ed25519 key signs DKIM alone.  MAIL FROM
is the sender rewritten by SRS (srs.py) into `[forward] srs_domain`, so a bounce comes
back to us and the router hands it to `[forward] bounces`; <> stays <>.

ForwardRefused (a Reject) says it will never go, so retrying cannot help:

* `[forward] srs_domain`/`srs_secret` are not set, or TO is no plain address, or is in
  one of our domains (`[server] domains`: it would come straight back to us);
* the message carries our own ARC instance (an ARC-Authentication-Results with our
  authserv-id, or an ARC-Seal of our key's d= and s=): we forwarded it before;
* it passed through us more than MAX_OWN_HOPS times (our Received fields), or has more
  than MAX_HOPS Received fields at all (RFC 5321 6.3): a loop that lost its ARC sets;
* the destination refused it for good (5xx).

A temporary failure of the transport, or an unreadable key, raises TempFail.
"""

from __future__ import annotations

import re

from .. import log
from ..outcomes import ForwardRefused
from .compose import sign, signing_key
from .transports import TRANSPORTS, PermanentFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..config import Config
    from ..envelope import Envelope

#: Times a message may have passed through us (our Received: fields) and still be forwarded.
MAX_OWN_HOPS = 3
#: Received: fields in all beyond which a message is looping (RFC 5321 6.3 says at least 100).
MAX_HOPS = 100
#: A plain address to forward to: no spaces, quotes, brackets or routes; not an option.
ADDRESS = re.compile(r"[^\s\"<>()\[\],;:\\@-][^\s\"<>()\[\],;:\\@]*@[^\s\"<>()\[\],;:\\@]+")


def forward(envelope: Envelope, to: str) -> str:
    """Forward ENVELOPE's message to TO; the MAIL FROM used (the SRS address, or "" for <>)."""
    config = envelope.server_config
    if config is None:
        raise ForwardRefused("no server config: no [forward] and [reply] settings to forward with")
    who = f"{envelope.queue_id or '-'}: forward of {envelope.handler or 'handler'} to {to}"
    settings = config.forward
    if not (settings.srs_domain and settings.srs_secret):
        raise ForwardRefused(f"{config.path}: [forward] srs_domain and srs_secret must be set to forward")
    if not ADDRESS.fullmatch(to):
        raise ForwardRefused(f"not a plain address to forward to: {to!r}")
    if config.is_local_domain(to.rpartition("@")[2]):
        raise ForwardRefused(f"{to} is in one of our own domains: it would come back to us")
    data = envelope.raw
    fields = header_fields(data)
    loop = loop_reason(fields, config)
    if loop:
        log.warning("%s refused: %s", who, loop)
        raise ForwardRefused(loop)
    from ..srs import SRSError, encode

    try:
        mail_from = encode(envelope.sender, settings.srs_domain, settings.srs_secret)
    except SRSError as e:
        raise ForwardRefused(f"the sender cannot be rewritten by SRS: {e}") from None
    data = signed(data, envelope.prefix, fields, config, who)
    transport = config.reply.transport
    try:
        TRANSPORTS[transport](data, mail_from, to, config)
    except PermanentFailure as e:
        log.warning("%s failed for good via %s: %s", who, transport, e)
        raise ForwardRefused(f"{to} refused for good: {e}") from None
    log.info("%s sent via %s, MAIL FROM <%s>", who, transport, mail_from)
    return mail_from


def header_fields(data: bytes) -> list[tuple[str, str]]:
    """The header block of DATA as (lower-case name, unfolded value) pairs, in order."""
    end = data.find(b"\r\n\r\n")
    block = data[: end + 2] if end >= 0 else data
    fields: list[tuple[str, str]] = []
    for line in block.decode("utf-8", "replace").split("\r\n"):
        if line[:1] in (" ", "\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, f"{value} {line.strip()}")
        elif ":" in line:
            name, _, value = line.partition(":")
            fields.append((name.strip().lower(), value.strip()))
    return fields


def tags(value: str) -> dict[str, str]:
    """The tag=value list of a DKIM/ARC field, tags lower-cased, whitespace removed."""
    found = {}
    for item in value.split(";"):
        name, eq, text = item.partition("=")
        if eq:
            found[name.strip().lower()] = "".join(text.split())
    return found


def loop_reason(fields: list[tuple[str, str]], config: Config) -> str:
    """Why forwarding a message with these header FIELDS would loop; "" when it would not."""
    ours = config.server.hostname.lower()
    domain, selector = config.reply.dkim_domain.lower(), config.reply.dkim_selector.lower()
    own_hops = hops = 0
    for name, value in fields:
        if name == "arc-authentication-results":
            _, _, rest = value.partition(";")  # "i=1; authserv-id [version]; results"
            if rest.split(";", 1)[0].strip().lower().split(" ")[0] == ours:
                return f"it carries our own ARC set (authserv-id {ours}): we forwarded it before"
        elif name == "arc-seal" and domain and selector:
            seal = tags(value)
            if seal.get("d", "").lower() == domain and seal.get("s", "").lower() == selector:
                return f"it carries our own ARC-Seal (d={domain} s={selector}): we forwarded it before"
        elif name == "received":
            hops += 1
            own_hops += f"by {ours} (mailserver" in value.lower()
    if own_hops > MAX_OWN_HOPS:
        return f"it passed through {ours} {own_hops} times (more than {MAX_OWN_HOPS}): a loop"
    if hops > MAX_HOPS:
        return f"it has {hops} Received fields (more than {MAX_HOPS}): a loop"
    return ""


def signed(data: bytes, prefix: bytes, fields: list[tuple[str, str]], config: Config, who: str) -> bytes:
    """DATA with our ARC set and DKIM-Signature on top (either left out, and logged, when
    it cannot be made: no key, an Ed25519 key for ARC, no From field, no chain to extend)."""
    key = signing_key(config)
    if key is None:
        log.info("%s: no [reply] dkim_* key: forwarded without ARC and DKIM", who)
        return data
    if not any(name == "from" for name, _ in fields):
        log.warning("%s: no From field: forwarded without ARC and DKIM", who)
        return data
    if b"-----BEGIN" in key:
        data = arc_sealed(data, prefix, key, config, who)
    else:
        log.info("%s: an Ed25519 key signs DKIM only (dkimpy seals ARC with RSA)", who)
    return sign(data, config)


def arc_sealed(data: bytes, prefix: bytes, key: bytes, config: Config, who: str) -> bytes:
    """DATA with an ARC set of our results on top; DATA when dkimpy makes none."""
    import dkim

    hostname = config.server.hostname
    settings = config.reply
    try:
        arc = dkim.arc_sign(
            arc_ready(data, prefix),
            settings.dkim_selector.encode("ascii"),
            settings.dkim_domain.encode("ascii"),
            key,
            hostname.encode("ascii"),
        )
    except Exception as e:  # a broken key or a message dkimpy cannot seal: say so, send it
        log.warning("%s: no ARC set: %s: %s", who, type(e).__name__, e)
        return data
    if not arc:
        log.warning("%s: no ARC set: the chain it came with has no ARC result of ours", who)
        return data
    return b"".join(arc) + data


def arc_ready(data: bytes, prefix: bytes) -> bytes:
    """DATA with our Authentication-Results (PREFIX) as arc_sign wants them: its cv= is our
    arc= result, which must be pass, fail or none (temperror, permerror... count as fail)."""
    if not prefix.startswith(b"Authentication-Results:") or not data.startswith(prefix):
        return data
    value = prefix.split(b":", 1)[1].decode("utf-8", "replace").strip()
    fixed = re.sub(r"(?i)(^|;\s*)arc=(?!pass\b|fail\b|none\b)[a-z]+", r"\1arc=fail", value)
    nothing = re.fullmatch(r"(?i)\s*([^;\s]+)\s*;\s*none\b.*", fixed, re.S)
    if nothing:  # dkimpy would write the AAR as "i=1; id" alone, which RFC 8601 does not allow
        fixed = f"{nothing.group(1)}; arc=none"
    return f"Authentication-Results: {fixed}\r\n".encode() + data[len(prefix) :]
