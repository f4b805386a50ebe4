"""The Sender Rewriting Scheme: the envelope sender of a forward, and its way back.

A message we forward leaves with MAIL FROM rewritten to an address of `[forward]
srs_domain`, so the next hop's SPF check sees our domain, and a bounce comes back to us
to be decoded (Shevek's "Sender Rewriting Scheme" paper, its Guarded scheme as libsrs2,
postsrsd and Mail::SRS write it):

    alice@sender.example        -> SRS0=HHHH=TT=sender.example=alice@srs.example
    SRS0=hhhh=tt=a.example=bob@b.example (already rewritten by B, first hop A)
                                -> SRS1=HHHH=b.example==hhhh=tt=a.example=bob@srs.example

HHHH is the first 4 characters of the base64 HMAC-SHA1, keyed with `srs_secret`, of the
lower-cased fields that follow it; TT is the day number modulo 1024 in base32 (A-Z,
2-7).  `decode()` checks the hash case-insensitively (a relay may change the case of a
local part) and, for SRS0, that the stamp is at most MAX_AGE_DAYS old; it raises
SRSError for anything forged, expired or not ours.  An SRS1 address decodes to the SRS0
address of its first hop (which checks its own stamp).

Our own code, not a library: pysrs fails on Python 3.9+ and srslib is unmaintained;
tests/unit/test_srs.py holds test vectors of libsrs2 (postsrsd's) and srslib.  This
module imports nothing of the package: the router asks it only about SRS addresses.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable

    from .settings import ForwardSettings

HASH_LENGTH = 4  # libsrs2's default
MAX_AGE_DAYS = 21  # libsrs2's default: a bounce comes back within three weeks
STAMP_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
DAY = 86400

SRS0 = re.compile(r"SRS0[=+-]([^=]+)=([^=]+)=([^=]+)=(.+)", re.IGNORECASE | re.DOTALL)
SRS0_OPAQUE = re.compile(r"SRS0([=+-].+)", re.IGNORECASE | re.DOTALL)
SRS1 = re.compile(r"SRS1[=+-]([^=]+)=([^=]+)=([=+-].+)", re.IGNORECASE | re.DOTALL)


class SRSError(ValueError):
    """Not an SRS address of ours: forged (bad hash), expired, or malformed."""


def is_srs(local: str) -> bool:
    """Whether LOCAL (a local part) looks like SRS: a bounce to be decoded, not a handler."""
    return local[:4].upper() in ("SRS0", "SRS1") and local[4:5] in ("=", "+", "-")


def stamp(now: float | None = None) -> str:
    """Today's two-character timestamp (days since the epoch, modulo 1024, base32)."""
    day = int((time.time() if now is None else now) // DAY)
    return STAMP_ALPHABET[(day >> 5) & 31] + STAMP_ALPHABET[day & 31]


def stamp_age(text: str, now: float | None = None) -> int:
    """How many days ago stamp TEXT was made (0..1023); SRSError when it is no stamp."""
    text = text.upper()
    if len(text) != 2 or any(c not in STAMP_ALPHABET for c in text):
        raise SRSError(f"bad SRS timestamp {text!r}")
    then = STAMP_ALPHABET.index(text[0]) << 5 | STAMP_ALPHABET.index(text[1])
    today = int((time.time() if now is None else now) // DAY) % 1024
    return (today - then) % 1024


def digest(secret: str, *fields: str) -> str:
    """The first HASH_LENGTH characters of base64(HMAC-SHA1(secret, lower(fields...)))."""
    data = "".join(fields).lower().encode("utf-8", "surrogateescape")
    mac = hmac.new(secret.encode("utf-8"), data, hashlib.sha1).digest()
    return base64.b64encode(mac)[:HASH_LENGTH].decode("ascii")


def _check(secret: str, given: str, *fields: str) -> None:
    if len(given) < HASH_LENGTH or not hmac.compare_digest(
        given.lower().encode("utf-8", "replace"), digest(secret, *fields).lower().encode("ascii")
    ):
        raise SRSError("SRS hash does not match (forged, or another secret)")


def encode(sender: str, srs_domain: str, secret: str, now: float | None = None) -> str:
    """The SRS address to use as MAIL FROM when forwarding mail from SENDER.

    An ordinary sender becomes SRS0, an SRS0 or SRS1 address of another host SRS1 (bounces
    then go to the first hop); a sender of SRS_DOMAIN itself, or <> (""), stays as it is."""
    local, at, host = sender.rpartition("@")
    if not sender or not at or not local or not host:
        if not sender:
            return sender
        raise SRSError(f"not an address: {sender!r}")
    if host.lower() == srs_domain.lower():
        return sender
    match = SRS1.fullmatch(local)
    if match:  # we are a later hop: keep the first hop and its opaque part, hash anew
        first_hop, opaque = match.group(2), match.group(3)
        return f"SRS1={digest(secret, first_hop, opaque)}={first_hop}={opaque}@{srs_domain}"
    match = SRS0_OPAQUE.fullmatch(local)
    if match:  # the sender's host rewrote it: bounces go back through that host
        opaque = match.group(1)
        return f"SRS1={digest(secret, host, opaque)}={host}={opaque}@{srs_domain}"
    when = stamp(now)
    return f"SRS0={digest(secret, when, host, local)}={when}={host}={local}@{srs_domain}"


def decode(address: str, secret: str, now: float | None = None, max_age: int = MAX_AGE_DAYS) -> str:
    """The address a bounce to our SRS ADDRESS is meant for: the original sender (SRS0) or
    the first hop's SRS0 address (SRS1).  SRSError when the hash does not match, an SRS0
    stamp is older than MAX_AGE days (or from the future), or it is no SRS address."""
    local = address.rpartition("@")[0] if "@" in address else address
    match = SRS1.fullmatch(local)
    if match:
        given, first_hop, opaque = match.groups()
        _check(secret, given, first_hop, opaque)
        return f"SRS0{opaque}@{first_hop}"
    match = SRS0.fullmatch(local)
    if match:
        given, when, host, original = match.groups()
        _check(secret, given, when, host, original)
        if stamp_age(when, now) > max_age:
            raise SRSError(f"SRS address expired (older than {max_age} days)")
        return f"{original}@{host}"
    raise SRSError(f"not an SRS address: {address!r}")


def bounced_for(recipients: Iterable[str], forward: ForwardSettings | None) -> str:
    """The address a bounce to one of RECIPIENTS (our SRS addresses) is meant for; "" when
    none is one.  The stamp's age is not checked again: RCPT did, and a retry comes later."""
    if forward is None or not forward.srs_domain:
        return ""
    for recipient in recipients:
        local, _, domain = recipient.rpartition("@")
        if domain.lower().rstrip(".") == forward.srs_domain and is_srs(local):
            try:
                return decode(recipient, forward.srs_secret, max_age=1023)
            except SRSError:
                continue
    return ""
