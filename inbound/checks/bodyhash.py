"""DKIM and ARC body hashes from a file, in one pass and bounded memory (RFC 6376 3.4.3,
3.4.4, 3.7).

`read_header_block(f)` reads the header block (up to HEADER_CAP octets; the rest of a
larger one is not read); `hash_body(chunks, keys)` then canonicalizes the body as it
streams past in CHUNK_SIZE pieces and feeds every hash the signatures need: one key is
(body canonicalization b"simple"/b"relaxed", hash constructor, l= or None).  It returns
the digests and the whole canonicalized body's length for each canonicalization, which
is what an `l=` is compared with.

The canonicalization is dkimpy's, quirks included, so a digest here equals the one
dkimpy computes over the whole message in memory: bare LF and CRLF both become CRLF (as
`dkim.rfc822_parse` splits lines) while a bare CR stays; relaxed compresses WSP runs and
drops WSP before a line end; trailing empty lines are dropped and one CRLF ends the
body, except that an empty body is CRLF for simple and nothing for relaxed.  Only two
things are carried between chunks, both bounded: a pending WSP run and the count of
CRLFs the stream currently ends with.

No dkimpy here (the caller supplies the hash constructors), no DNS, no results.
"""

from __future__ import annotations

import re

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from typing import IO, Any

CHUNK_SIZE = 64 * 1024
#: The most of a header block the checks read (as bounded.MAX_HEADER_BYTES for handlers).
HEADER_CAP = 256 * 1024
_HEAD_PIECE = 16 * 1024

#: (body canonicalization name, hash constructor, l= or None)
BodyKey = tuple[bytes, "Callable[[], Any]", "int | None"]

# The first empty line as dkim.rfc822_parse sees it (lines split on \r?\n).
_HEADER_END = re.compile(rb"(?:\A|\n)\r?\n")
_WSP_BEFORE_CRLF = re.compile(rb"[\t ]+\r\n")
_WSP_RUN = re.compile(rb"[\t ]+")


def read_header_block(f: IO[bytes], cap: int = HEADER_CAP) -> tuple[bytes, bool]:
    """(the header block up to and including the empty line after it, complete?).  F is
    left just after it.  Incomplete means no end of the header block within CAP octets."""
    start = f.tell()
    head = b""
    while len(head) < cap:
        piece = f.read(min(_HEAD_PIECE, cap - len(head)))
        if not piece:
            return head, True  # no body at all: everything is header
        searched = max(0, len(head) - 2)  # an end may straddle the pieces
        head += piece
        match = _HEADER_END.search(head, searched)
        if match:
            f.seek(start + match.end())
            return head[: match.end()], True
    return head, not f.read(1)


def chunks(f: IO[bytes], size: int | None = None) -> Iterator[bytes]:
    """The rest of F in pieces of SIZE (default CHUNK_SIZE) octets."""
    while chunk := f.read(size or CHUNK_SIZE):
        yield chunk


class _LineEnds:
    """Incremental `re.sub(rb"\\r?\\n", b"\\r\\n", body)`: a CR at the end of a chunk waits
    for the next chunk to say whether an LF follows."""

    def __init__(self) -> None:
        self._cr = b""

    def feed(self, data: bytes, final: bool = False) -> bytes:
        data, self._cr = self._cr + data, b""
        if not final and data.endswith(b"\r"):
            data, self._cr = data[:-1], b"\r"
        return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class _Canonicalizer:
    """Incremental body canonicalization (simple or relaxed) of CRLF-normalized data."""

    def __init__(self, relaxed: bool) -> None:
        self.relaxed = relaxed
        self._wsp = False  # relaxed: the data so far ended inside a WSP run
        self._crlfs = 0  # trailing CRLFs held back (empty lines, if the body ends here)
        self._emitted = False

    def feed(self, data: bytes) -> list[bytes]:
        if self.relaxed:
            if self._wsp:  # the pending run is either dropped or becomes one space
                data = b" " + data
            stripped = data.rstrip(b" \t")
            self._wsp = len(stripped) != len(data)
            data = _WSP_RUN.sub(b" ", _WSP_BEFORE_CRLF.sub(b"\r\n", stripped))
        return self._hold_trailing_crlfs(data)

    def finish(self) -> list[bytes]:
        out = self._hold_trailing_crlfs(b" ") if self._wsp else []
        self._wsp = False
        if self.relaxed and not self._emitted:
            return out  # an empty body is empty for relaxed
        return [*out, b"\r\n"]

    def _hold_trailing_crlfs(self, data: bytes) -> list[bytes]:
        if not data:
            return []
        head = data.rstrip(b"\r\n")
        tail = data[len(head) :]  # CRLFs and bare CRs only (no bare LF is left)
        cut = len(tail) if tail.endswith(b"\r") else tail.rfind(b"\r\r") + 1
        pairs = (len(tail) - cut) // 2
        if not head and cut == 0:
            self._crlfs += pairs
            return []
        out = []
        while self._crlfs:  # the held CRLFs were not the end after all
            n = min(self._crlfs, 32768)
            out.append(b"\r\n" * n)
            self._crlfs -= n
        out.append(data[: len(head) + cut])
        self._crlfs = pairs
        self._emitted = True
        return out


class _Limited:
    """A hash fed at most LIMIT octets (None: all)."""

    def __init__(self, constructor: Callable[[], Any], limit: int | None) -> None:
        self.hash = constructor()
        self.left = limit

    def update(self, data: bytes) -> None:
        if self.left is None:
            self.hash.update(data)
        elif self.left > 0:
            self.hash.update(data[: self.left])
            self.left -= min(self.left, len(data))


def hash_body(
    body: Iterable[bytes], keys: Iterable[BodyKey]
) -> tuple[dict[BodyKey, bytes], dict[bytes, int]]:
    """The digest of the canonicalized BODY for each key, and the canonicalized length for
    each canonicalization used, in one pass over BODY (raw body bytes, chunks of any size)."""
    keyset = set(keys)
    canons = {name: _Canonicalizer(relaxed=name == b"relaxed") for name, _, _ in keyset}
    hashes = {key: _Limited(key[1], key[2]) for key in keyset}
    targets = {name: [h for key, h in hashes.items() if key[0] == name] for name in canons}
    lengths = dict.fromkeys(canons, 0)

    def push(name: bytes, pieces: list[bytes]) -> None:
        for piece in pieces:
            lengths[name] += len(piece)
            for h in targets[name]:
                h.update(piece)

    ends = _LineEnds()
    for chunk in body:
        data = ends.feed(chunk)
        for name, canon in canons.items():
            push(name, canon.feed(data))
    data = ends.feed(b"", final=True)
    for name, canon in canons.items():
        push(name, canon.feed(data) + canon.finish())
    return {key: h.hash.digest() for key, h in hashes.items()}, lengths


def canonical_body(body: Iterable[bytes], relaxed: bool) -> bytes:
    """The whole canonicalized body (for tests: what the streaming pass hashes)."""
    ends, canon, out = _LineEnds(), _Canonicalizer(relaxed), []
    for chunk in body:
        out += canon.feed(ends.feed(chunk))
    out += canon.feed(ends.feed(b"", final=True)) + canon.finish()
    return b"".join(out)
