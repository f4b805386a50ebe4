"""Message data off the wire: DATA's dot-terminated stream and BDAT's counted chunks.

`read_dot_data()` streams DATA to a callback in bulk until CRLF.CRLF, undoing
dot-stuffing exactly; `read_chunk()`/`skip_chunk()` read a BDAT chunk of a known size.
`ContentCheck` watches the bytes go by and remembers the first reason to refuse them
(a reply name): bare CR or bare LF (SMTP smuggling), NUL, lines over 1000 octets.

Only CRLF.CRLF ends DATA (RFC 5321 4.1.1.4): a '.' line after a bare LF or CR is data, so
a smuggled end is swallowed into the message, which the content check then refuses.
This module neither replies nor writes to the spool: its callers do.
"""

from __future__ import annotations

from .channel import Channel, Closed

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

TEXT_LINE_LIMIT = 1000  # RFC 5321 4.5.3.1.6, CRLF included
READ_CHUNK = 65536


class ContentCheck:
    """Streams message bytes and remembers the first reason to refuse them (a reply name)."""

    def __init__(self) -> None:
        self.problem: str | None = None
        self.line_length = 0  # octets since the last LF
        self.last_was_cr = False

    def feed(self, data: bytes) -> None:
        if self.problem or not data:
            return
        if b"\0" in data:
            self.problem = "nul_in_data"
            return
        lf, cr, crlf = data.count(b"\n"), data.count(b"\r"), data.count(b"\r\n")
        joined = self.last_was_cr and data[:1] == b"\n"  # CR|LF split between feeds
        if lf - crlf - joined > 0:
            self.problem = "bare_lf"
            return
        if self.last_was_cr and not joined:
            self.problem = "bare_cr"
            return
        trailing_cr = data.endswith(b"\r")
        if cr - crlf - trailing_cr > 0:
            self.problem = "bare_cr"
            return
        self.last_was_cr = trailing_cr
        first = data.find(b"\n")
        if first < 0:
            self.line_length += len(data)
        else:
            inner = data[first + 1 :].split(b"\n")[:-1]
            longest = max(self.line_length + first + 1, *(len(p) + 1 for p in inner), 0)
            self.line_length = len(data) - data.rfind(b"\n") - 1
            if longest > TEXT_LINE_LIMIT:
                self.problem = "text_line_too_long"
                return
        if self.line_length > TEXT_LINE_LIMIT:
            self.problem = "text_line_too_long"

    def finish(self) -> None:
        if not self.problem and (self.last_was_cr or self.line_length):
            self.problem = "bare_cr" if self.last_was_cr else "bare_lf"


def read_dot_data(channel: Channel, deadline: float, take: Callable[[bytes], None]) -> None:
    """Hand DATA to TAKE in bulk, dot-unstuffed, up to (not including) the final CRLF.CRLF;
    bytes read past it (pipelined commands) go back to the channel.  Closed at end of input.

    The DATA line itself counts as the CRLF before a leading '.'.
    """
    # Invariant: data[:2] is context already taken (at first the CRLF ending the DATA
    # command), so a CRLF.CRLF or CRLF. spanning two reads is seen whole; replace()
    # never changes those two context octets.
    pending = b"\r\n"
    while True:
        chunk = channel.read_available(deadline)
        if not chunk:
            raise Closed
        data = pending + chunk
        end = data.find(b"\r\n.\r\n")
        if end >= 0:
            channel.unread(data[end + 5 :])
            take(data[: end + 2].replace(b"\r\n.", b"\r\n")[2:])
            return
        cut = len(data) - 4  # an end marker not found may start in the last 4 octets
        if cut > 2:
            take(data[:cut].replace(b"\r\n.", b"\r\n")[2:])
            pending = data[cut - 2 :]
        else:
            pending = data


def read_chunk(channel: Channel, size: int, deadline: float, take: Callable[[bytes], None]) -> None:
    """Hand exactly SIZE octets of a BDAT chunk to TAKE, in pieces; Closed if they never come."""
    while size > 0:
        piece = channel.read_exact(min(size, READ_CHUNK), deadline)
        if not piece:
            raise Closed
        size -= len(piece)
        take(piece)


def skip_chunk(channel: Channel, size: int, deadline: float) -> None:
    """Read a BDAT chunk we refuse, so that its bytes are never taken for commands."""
    read_chunk(channel, size, deadline, lambda piece: None)
