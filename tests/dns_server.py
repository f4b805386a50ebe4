"""A real DNS server for tests: 127.0.0.1, a free port, UDP and TCP, in daemon threads.

It serves zones given as Python data in the format of the OpenSPF test suite's
`zonedata` (so a suite scenario is served as it is written):

    {
        "example.com": [
            {"A": "192.0.2.1"},
            {"AAAA": "2001:db8::1"},
            {"MX": [10, "mx.example.com"]},
            {"TXT": "v=spf1 -all"},            # one character-string (split at 255 octets)
            {"TXT": ["v=spf1 ", "-all"]},      # several character-strings in one record
            {"PTR": "host.example.com"},
            {"CNAME": "other.example.com"},
        ],
        "slow.example.com": ["TIMEOUT"],        # queries of a type not listed get no reply
        "broken.example.com": ["SERVFAIL"],     # queries of a type not listed get SERVFAIL
    }

As in the suite, an `SPF` record is served as type SPF (99) and also as TXT unless the
name lists TXT records of its own; `TXT: NONE` lists none (it only stops that copy).
Names are case-insensitive; an owner with a CNAME answers every other type with the
chain (a loop is answered once round, as authoritative servers do); a name that exists
only as a parent of others answers NOERROR with no data; any other name NXDOMAIN.

A UDP answer larger than the client's EDNS0 size (512 without EDNS0) is sent truncated
(TC set, question only) so the client asks again over TCP.  Every query is logged in
`queries` as (name, type, "udp"|"tcp").

This is test scaffolding: no recursion, no authority section, no DNSSEC, no zone files.
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
import time
from typing import Any

from dnslib import AAAA, CNAME, MX, PTR, QTYPE, RCODE, RR, TXT, A, DNSRecord

Zone = dict[str, list[Any]]

_RDATA = {"A": A, "AAAA": AAAA, "PTR": PTR, "CNAME": CNAME, "NS": CNAME}


def _strings(value: Any) -> list[bytes]:
    """A TXT/SPF value as character-strings of at most 255 octets."""
    parts = value if isinstance(value, list) else [value]
    out: list[bytes] = []
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode("utf-8")
        out.extend([data[i : i + 255] for i in range(0, len(data), 255)] or [b""])
    # A TXT record has at least one character-string (RFC 1035 3.3.14): `[]` serves "".
    return out or [b""]


class _Name:
    """What one owner name holds: records by type, and its failure mode if any."""

    def __init__(self) -> None:
        self.records: list[tuple[str, Any]] = []
        self.failure: str | None = None  # "TIMEOUT" or "SERVFAIL"


def compile_zone(zone: Zone) -> dict[str, _Name]:
    """The zone data as served: lower-case names, SPF copied to TXT, NONE dropped."""
    names: dict[str, _Name] = {}
    for owner, entries in zone.items():
        node = names.setdefault(owner.lower().rstrip("."), _Name())
        has_txt = any(isinstance(e, dict) and "TXT" in e for e in entries)
        for entry in entries:
            if isinstance(entry, str):
                if entry.upper() not in ("TIMEOUT", "SERVFAIL"):
                    raise ValueError(f"{owner}: unknown entry {entry!r}")
                node.failure = entry.upper()
                continue
            for rtype, value in entry.items():
                rtype = rtype.upper()
                if value == "NONE":
                    continue
                node.records.append((rtype, value))
                if rtype == "SPF" and not has_txt:
                    node.records.append(("TXT", value))
    return names


def _rr(owner: str, rtype: str, value: Any) -> RR:
    if rtype in ("TXT", "SPF"):
        return RR(owner, QTYPE.reverse[rtype], rdata=TXT(_strings(value)), ttl=60)
    if rtype == "MX":
        if isinstance(value, str):
            pref, _, exchange = value.partition(" ")
            value = [int(pref), exchange]
        return RR(owner, QTYPE.MX, rdata=MX(value[1] or ".", int(value[0])), ttl=60)
    if rtype in _RDATA:
        return RR(owner, QTYPE.reverse[rtype], rdata=_RDATA[rtype](value), ttl=60)
    raise ValueError(f"record type {rtype} is not supported by the test DNS server")


class DNSTestServer:
    """The server; `serve(zone)` replaces what it answers.  See the module docstring."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self._names: dict[str, _Name] = {}
        self._lock = threading.Lock()
        self.queries: list[tuple[str, str, str]] = []
        self._udp, self._tcp = self._bind()
        self.port: int = self._udp.server_address[1]
        self._threads = [
            threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            for server in (self._udp, self._tcp)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def serve(self, zone: Zone) -> None:
        """Serve ZONE (and nothing else) from now on; forget the query log.

        Queries already sent are answered and logged first (a resolver's send-ahead from
        an earlier test can still be in our socket): a sentinel query goes through."""
        names = compile_zone(zone)
        self._flush()
        with self._lock:
            self._names = names
            self.queries = []

    def _flush(self, timeout: float = 2.0) -> None:
        """Wait until a query sent now has been logged: every datagram before it was read."""
        name = f"flush-{time.monotonic_ns()}.invalid"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.sendto(DNSRecord.question(name, "A").pack(), self.address)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                with self._lock:
                    if any(query[0] == name for query in self.queries):
                        return
                time.sleep(0.001)

    def close(self) -> None:
        for server in (self._udp, self._tcp):
            server.shutdown()
            server.server_close()

    # -- answering ------------------------------------------------------------------
    def answer(self, request: DNSRecord, proto: str) -> DNSRecord | None:
        """The reply to REQUEST, or None to stay silent (TIMEOUT)."""
        reply = request.reply()
        reply.header.ra = 0
        if not request.questions:
            reply.header.rcode = RCODE.FORMERR
            return reply
        question = request.q
        asked = question.qname  # kept as labels: names may hold spaces and other odd octets
        name = b".".join(asked.label).decode("utf-8", "replace").lower()
        qtype = QTYPE.get(question.qtype)
        with self._lock:
            names = self._names
            self.queries.append((name, str(qtype), proto))
        node = names.get(name)
        if node is None:
            suffix = "." + name
            if not any(other.endswith(suffix) for other in names):
                reply.header.rcode = RCODE.NXDOMAIN
            return reply
        wanted = [(t, v) for t, v in node.records if t == qtype]
        if not wanted and node.failure == "TIMEOUT":
            return None
        if not wanted and node.failure == "SERVFAIL":
            reply.header.rcode = RCODE.SERVFAIL
            return reply
        if wanted:
            for rtype, value in wanted:
                reply.add_answer(_rr(asked, rtype, value))
            return reply
        # Follow a CNAME chain inside our data, once round a loop.
        owner: Any = asked
        seen: set[str] = set()
        while qtype != "CNAME":
            key = name if owner is asked else str(owner).lower().rstrip(".")
            if key in seen or key not in names:
                break
            seen.add(key)
            here = names[key]
            found = [(t, v) for t, v in here.records if t == qtype]
            if found:
                for rtype, value in found:
                    reply.add_answer(_rr(owner, rtype, value))
                break
            cnames = [v for t, v in here.records if t == "CNAME"]
            if not cnames:
                break
            reply.add_answer(_rr(owner, "CNAME", cnames[0]))
            owner = str(cnames[0])
        return reply

    def _handle(self, data: bytes, proto: str) -> bytes | None:
        try:
            request = DNSRecord.parse(data)
        except Exception:
            return None
        reply = self.answer(request, proto)
        if reply is None:
            return None
        packed = reply.pack()
        if proto == "udp":
            limit = 512
            for extra in request.ar:
                if extra.rtype == QTYPE.OPT:
                    limit = max(512, extra.rclass)
            if len(packed) > limit:
                truncated = request.reply()
                truncated.header.tc = 1
                packed = truncated.pack()
        return packed

    def _bind(self) -> tuple[socketserver.UDPServer, socketserver.TCPServer]:
        owner = self

        class UDPHandler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                data, sock = self.request
                answer = owner._handle(data, "udp")
                if answer is not None:
                    sock.sendto(answer, self.client_address)

        class TCPHandler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                sock = self.request
                sock.settimeout(10)
                try:
                    while True:
                        head = _recv_exact(sock, 2)
                        if head is None:
                            return
                        data = _recv_exact(sock, struct.unpack("!H", head)[0])
                        if data is None:
                            return
                        answer = owner._handle(data, "tcp")
                        if answer is not None:
                            sock.sendall(struct.pack("!H", len(answer)) + answer)
                except OSError:
                    return

        class UDP(socketserver.ThreadingMixIn, socketserver.UDPServer):
            daemon_threads = True

        class TCP(socketserver.ThreadingMixIn, socketserver.TCPServer):
            daemon_threads = True
            allow_reuse_address = True

        for _ in range(50):
            udp = UDP((self.host, 0), UDPHandler)
            try:
                tcp = TCP((self.host, udp.server_address[1]), TCPHandler)
            except OSError:
                udp.server_close()
                continue
            return udp, tcp
        raise OSError("no free port for both UDP and TCP")


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            return None
        data += chunk
    return data
