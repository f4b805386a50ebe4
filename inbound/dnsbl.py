"""DNS blocklists (RFC 5782): is the client listed by a `[checks] dnsbl` zone?

At connect, for each zone, the client's address is looked up reversed under the zone
(192.0.2.10 -> 10.2.0.192.zen.spamhaus.org; IPv6 by nibbles), type A.  An answer in
127.0.0.0/8 lists it, with that address as the code (127.0.0.2 ...); NXDOMAIN, no data,
or a lookup that fails or times out does not (a broken blocklist must not stop mail:
it is logged).  Answers of 127.255.255.0/24 are the lists' own error codes (Spamhaus:
"queried through a public resolver") and list nobody, with a warning.  Answers are
cached in the client memory (clients.py) for CACHE_SECONDS (an hour), keyed by the
configured zones: a changed `dnsbl` asks again.

This module reports listings; the policy refuses (554 5.7.1 at RCPT, postmaster@
excepted) when `[checks] dnsbl_reject = yes`.
"""

from __future__ import annotations

from . import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .clients import ClientMemory
    from .config import Config

CACHE_SECONDS = 3600.0


def reversed_name(addr: str, zone: str) -> str | None:
    """The name to look up for ADDR under ZONE; None for an address that is no IP."""
    parts = addr.split(".")
    if len(parts) == 4 and all(p.isascii() and p.isdigit() and len(p) <= 3 and int(p) < 256 for p in parts):
        if not any(len(p) > 1 and p[0] == "0" for p in parts):  # what ip_address() accepts
            return ".".join([*reversed(parts), zone.strip(".")])  # IPv4 without ipaddress (~3 ms)
    import ipaddress

    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address):
        labels = list(reversed(str(ip).split(".")))
    else:
        labels = list(reversed(ip.exploded.replace(":", "")))
    return ".".join(labels + [zone.strip(".")])


def listed_code(values: list[str]) -> str:
    """The listing code among A answers ("" when none lists): 127.0.0.0/8, not 127.255.255.x."""
    for value in values:
        if value.startswith("127.") and not value.startswith("127.255.255."):
            return value
    return ""


def lookup(config: Config, addr: str, memory: ClientMemory | None = None) -> list[str]:
    """The zones listing ADDR, each as "zone=code" (e.g. "zen.spamhaus.org=127.0.0.4")."""
    zones = config.checks.dnsbl
    if not zones or not addr:
        return []
    key = ",".join(zones)  # answers of these very zones: a config change asks anew
    cached = memory.cached_dnsbl(addr, key) if memory is not None else None
    if cached is not None:
        if cached:
            log.info("client %s is listed: %s (cached)", addr, " ".join(cached))
        return cached
    from .checks.resolver import DNSError, Resolver

    resolver = Resolver.from_settings(config.checks)
    found = []
    failed = False
    for zone in zones:
        name = reversed_name(addr, zone)
        if name is None:
            return []
        try:
            values = [str(v) for v in resolver.resolve(name, "A")]
            code = listed_code(values)
        except DNSError as e:
            log.warning("dnsbl %s: lookup of %s failed (%s): not counted as listed", zone, addr, e)
            failed = True
            continue
        if code:
            found.append(f"{zone}={code}")
        elif values and all(v.startswith("127.255.255.") for v in values):
            log.warning("dnsbl %s answers %s for %s: the list refuses our queries", zone, values[0], addr)
    if memory is not None and not failed:  # a failure is no answer: the next connection asks
        memory.cache_dnsbl(addr, key, found, CACHE_SECONDS)
    if found:
        log.info("client %s is listed: %s", addr, " ".join(found))
    return found
