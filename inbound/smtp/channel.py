"""The connection: bytes in and out of the client, every read bounded by a deadline.

A Channel reads from one file descriptor and writes to another (stdin/stdout in inetd
mode, pipes in tests).  Reads never block past the caller's wall-clock deadline, so a
client dripping one byte a second cannot hold the process beyond its timeout.  TLSChannel
(STARTTLS) swaps the file descriptors for an SSL socket wrapped around stdin.

The channel knows nothing of SMTP beyond "a line ends in LF".
"""

from __future__ import annotations

import os
import select
import time


class Timeout(Exception):
    """The deadline passed before the data arrived."""


class Closed(Exception):
    """The client went away."""


class Channel:
    READ_SIZE = 65536

    WRITE_CHUNK = 4096  # poll() says POLLOUT with at least this much room (pipe) or more (socket)

    def __init__(self, rfd: int = 0, wfd: int = 1, write_timeout: float = 300.0) -> None:
        self.rfd, self.wfd = rfd, wfd
        self.write_timeout = write_timeout  # a client that never reads must not hold us either
        self.buffer = bytearray()
        self.tls_version: str | None = None
        self.tls_cipher: str | None = None

    # -- reading -------------------------------------------------------------
    def _fill(self, deadline: float) -> bool:
        """Read more into the buffer; False at end of input."""
        data = self._recv(deadline)
        if not data:
            return False
        self.buffer += data
        return True

    def _recv(self, deadline: float) -> bytes:
        poller = select.poll()
        poller.register(self.rfd, select.POLLIN | select.POLLPRI)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout
            try:
                if poller.poll(left * 1000 + 1):
                    return os.read(self.rfd, self.READ_SIZE)
            except OSError:  # reset, timed out, unreachable: the client is gone
                return b""

    def read_line(self, limit: int, deadline: float) -> bytes:
        """The next line with its LF; or `limit` bytes without LF when the line is longer
        (the caller reads the rest with further calls); b"" at end of input."""
        start = 0
        while True:
            found = self.buffer.find(b"\n", start, limit)
            if found >= 0:
                line = bytes(self.buffer[: found + 1])
                del self.buffer[: found + 1]
                return line
            if len(self.buffer) >= limit:
                line = bytes(self.buffer[:limit])
                del self.buffer[:limit]
                return line
            start = len(self.buffer)
            if not self._fill(deadline):
                line = bytes(self.buffer)
                self.buffer.clear()
                return line

    def read_exact(self, size: int, deadline: float) -> bytes:
        """Up to `size` bytes from the stream (fewer only at end of input); use in chunks."""
        while len(self.buffer) < size:
            if not self._fill(deadline):
                break
        data = bytes(self.buffer[:size])
        del self.buffer[:size]
        return data

    def read_available(self, deadline: float) -> bytes:
        """Whatever is buffered, else the next read; b"" at end of input."""
        if not self.buffer and not self._fill(deadline):
            return b""
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    def unread(self, data: bytes) -> None:
        """Give back bytes read past what the caller needed (pipelined commands after DATA)."""
        self.buffer[:0] = data

    def discard_pending_input(self) -> int:
        n = len(self.buffer)
        self.buffer.clear()
        return n

    # -- writing -------------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Write all of DATA within write_timeout (Timeout), or raise Closed."""
        deadline = time.monotonic() + self.write_timeout
        poller = select.poll()
        poller.register(self.wfd, select.POLLOUT)
        view = memoryview(data)
        while view:
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout
            try:
                if not poller.poll(left * 1000 + 1):
                    continue
                n = os.write(self.wfd, view[: self.WRITE_CHUNK])
            except OSError:
                raise Closed from None
            view = view[n:]

    def close(self) -> None:
        for fd in {self.rfd, self.wfd}:
            try:
                os.close(fd)
            except OSError:
                pass

    def is_socket(self) -> bool:
        import stat

        try:
            return stat.S_ISSOCK(os.fstat(self.rfd).st_mode)
        except OSError:
            return False
