"""The dnspython-based resolver the checks used before inbound/checks/resolver.py (kept as
the reference its answers are compared with in tests/unit/test_dnswire.py).

It is built from `[checks] dns_servers` (several `host:port`, tried in turn; empty means
the system's resolv.conf) and `[checks] dns_timeout` (the most one lookup may take, all
retries and servers included).  Queries go over UDP with EDNS0; a truncated answer is
asked again over TCP.

A lookup gives the answer section as it came (`Response.records`: owner name, type,
value, CNAMEs included, in order) or, through `resolve()`/`txt()`, the values at the end
of a CNAME chain.  Failures are two exceptions and nothing else: `DNSTemporaryError`
(time-out, SERVFAIL/REFUSED, network error, a CNAME loop) and `DNSNameError` (a name
that cannot be put in a query, e.g. a label over 63 octets).  NXDOMAIN and "no data"
are answers, not errors.

This module does not cache, does not validate DNSSEC, and knows nothing of SPF or DKIM;
the adapters to pyspf and dkimpy live in `inbound.checks`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

#: Longest CNAME chain `resolve()` follows (RFC 1034 says follow, and signal loops).
MAX_CNAME_CHAIN = 10
#: EDNS0 UDP payload we advertise (the 2020 "DNS flag day" value).
EDNS_PAYLOAD = 1232


class DNSError(Exception):
    """Base of the resolver's errors."""


class DNSTemporaryError(DNSError):
    """The lookup may succeed later: time-out, server failure, network error, CNAME loop."""


class DNSNameError(DNSError):
    """The name cannot be looked up at all (empty or over-long label, bad IDNA)."""


@dataclass(frozen=True)
class Record:
    """One resource record of an answer section.

    `name` is lower case without the final dot ("" for the root).  `value` depends on
    `rdtype`: A/AAAA the address text; MX `(preference, exchange)`; CNAME/PTR/NS the
    target name (lower case, no final dot); TXT/SPF a tuple of the character-strings as
    bytes; anything else the record's presentation text.
    """

    name: str
    rdtype: str
    value: Any


@dataclass
class Response:
    """The answer to one query: records of the answer section and whether NXDOMAIN."""

    records: list[Record] = field(default_factory=list)
    nxdomain: bool = False


def _name_text(name: dns.name.Name) -> str:
    """NAME as plain lower-case text: labels joined by dots, no escapes, no final dot."""
    labels = name.labels[:-1] if name.is_absolute() else name.labels
    return b".".join(labels).decode("utf-8", "replace").lower()


def _record_value(rdtype: str, rdata: Any) -> Any:
    if rdtype in ("A", "AAAA"):
        return rdata.address
    if rdtype == "MX":
        return (rdata.preference, _name_text(rdata.exchange))
    if rdtype in ("CNAME", "PTR", "NS", "DNAME"):
        return _name_text(rdata.target)
    if rdtype in ("TXT", "SPF"):
        return tuple(rdata.strings)
    return rdata.to_text()


class Resolver:
    """A stub resolver over the given servers; see the module docstring."""

    def __init__(self, servers: Sequence[tuple[str, int]] = (), timeout: float = 5.0) -> None:
        self._servers: list[tuple[str, int]] | None = list(servers) or None
        self.timeout = float(timeout) if timeout and timeout > 0 else 5.0
        self._addresses_checked = False

    @classmethod
    def from_settings(cls, settings: Any) -> Resolver:
        """From an `inbound.config.CheckSettings` (dns_servers, dns_timeout)."""
        return cls(settings.dns_servers, settings.dns_timeout)

    @property
    def servers(self) -> list[tuple[str, int]]:
        """The servers asked (addresses), in order; resolv.conf's (port 53) when none were given."""
        if self._servers is None:
            try:
                system = dns.resolver.Resolver(configure=True)
                self._servers = [(str(host), 53) for host in system.nameservers]
            except Exception:  # no or unreadable resolv.conf: every lookup is a temperror
                self._servers = []
        if not self._addresses_checked:
            self._servers = [(_address(host), port) for host, port in self._servers]
            self._addresses_checked = True
        return self._servers

    # -- queries ------------------------------------------------------------------
    def query(self, name: str | bytes, rdtype: str) -> Response:
        """Ask for NAME/RDTYPE once; the answer section as it came (CNAMEs included)."""
        qname = self._qname(name)
        response = self._exchange(qname, dns.rdatatype.from_text(rdtype))
        if response.rcode() == dns.rcode.NXDOMAIN:
            return Response(nxdomain=True)
        records = []
        for rrset in response.answer:
            rtype = dns.rdatatype.to_text(rrset.rdtype)
            owner = _name_text(rrset.name)
            for rdata in rrset:
                records.append(Record(owner, rtype, _record_value(rtype, rdata)))
        return Response(records)

    def resolve(self, name: str | bytes, rdtype: str) -> list[Any]:
        """Values of NAME/RDTYPE, following CNAMEs (a loop or an over-long chain is temporary)."""
        current = _name_text(self._qname(name))
        seen = {current}
        response = self.query(current, rdtype)
        for _ in range(MAX_CNAME_CHAIN + 1):
            values = [r.value for r in response.records if r.name == current and r.rdtype == rdtype]
            if values:
                return values
            targets = [r.value for r in response.records if r.name == current and r.rdtype == "CNAME"]
            if not targets or rdtype == "CNAME":
                return []
            current = targets[0]
            if current in seen:
                raise DNSTemporaryError(f"CNAME loop at {current}")
            seen.add(current)
            if not any(r.name == current for r in response.records):  # chain not in this answer
                response = self.query(current, rdtype)
        raise DNSTemporaryError(f"CNAME chain longer than {MAX_CNAME_CHAIN} at {name!r}")

    def txt(self, name: str | bytes) -> list[bytes]:
        """The TXT records at NAME, each one's character-strings joined; [] when none."""
        return [b"".join(strings) for strings in self.resolve(name, "TXT")]

    # -- internals ----------------------------------------------------------------
    @staticmethod
    def _qname(name: str | bytes) -> dns.name.Name:
        try:
            text = name.decode("utf-8") if isinstance(name, bytes) else name
            if not text.strip(". "):
                raise DNSNameError(f"empty name {name!r}")
            return dns.name.from_text(text)
        except DNSNameError:
            raise
        except (dns.exception.DNSException, UnicodeError, ValueError) as e:
            raise DNSNameError(f"bad name {name!r}: {e}") from None

    def _exchange(self, qname: dns.name.Name, rdtype: dns.rdatatype.RdataType) -> dns.message.Message:
        """One query, retried over the servers until one answers or the time is up."""
        servers = self.servers
        if not servers:
            raise DNSTemporaryError("no DNS server configured")
        deadline = time.monotonic() + self.timeout
        # Several tries per lookup, like a stub resolver's retransmissions.
        per_try = max(self.timeout / 3, 0.1)
        problems: list[str] = []
        while True:
            answered_badly = 0
            for host, port in servers:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise DNSTemporaryError(f"{qname} timed out ({'; '.join(problems[-2:]) or 'no answer'})")
                query = dns.message.make_query(qname, rdtype, use_edns=0, payload=EDNS_PAYLOAD)
                try:
                    response = dns.query.udp(
                        query, host, timeout=min(per_try, remaining), port=port, ignore_unexpected=True
                    )
                    if response.flags & dns.flags.TC:
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise dns.exception.Timeout
                        response = dns.query.tcp(query, host, timeout=remaining, port=port)
                except dns.exception.Timeout:
                    problems.append(f"{host}:{port} no answer")
                    continue
                except (OSError, EOFError, dns.exception.DNSException) as e:
                    problems.append(f"{host}:{port} {type(e).__name__}")
                    answered_badly += 1
                    continue
                rcode = response.rcode()
                if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                    return response
                problems.append(f"{host}:{port} {dns.rcode.to_text(rcode)}")
                answered_badly += 1
            if answered_badly == len(servers):  # every server refused or failed: asking again won't help
                raise DNSTemporaryError(f"{qname}: {'; '.join(problems[-len(servers) :])}")


def _address(host: str) -> str:
    """HOST as an IP address literal (a configured server may be given by name)."""
    host = host.strip("[]")
    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host)
            return host
        except OSError:
            pass
    try:
        return str(socket.getaddrinfo(host, 53, type=socket.SOCK_DGRAM)[0][4][0])
    except (OSError, IndexError):
        return host  # queries to it fail, and each lookup becomes a temperror
