"""One small DNS stub resolver shared by every sender check (SPF, DKIM, ARC, DMARC).

It is built from `[checks] dns_servers` (several `host:port`, tried in turn; empty means
the system's resolv.conf) and `[checks] dns_timeout` (the most one lookup may take, all
retries and servers included).  Queries go over UDP with EDNS0; a truncated answer is
asked again over TCP.  Per try: a fresh random id (os.urandom) on a new UDP socket
connected to the server (the OS picks a random source port and drops datagrams from
elsewhere); a datagram with the wrong id, without QR, or for another question is ignored
and the wait goes on.  SERVFAIL, REFUSED and every rcode but NOERROR/NXDOMAIN are a bad
answer: when every server answered badly the lookup fails at once, otherwise the servers
are asked again (each try waits at most a third of the timeout) until the time is up.

A lookup gives the answer section as it came (`Response.records`: owner name, type,
value, CNAMEs included, in order) or, through `resolve()`/`txt()`, the values at the end
of a CNAME chain.  Failures are two exceptions and nothing else: `DNSTemporaryError`
(time-out, SERVFAIL/REFUSED, network error, a CNAME loop, the budget spent) and
`DNSNameError` (a name that cannot be put in a query, e.g. a label over 63 octets).
NXDOMAIN and "no data" are answers, not errors.

One Resolver serves one message: it remembers every answer (and failure) it got, so the
same question is asked once however often the checks ask it (200 signatures with one
key: one lookup), and it may carry a `Budget`, the one deadline and the caps on queries
and CNAME hops that all the checks of the message share; what is over the budget fails
as `DNSBudgetExceeded`, a temporary error.

The wire format is dnswire.py's, written here with the standard library only: importing
dnspython costs ~70 ms (its `dns._features` loads `importlib.metadata`), more than the
rest of a checked session.  This module does not validate DNSSEC, does not recurse, and
knows nothing of SPF or DKIM; the adapters to pyspf and dkimpy live in `inbound.checks`.
"""

from __future__ import annotations

import os
import struct
import time

from . import dnswire
from .dnswire import Record, socket  # the C module: socket.py costs a DNSBL lookup at connect ~4 ms

TYPE_CHECKING = False  # `typing` is not imported at run time
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

__all__ = ["Budget", "DNSBudgetExceeded", "DNSError", "DNSNameError", "DNSTemporaryError"]
__all__ += ["Record", "Resolver", "Response"]

#: Longest CNAME chain `resolve()` follows (RFC 1034 says follow, and signal loops).
MAX_CNAME_CHAIN = 10
#: Where the system's servers are read from when none are given.
RESOLV_CONF = "/etc/resolv.conf"


class DNSError(Exception):
    """Base of the resolver's errors."""


class DNSTemporaryError(DNSError):
    """The lookup may succeed later: time-out, server failure, network error, CNAME loop."""


class DNSBudgetExceeded(DNSTemporaryError):
    """The message's DNS budget (time, queries or CNAME hops) is spent: not asked."""


class DNSNameError(DNSError):
    """The name cannot be looked up at all (empty or over-long label, bad IDNA)."""


class Response:
    """The answer to one query: records of the answer section and whether NXDOMAIN."""

    __slots__ = ("records", "nxdomain")

    def __init__(self, records: list[Record] | None = None, nxdomain: bool = False) -> None:
        self.records = list(records or [])
        self.nxdomain = nxdomain

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Response):
            return False
        return (self.records, self.nxdomain) == (other.records, other.nxdomain)

    def __repr__(self) -> str:
        return f"Response(records={self.records!r}, nxdomain={self.nxdomain!r})"


class Budget:
    """What all the DNS lookups of one message may spend: a wall-clock deadline, a number
    of queries sent, a number of CNAME hops followed.  `spent` says what ran out first
    (empty while something is left), for the log and the stored results."""

    def __init__(
        self, seconds: float, queries: int, cname_hops: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.clock = clock
        self.deadline = clock() + seconds
        self.seconds = seconds
        self.queries = queries
        self.cname_hops = cname_hops
        self.asked = 0
        self.hops = 0
        self.spent = ""

    def remaining(self) -> float:
        """Seconds left before the deadline (never below 0)."""
        return max(0.0, self.deadline - self.clock())

    def _exceeded(self, why: str) -> DNSBudgetExceeded:
        self.spent = self.spent or why
        return DNSBudgetExceeded(f"DNS budget of the message spent: {why}")

    def spend_query(self) -> float:
        """Account for one query to send; the seconds it may take.  Raises when none is left."""
        if self.asked >= self.queries:
            raise self._exceeded(f"{self.queries} queries")
        left = self.remaining()
        if left <= 0:
            raise self._exceeded(f"{self.seconds:g} s")
        self.asked += 1
        return left

    def spend_hop(self) -> None:
        """Account for one CNAME hop followed."""
        if self.hops >= self.cname_hops:
            raise self._exceeded(f"{self.cname_hops} CNAME hops")
        self.hops += 1


class Resolver:
    """A stub resolver over the given servers, for one message; see the module docstring."""

    def __init__(
        self, servers: Sequence[tuple[str, int]] = (), timeout: float = 5.0, budget: Budget | None = None
    ) -> None:
        self._servers: list[tuple[str, int]] | None = list(servers) or None
        self.timeout = float(timeout) if timeout and timeout > 0 else 5.0
        self.budget = budget
        self._addresses_checked = False
        self._answers: dict[tuple[tuple[bytes, ...], int], Response | DNSTemporaryError] = {}
        self._ahead: dict[tuple[tuple[bytes, ...], int], _Ahead] = {}  # sent, answer not read yet
        #: Queries actually sent (answers from memory not counted), for logs and tests.
        self.sent = 0

    @classmethod
    def from_settings(cls, settings: Any, budget: Budget | None = None) -> Resolver:
        """From an `inbound.config.CheckSettings` (dns_servers, dns_timeout)."""
        return cls(settings.dns_servers, settings.dns_timeout, budget)

    @property
    def servers(self) -> list[tuple[str, int]]:
        """The servers asked (addresses), in order; resolv.conf's (port 53) when none were given."""
        if self._servers is None:
            self._servers = [(host, 53) for host in _system_servers()]
        if not self._addresses_checked:
            self._servers = [(_address(host), port) for host, port in self._servers]
            self._addresses_checked = True
        return self._servers

    # -- queries ------------------------------------------------------------------
    def query(self, name: str | bytes, rdtype: str) -> Response:
        """Ask for NAME/RDTYPE once; the answer section as it came (CNAMEs included)."""
        labels = self._qname(name)
        qtype = dnswire.type_code(rdtype)
        key = (tuple(x.lower() for x in labels), qtype)
        known = self._answers.get(key)
        if known is None:
            try:
                known = self._exchange(labels, qtype)
            except DNSBudgetExceeded:
                raise  # not an answer: nothing to remember
            except DNSTemporaryError as e:
                known = e
            self._answers[key] = known
        if isinstance(known, DNSTemporaryError):
            raise known
        return known

    def send_ahead(self, name: str | bytes, rdtype: str) -> None:
        """Send now the first try of the lookup of NAME/RDTYPE that a check is sure to make
        later; its answer is read when query() asks (the questions of a message then travel
        together, not one after the other).  The same lookup, query count and deadlines as
        without; a name that cannot be asked, or a budget already spent, sends nothing."""
        try:
            labels = self._qname(name)
        except DNSNameError:
            return
        qtype = dnswire.type_code(rdtype)
        key = (tuple(x.lower() for x in labels), qtype)
        if key in self._answers or key in self._ahead or not self.servers:
            return
        try:
            deadline = self._start()
        except DNSBudgetExceeded:
            return
        host, port = self.servers[0]
        qid = int.from_bytes(os.urandom(2), "big")
        query = dnswire.query_wire(qid, labels, qtype)
        try:
            sock = _udp_send(query, host, port)
        except OSError:
            sock = None  # the lookup's first try then fails as it would have
        self._ahead[key] = _Ahead(sock, qid, query, deadline)

    def close(self) -> None:
        """Close what send_ahead() sent and nobody asked for."""
        for ahead in self._ahead.values():
            if ahead.sock is not None:
                ahead.sock.close()
        self._ahead.clear()

    def resolve(self, name: str | bytes, rdtype: str) -> list[Any]:
        """Values of NAME/RDTYPE, following CNAMEs (a loop or an over-long chain is temporary)."""
        current = dnswire.plain(self._qname(name))
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
            if self.budget is not None:
                self.budget.spend_hop()
            if not any(r.name == current for r in response.records):  # chain not in this answer
                response = self.query(current, rdtype)
        raise DNSTemporaryError(f"CNAME chain longer than {MAX_CNAME_CHAIN} at {name!r}")

    def txt(self, name: str | bytes) -> list[bytes]:
        """The TXT records at NAME, each one's character-strings joined; [] when none."""
        return [b"".join(strings) for strings in self.resolve(name, "TXT")]

    # -- internals ----------------------------------------------------------------
    def _start(self) -> float:
        """Account for one lookup about to be sent (the budget may refuse); its deadline."""
        timeout = self.timeout
        if self.budget is not None:
            timeout = min(timeout, self.budget.spend_query())
        self.sent += 1
        return time.monotonic() + timeout

    @staticmethod
    def _qname(name: str | bytes) -> tuple[bytes, ...]:
        try:
            text = name.decode("utf-8") if isinstance(name, bytes) else name
            if not text.strip(". "):
                raise DNSNameError(f"empty name {name!r}")
            return dnswire.labels_of(text)
        except DNSNameError:
            raise
        except (UnicodeError, ValueError) as e:
            raise DNSNameError(f"bad name {name!r}: {e}") from None

    def _exchange(self, labels: tuple[bytes, ...], qtype: int) -> Response:
        """One query, retried over the servers until one answers or the time is up."""
        servers = self.servers
        shown = dnswire.plain(labels) + "."
        if not servers:
            raise DNSTemporaryError("no DNS server configured")
        question = (tuple(x.lower() for x in labels), qtype, dnswire.IN)
        ahead = self._ahead.pop(question[:2], None)
        deadline = ahead.deadline if ahead is not None else self._start()
        per_try = max(self.timeout / 3, 0.1)
        problems: list[str] = []
        while True:
            answered_badly = 0
            for host, port in servers:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    if ahead is not None and ahead.sock is not None:
                        ahead.sock.close()
                    raise DNSTemporaryError(f"{shown} timed out ({'; '.join(problems[-2:]) or 'no answer'})")
                if ahead is not None:  # the first try, sent ahead: its time counts from then
                    qid, query, sock, expiry = ahead.qid, ahead.query, ahead.sock, ahead.sent + per_try
                    ahead = None
                else:
                    qid = int.from_bytes(os.urandom(2), "big")
                    query = dnswire.query_wire(qid, labels, qtype)
                    sock, expiry = None, time.monotonic() + per_try
                try:
                    if sock is None:
                        sock = _udp_send(query, host, port)
                    try:
                        wire, message = _udp_receive(sock, qid, question, host, port, min(expiry, deadline))
                    finally:
                        sock.close()
                    if message.flags & dnswire.TC:  # truncated: ask again over TCP
                        remaining = deadline - time.monotonic()
                        if remaining <= 0:
                            raise TimeoutError
                        wire, message = _tcp(query, qid, question, host, port, time.monotonic() + remaining)
                    if message.rcode == dnswire.NXDOMAIN:
                        return Response(nxdomain=True)
                    if message.rcode == dnswire.NOERROR:
                        return Response(dnswire.records_of(wire, message))  # rdata errors: a bad answer
                except TimeoutError:
                    problems.append(f"{host}:{port} no answer")
                    continue
                except (OSError, EOFError, dnswire.FormError, _Unexpected, struct.error, ValueError) as e:
                    problems.append(f"{host}:{port} {type(e).__name__}")
                    answered_badly += 1
                    continue
                problems.append(f"{host}:{port} {dnswire.RCODES.get(message.rcode, message.rcode)}")
                answered_badly += 1
            if answered_badly == len(servers):  # every server refused or failed: asking again won't help
                raise DNSTemporaryError(f"{shown}: {'; '.join(problems[-len(servers) :])}")


class _Unexpected(Exception):
    """A datagram that is not the answer to our query (ignored on UDP)."""


def _family(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _same_address(family: int, a: str, b: str) -> bool:
    try:
        return socket.inet_pton(family, a.split("%")[0]) == socket.inet_pton(family, b.split("%")[0])
    except OSError:
        return a == b


def _check(message: dnswire.Message, qid: int, question: tuple) -> None:
    """Raise _Unexpected unless MESSAGE answers our query (dnspython's is_response)."""
    if not message.flags & dnswire.QR or message.id != qid or (message.flags >> 11) & 0xF != 0:
        raise _Unexpected("not our answer")
    if not message.question and message.rcode in (1, 2, 4, 5):  # FORMERR SERVFAIL NOTIMP REFUSED
        return
    if any(q != question for q in message.question) or question not in message.question:
        raise _Unexpected("another question")


Answer = tuple[bytes, dnswire.Message]


class _Ahead:
    """A lookup's first try, sent by send_ahead(): its socket (None if sending failed)."""

    __slots__ = ("sock", "qid", "query", "deadline", "sent")

    def __init__(self, sock: socket.socket | None, qid: int, query: bytes, deadline: float) -> None:
        self.sock, self.qid, self.query, self.deadline = sock, qid, query, deadline
        self.sent = time.monotonic()


def _udp_send(query: bytes, host: str, port: int) -> socket.socket:
    sock = socket.socket(_family(host), socket.SOCK_DGRAM)
    try:
        sock.connect((host, port))  # the OS's random source port; other sources dropped
        sock.send(query)
    except OSError:
        sock.close()
        raise
    return sock


def _udp_receive(
    sock: socket.socket, qid: int, question: tuple, host: str, port: int, expiry: float
) -> Answer:
    """The answer to our query on SOCK by EXPIRY (monotonic), other datagrams ignored."""
    family = _family(host)
    while True:
        remaining = expiry - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        wire, source = sock.recvfrom(65535)
        if source[1] != port or not _same_address(family, source[0], host):
            continue
        try:
            head = dnswire.Message(wire, header_only=True)
            if head.flags & dnswire.TC and not head.question:
                head.question = [question]  # a bare TC header (no question): TCP decides
            _check(head, qid, question)
        except (_Unexpected, dnswire.FormError, struct.error):
            continue  # not ours (or not even a header and question): keep waiting
        if head.flags & dnswire.TC:
            return wire, head  # truncated: the rest is not read, TCP follows
        return wire, dnswire.Message(wire)  # ours but malformed: dnswire.FormError, a bad answer


def _tcp(query: bytes, qid: int, question: tuple, host: str, port: int, expiry: float) -> Answer:
    def remaining() -> float:
        left = expiry - time.monotonic()
        if left <= 0:
            raise TimeoutError
        return left

    def receive(size: int) -> bytes:
        data = b""
        while len(data) < size:
            sock.settimeout(remaining())
            chunk = sock.recv(size - len(data))
            if not chunk:
                raise EOFError("connection closed")
            data += chunk
        return data

    sock = socket.socket(_family(host), socket.SOCK_STREAM)
    try:
        sock.settimeout(remaining())
        sock.connect((host, port))
        sock.sendall(struct.pack("!H", len(query)) + query)
        (size,) = struct.unpack("!H", receive(2))
        wire = receive(size)
    finally:
        sock.close()
    message = dnswire.Message(wire)
    _check(message, qid, question)  # on TCP a wrong answer is an error, not noise
    return wire, message


def _system_servers(path: str = RESOLV_CONF) -> list[str]:
    """The `nameserver` addresses of resolv.conf, in order ([] when none or unreadable)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return []
    servers = []
    for line in lines:
        if line[:1] in ("#", ";"):
            continue
        tokens = line.split()
        if len(tokens) >= 2 and tokens[0] == "nameserver":
            servers.append(tokens[1])
    return servers


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
