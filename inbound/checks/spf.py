"""SPF (RFC 7208) through pyspf, its DNS lookups going to our resolver.

The MAIL FROM identity, or for the null sender `<>` the HELO identity (postmaster@helo,
reported as smtp.helo).  Never the header From.  pyspf's limits apply (10 DNS mechanisms,
2 void lookups) and the whole check stops after SPF_TIME_LIMIT seconds.

pyspf is adapted, not patched in place per call: it is imported without dnspython
(libs.py) and its module-level DNSLookup pointed at `_spf_lookup` once, which uses the
resolver of the check under way (a context variable: with the message's DNS cache and
budget) and, for anyone else in the process, a resolver on the system's servers.  The
time limit is SPF_TIME_LIMIT or what is left of the message's budget, the smaller.
This module reports a result; it decides nothing.
"""

from __future__ import annotations

import contextvars
import ipaddress
import re

from .results import RESULTS, SPFResult

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .resolver import Resolver

#: Overall SPF time limit in seconds (RFC 7208 4.6.4 suggests at least 20).
SPF_TIME_LIMIT = 20.0

_spf_resolver: contextvars.ContextVar[Resolver | None] = contextvars.ContextVar("spf_resolver", default=None)
_SPF_RESULTS = {"unknown": "permerror", "error": "temperror", "ambiguous": "neutral"}


def check_spf(client_ip: str, helo: str, mail_from: str, resolver: Resolver) -> SPFResult:
    """SPF (RFC 7208) of MAIL FROM, or of the HELO name for the null sender."""
    helo = helo.strip()
    if mail_from:
        identity, sender, domain = "mailfrom", mail_from, mail_from.rpartition("@")[2]
    else:
        identity, sender, domain = "helo", helo, helo
    domain = domain.lower().rstrip(".")
    if not sender:
        return SPFResult("none", identity, sender, domain, "no MAIL FROM domain and no HELO name")
    if identity == "helo" and (helo.startswith("[") or _is_ip(helo)):
        return SPFResult("none", identity, sender, domain, "HELO is an address literal")
    ip = _client_ip(client_ip)
    if ip is None:
        return SPFResult("none", identity, sender, domain, "client address unknown")
    spf = _spf_module()
    token = _spf_resolver.set(resolver)
    limit = SPF_TIME_LIMIT
    if resolver.budget is not None:  # 0 would mean "no limit" to pyspf
        limit = max(0.001, min(limit, resolver.budget.remaining()))
    try:
        query = _SPFQuery(i=ip, s=_unquoted(mail_from), h=helo, timeout=resolver.timeout, querytime=limit)
        result, _code, explanation = query.check()
    except spf.TempError as e:
        result, explanation = "temperror", str(e)
    except (spf.PermError, ValueError, UnicodeError) as e:
        result, explanation = "permerror", str(e)
    finally:
        _spf_resolver.reset(token)
    result = _SPF_RESULTS.get(result, result)
    if result not in RESULTS:
        result, explanation = "permerror", f"unexpected SPF result {result!r}"
    return SPFResult(result, identity, sender, domain, "" if result == "pass" else str(explanation or ""))


def _unquoted(address: str) -> str:
    """ADDRESS with a quoted-string local part as its plain value ("a b"@x -> a b@x), which is
    what the SPF `l` macro expands to."""
    local, at, domain = address.rpartition("@")
    if at and len(local) >= 2 and local[0] == local[-1] == '"':
        local = re.sub(r"\\(.)", r"\1", local[1:-1])
    return f"{local}{at}{domain}" if at else address


def _client_ip(text: str) -> str | None:
    text = text.strip().strip("[]")
    if text.lower().startswith("ipv6:"):
        text = text[5:]
    try:
        address = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _spf_lookup(name: str, qtype: str, strict: Any = True, timeout: Any = None) -> list[Any]:
    """pyspf's DNSLookup over our resolver: the raw answer section, CNAMEs included.

    pyspf follows CNAME chains itself (with its own loop detection, so a loop is a void
    lookup, RFC 1034 3.6.2), which is why the records go to it as they came and not
    resolved; a time-out or server failure is pyspf's TempError.
    """
    import spf

    from .resolver import DNSNameError, DNSTemporaryError, Resolver

    resolver = _spf_resolver.get()
    if resolver is None:  # someone else in this process using pyspf: the system's servers
        resolver = Resolver(timeout=float(timeout or 20))
    try:
        response = resolver.query(name, qtype)
    except DNSNameError:
        return []
    except DNSTemporaryError as e:
        raise spf.TempError(f"DNS {e}") from None
    return [((r.name, r.rdtype), r.value) for r in response.records]


_SPFQuery: Any = None


def _spf_module() -> Any:
    """pyspf, with its DNS lookups going to `_spf_lookup` (done once)."""
    global _SPFQuery
    from .libs import import_spf

    spf = import_spf(_spf_lookup)
    if _SPFQuery is None:

        class SPFQuery(spf.query):  # type: ignore[misc,name-defined]
            """pyspf's query with RFC 7208 5.5 for PTR names: a DNS error while looking up
            the addresses of one name skips that name instead of ending the check."""

            def validated_ptrs(self) -> list[str]:
                try:
                    names = self.dns_ptr(self.i)
                except spf.TempError:
                    return []  # 5.5: a DNS error on the PTR lookup: the mechanism does not match
                validated = []
                for name in names[: spf.MAX_PTR]:
                    try:
                        addresses = self.dns_a(name, self.A)
                    except spf.TempError:
                        continue
                    if self.cidrmatch(addresses, self.cidrmax):
                        validated.append(name)
                return validated

        _SPFQuery = SPFQuery
    return spf
