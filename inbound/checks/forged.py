"""Forged Authentication-Results removed from a spooled message, before anything reads it.

RFC 8601 section 5: fields bearing our authserv-id that arrived with the message are
forgeries (or stale); they go, whether or not any check runs.  The file is never read
whole: its header block is scanned line by line for Authentication-Results fields (only
those are held in memory, each up to just over authres.MAX_FIELD octets: a longer one
counts as ours), and only when one of them is ours is the file rewritten, streaming,
without those byte ranges, to a temporary file that is fsync'ed and renamed over it.  The common
message has no Authentication-Results at all and costs a scan of its header block; the
parser (authres.py) is imported only when there is a field to look at.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO

#: How much of one Authentication-Results field is kept (authres.MAX_FIELD + 1: enough
#: to know it is longer).
FIELD_CAP = 64 * 1024 + 1
_LINE = 64 * 1024
_CHUNK = 256 * 1024
_NAME = b"authentication-results"


def remove_forged_results(path: str, authserv_id: str) -> bool:
    """Remove our-authserv-id Authentication-Results from the spooled file PATH (atomically,
    fsync'ed); True when something was removed."""
    with open(path, "rb") as f:
        spans = forged_spans(f, authserv_id)
        if not spans:
            return False
        tmp = path + ".clean"
        with open(tmp, "wb") as out:
            at = 0
            for start, end in spans:
                _copy(f, out, at, start)
                at = end
            _copy(f, out, at, None)
            out.flush()
            os.fsync(out.fileno())
    os.replace(tmp, path)
    return True


def forged_spans(f: IO[bytes], authserv_id: str) -> list[tuple[int, int]]:
    """The (start, end) offsets of the header fields of F that are Authentication-Results
    bearing AUTHSERV_ID, reading F's header block line by line from its start."""
    spans: list[tuple[int, int]] = []
    field: bytearray | None = None  # an Authentication-Results field being read
    field_start = pos = 0
    line_start = True  # the next piece read starts a line (long lines come in pieces)

    def close(end: int) -> None:
        from .authres import is_ours

        if field is not None and is_ours(bytes(field), authserv_id):
            spans.append((field_start, end))

    while line := f.readline(_LINE):
        start, pos = pos, pos + len(line)
        continues = not line_start or line[:1] in (b" ", b"\t")
        line_start = line.endswith(b"\n")
        if continues:
            if field is not None and len(field) < FIELD_CAP:
                field += line[: FIELD_CAP - len(field)]
            continue
        if field is not None:
            close(start)
            field = None
        if line in (b"\r\n", b"\n"):  # the end of the header block
            return spans
        if line[: len(_NAME)].lower() == _NAME:
            field, field_start = bytearray(line[:FIELD_CAP]), start
    close(pos)  # the file ended inside the header block
    return spans


def _copy(src: IO[bytes], dst: IO[bytes], start: int, end: int | None) -> None:
    """Copy SRC's octets START..END (None: to its end) to DST, a chunk at a time."""
    src.seek(start)
    left = None if end is None else end - start
    while left is None or left > 0:
        chunk = src.read(_CHUNK if left is None else min(_CHUNK, left))
        if not chunk:
            return
        dst.write(chunk)
        if left is not None:
            left -= len(chunk)
