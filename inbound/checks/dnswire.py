"""The DNS wire format (RFC 1035, EDNS0 of RFC 6891) for our stub resolver: what we send
and how an answer is read.

`query_wire()` builds a query (RD set, one question, an OPT record advertising
EDNS_PAYLOAD); `Message(wire)` reads a response's header, question and answer section;
`records_of()` turns the answer section into `Record`s grouped as dnspython groups them
into RRsets (same owner, class and type merged in order of first appearance, duplicates
dropped, a later CNAME/DNAME/SOA replacing an earlier one).  `labels_of()` reads a name as
`dns.name.from_text` does: presentation escapes (`\\.`, `\\DDD`), ASCII labels as they
are, a label with other characters IDNA 2003 (`encodings.idna`, imported only then) with
the ideographic full stops as dots; a label over 63 octets or a name over 255 is a
ValueError.  Answer names are decompressed with dnspython's rules: pointers strictly
backwards, at most 16 hops, compression in rdata only for the types RFC 3597 lets use it.

Record values are those the dnspython-based resolver gave for what the checks ask:
A/AAAA the address text, MX `(preference, exchange)`, CNAME/PTR/NS/DNAME the target
(lower case, no final dot), TXT/SPF the tuple of character-strings; any other type (it
can only come as noise in an answer) RFC 3597's generic `\\# LEN HEX`.

Pure functions of bytes and text: no sockets, no time; resolver.py does the asking.
"""

from __future__ import annotations

import _socket as socket  # the C module (socket.py costs ~4 ms to import): socket(), inet_*
import struct

TYPE_CHECKING = False  # `typing` is not imported at run time
if TYPE_CHECKING:
    from typing import Any

#: EDNS0 UDP payload we advertise (the 2020 "DNS flag day" value).
EDNS_PAYLOAD = 1232
_MAX_POINTER_HOPS = 16  # dnspython's MAX_COMPRESSION_POINTER_CHAIN
TC, QR = 0x0200, 0x8000  # header flags: truncated, a response
NOERROR, NXDOMAIN = 0, 3


class Record:
    """One resource record of an answer section.

    `name` is lower case without the final dot ("" for the root).  `value` depends on
    `rdtype` (see the module docstring).  Compared by value, usable as a dict key.
    """

    __slots__ = ("name", "rdtype", "value")

    def __init__(self, name: str, rdtype: str, value: object) -> None:
        self.name = name
        self.rdtype = rdtype
        self.value: Any = value

    def _key(self) -> tuple[str, str, object]:
        return (self.name, self.rdtype, self.value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Record) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Record(name={self.name!r}, rdtype={self.rdtype!r}, value={self.value!r})"


# -- record types -------------------------------------------------------------------
# dnspython 2.9's RdataType mnemonics (to_text turns "_" into "-").
_TYPES = {
    "A": 1, "NS": 2, "MD": 3, "MF": 4, "CNAME": 5, "SOA": 6, "MB": 7, "MG": 8, "MR": 9,
    "NULL": 10, "WKS": 11, "PTR": 12, "HINFO": 13, "MINFO": 14, "MX": 15, "TXT": 16,
    "RP": 17, "AFSDB": 18, "X25": 19, "ISDN": 20, "RT": 21, "NSAP": 22, "NSAP-PTR": 23,
    "SIG": 24, "KEY": 25, "PX": 26, "GPOS": 27, "AAAA": 28, "LOC": 29, "NXT": 30,
    "SRV": 33, "NAPTR": 35, "KX": 36, "CERT": 37, "A6": 38, "DNAME": 39, "OPT": 41,
    "APL": 42, "DS": 43, "SSHFP": 44, "IPSECKEY": 45, "RRSIG": 46, "NSEC": 47,
    "DNSKEY": 48, "DHCID": 49, "NSEC3": 50, "NSEC3PARAM": 51, "TLSA": 52, "SMIMEA": 53,
    "HIP": 55, "NINFO": 56, "CDS": 59, "CDNSKEY": 60, "OPENPGPKEY": 61, "CSYNC": 62,
    "ZONEMD": 63, "SVCB": 64, "HTTPS": 65, "DSYNC": 66, "HHIT": 67, "BRID": 68,
    "SPF": 99, "UNSPEC": 103, "NID": 104, "L32": 105, "L64": 106, "LP": 107,
    "EUI48": 108, "EUI64": 109, "NXNAME": 128, "TKEY": 249, "TSIG": 250, "IXFR": 251,
    "AXFR": 252, "MAILB": 253, "MAILA": 254, "ANY": 255, "URI": 256, "CAA": 257,
    "AVC": 258, "AMTRELAY": 260, "RESINFO": 261, "WALLET": 262, "TA": 32768, "DLV": 32769,
}  # fmt: skip
_TYPE_NAMES = {v: k for k, v in _TYPES.items()}
_SINGLETONS = {5, 6, 30, 39, 47}  # CNAME SOA NXT DNAME NSEC: a later rdata replaces
# Types whose rdata names may be compressed (RFC 3597 section 4 and dnspython's policy).
_COMPRESSIBLE = {2, 3, 4, 5, 6, 7, 8, 9, 12, 14, 15, 17, 18, 21, 24, 26, 30, 33, 35}
IN = 1
RCODES = {1: "FORMERR", 2: "SERVFAIL", 4: "NOTIMP", 5: "REFUSED", 6: "YXDOMAIN",
           7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE", 16: "BADVERS"}  # fmt: skip


def type_code(rdtype: str) -> int:
    """RDTYPE's number, as `dns.rdatatype.from_text` reads it (mnemonic or TYPEnnn)."""
    text = str(rdtype).upper()
    code = _TYPES.get(text.replace("_", "-"))
    if code is not None:
        return code
    if text.startswith("TYPE") and text[4:].isascii() and text[4:].isdigit():
        value = int(text[4:])
        if value <= 65535:
            return value
    raise ValueError(f"unknown DNS record type {rdtype!r}")


def type_text(code: int) -> str:
    return _TYPE_NAMES.get(code) or f"TYPE{code}"


# -- names --------------------------------------------------------------------------
_DOTS = (".", "\u3002", "\uff0e", "\uff61")


def labels_of(text: str) -> tuple[bytes, ...]:
    """TEXT (presentation format) as labels without the root, like dns.name.from_text
    with dnspython's default codec when the `idna` package is absent (IDNA 2003)."""
    if not text.isascii():
        return _unicode_labels(text)
    labels: list[bytes] = []
    label = bytearray()
    data = text.encode("ascii")
    if data in (b".", b"@"):  # "@" is dnspython's empty relative name: the root here
        return ()
    i, n = 0, len(data)
    while i < n:
        c = data[i]
        if c == 0x5C:  # backslash
            if i + 1 >= n:
                raise ValueError("bad escape")
            d = data[i + 1]
            if 0x30 <= d <= 0x39:
                digits = data[i + 1 : i + 4]
                if len(digits) != 3 or not digits.isdigit() or int(digits) > 255:
                    raise ValueError("bad escape")
                label.append(int(digits))
                i += 4
            else:
                label.append(d)
                i += 2
            continue
        if c == 0x2E:  # dot
            if not label:
                raise ValueError("empty label")
            labels.append(bytes(label))
            label = bytearray()
        else:
            label.append(c)
        i += 1
    if label:
        labels.append(bytes(label))
    return _checked(labels)


def _unicode_labels(text: str) -> tuple[bytes, ...]:
    import encodings.idna  # only for non-ASCII input (stringprep, unicodedata)

    if text in _DOTS or text == "@":
        return ()
    labels: list[bytes] = []
    label = ""
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "\\":
            if i + 1 >= n:
                raise ValueError("bad escape")
            d = text[i + 1]
            if d in "0123456789":
                digits = text[i + 1 : i + 4]
                if len(digits) != 3 or not all(x in "0123456789" for x in digits) or int(digits) > 255:
                    raise ValueError("bad escape")
                label += chr(int(digits))
                i += 4
            else:
                label += d
                i += 2
            continue
        if c in _DOTS:
            if not label:
                raise ValueError("empty label")
            labels.append(encodings.idna.ToASCII(label))
            label = ""
        else:
            label += c
        i += 1
    if label:
        labels.append(encodings.idna.ToASCII(label))
    return _checked(labels)


def _checked(labels: list[bytes]) -> tuple[bytes, ...]:
    total = 1
    for label in labels:
        if len(label) > 63:
            raise ValueError("label longer than 63 octets")
        total += len(label) + 1
    if total > 255:
        raise ValueError("name longer than 255 octets")
    return tuple(labels)


def plain(labels: tuple[bytes, ...]) -> str:
    """LABELS as plain lower-case text: joined by dots, no escapes, no final dot."""
    return b".".join(labels).decode("utf-8", "replace").lower()


# -- wire format --------------------------------------------------------------------
class FormError(Exception):
    """The message does not parse."""


def query_wire(qid: int, labels: tuple[bytes, ...], qtype: int) -> bytes:
    """A query for LABELS/QTYPE (class IN) with id QID."""
    qname = b"".join(bytes((len(label),)) + label for label in labels) + b"\x00"
    return (
        struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 1)  # RD; one question, one OPT
        + qname
        + struct.pack("!HH", qtype, IN)
        + b"\x00"
        + struct.pack("!HHIH", 41, EDNS_PAYLOAD, 0, 0)
    )


def _name(wire: bytes, offset: int, end: int, compress: bool = True) -> tuple[tuple[bytes, ...], int]:
    """The name at OFFSET (not past END) and the offset after it (dnspython's rules)."""
    labels: list[bytes] = []
    total = 1
    after = -1
    biggest = offset  # pointers must go strictly backwards from the name's start
    limit = end
    hops = 0
    while True:
        if offset >= limit:
            raise FormError("name runs past the data")
        count = wire[offset]
        if count == 0:
            offset += 1
            break
        if count < 64:
            if offset + 1 + count > limit:
                raise FormError("label runs past the data")
            labels.append(wire[offset + 1 : offset + 1 + count])
            total += count + 1
            if total > 255:
                raise FormError("name longer than 255 octets")
            offset += 1 + count
        elif count >= 192:
            if not compress:
                raise FormError("compression not allowed here")
            if offset + 2 > limit:
                raise FormError("pointer runs past the data")
            target = ((count & 0x3F) << 8) | wire[offset + 1]
            if target >= biggest:
                raise FormError("compression pointer not backwards")
            hops += 1
            if hops > _MAX_POINTER_HOPS:
                raise FormError("compression pointer chain too long")
            if after < 0:
                after = offset + 2
            limit = biggest  # the target must not overlap what was read already
            biggest = target
            offset = target
        else:
            raise FormError("bad label type")
    return tuple(labels), (after if after >= 0 else offset)


def _rcode(flags: int, opt_ttl: int | None) -> int:
    return (flags & 0xF) | ((((opt_ttl or 0) >> 24) & 0xFF) << 4)


class Message:
    """A DNS message as read: id, flags, rcode (EDNS-extended), the question, and the
    answer section as (owner labels, type, class, rdata offset, rdata length).  With
    HEADER_ONLY the records are not read (enough to match a truncated answer to us)."""

    __slots__ = ("id", "flags", "rcode", "question", "answer")

    def __init__(self, wire: bytes, header_only: bool = False) -> None:
        if len(wire) < 12:
            raise FormError("short header")
        self.id, self.flags, qd, an, ns, ar = struct.unpack_from("!HHHHHH", wire)
        self.question: list[tuple[tuple[bytes, ...], int, int]] = []
        self.answer: list[tuple[tuple[bytes, ...], int, int, int, int]] = []
        self.rcode = self.flags & 0xF
        end = len(wire)
        offset = 12
        for _ in range(qd):
            labels, offset = _name(wire, offset, end)
            if offset + 4 > end:
                raise FormError("short question")
            qtype, qclass = struct.unpack_from("!HH", wire, offset)
            offset += 4
            self.question.append((tuple(x.lower() for x in labels), qtype, qclass))
        if header_only:
            return
        opt_ttl = None
        for section, count in ((1, an), (2, ns), (3, ar)):
            for _ in range(count):
                labels, offset = _name(wire, offset, end)
                if offset + 10 > end:
                    raise FormError("short record")
                rtype, rclass, ttl, rdlen = struct.unpack_from("!HHIH", wire, offset)
                offset += 10
                if offset + rdlen > end:
                    raise FormError("record data runs past the message")
                if rtype == 41:
                    if section != 3 or labels or opt_ttl is not None:
                        raise FormError("misplaced OPT")
                    opt_ttl = ttl
                elif section == 1:
                    self.answer.append((labels, rtype, rclass, offset, rdlen))
                offset += rdlen
        if offset != end:
            raise FormError("trailing junk")
        self.rcode = _rcode(self.flags, opt_ttl)


def _rdata(wire: bytes, rtype: int, rclass: int, start: int, rdlen: int) -> tuple[object, object]:
    """(value, identity) of one record's data; identity is what duplicates share."""
    end = start + rdlen
    data = wire[start:end]
    compress = rtype in _COMPRESSIBLE
    if rtype == 1 and rclass == IN:
        if rdlen != 4:
            raise FormError("bad A")
        value = socket.inet_ntop(socket.AF_INET, data)
        return value, value
    if rtype == 28 and rclass == IN:
        if rdlen != 16:
            raise FormError("bad AAAA")
        value = socket.inet_ntop(socket.AF_INET6, data)
        return value, value
    if rtype in (16, 99):  # TXT, SPF
        strings = []
        offset = start
        while offset < end:
            size = wire[offset]
            if offset + 1 + size > end:
                raise FormError("character-string runs past the data")
            strings.append(wire[offset + 1 : offset + 1 + size])
            offset += 1 + size
        if not strings:
            raise FormError("TXT without a character-string")
        return tuple(strings), tuple(strings)
    if rtype == 15:  # MX
        if rdlen < 3:
            raise FormError("bad MX")
        (preference,) = struct.unpack_from("!H", wire, start)
        labels, offset = _name(wire, start + 2, end, compress)
        if offset != end:
            raise FormError("junk after MX")
        return (preference, plain(labels)), (preference, tuple(x.lower() for x in labels))
    if rtype in (2, 5, 12, 39):  # NS CNAME PTR DNAME
        labels, offset = _name(wire, start, end, compress)
        if offset != end:
            raise FormError("junk after name")
        return plain(labels), tuple(x.lower() for x in labels)
    # Anything else (the checks ask for none of it): RFC 3597's generic text.
    return f"\\# {rdlen} {data.hex()}", data


def records_of(wire: bytes, message: Message) -> list[Record]:
    """The answer section grouped into RRsets as dnspython does, then flattened."""
    rrsets: dict[tuple, tuple[str, str, list, list]] = {}
    for labels, rtype, rclass, start, rdlen in message.answer:
        value, identity = _rdata(wire, rtype, rclass, start, rdlen)
        covers = struct.unpack_from("!H", wire, start)[0] if rtype in (24, 46) and rdlen >= 2 else 0
        key = (tuple(x.lower() for x in labels), rclass, rtype, covers)
        rrset = rrsets.get(key)
        if rrset is None:
            rrset = rrsets[key] = (plain(labels), type_text(rtype), [], [])
        _owner, _type, values, identities = rrset
        if rtype in _SINGLETONS:
            values.clear()
            identities.clear()
        if identity not in identities:
            identities.append(identity)
            values.append(value)
    return [Record(owner, rtype, value) for owner, rtype, values, _ in rrsets.values() for value in values]
