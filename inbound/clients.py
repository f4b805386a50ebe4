"""Per-client memory without a daemon: what every connection process knows of a client.

Every connection is a process of its own, so what they share is a folder under the
spool, `<spool>/clients/`, with one small text file per client address: the times of
its connections in the last `[limits] rate_window` seconds (`c` line), a penalty of a
client that misbehaved (talked before the banner, ran into too many errors or unknown
recipients) with the time it ends and why (`p` line), and recent DNS blocklist answers
for the configured zones (`d` line, dnsbl.py).  A client over its rate, or under a
penalty, is answered `421 4.7.0` at connect, without a session (inetd.py asks).

Each question is one open, flock() and read of that one file (a change: and one write),
with nothing imported beyond the C modules already loaded: a connection pays well under
a millisecond for it (sqlite's import alone was ~8 ms).  Nothing is fsync'ed: a count or
a penalty lost in a crash is harmless.

The store is bounded and never stops mail: a file holds at most MAX_TIMES connection
times and is read up to MAX_FILE octets (a longer or unreadable one is started afresh,
logged); a file another process holds locked longer than BUSY_MS is skipped for this
connection (logged; a crashed holder's lock is gone with it); and files with nothing
left in force are swept by `queue --run`, and by one connection in SWEEP_ONE_IN when
the folder has grown past MAX_CLIENTS.  It is used only when `[limits]` or `dnsbl` asks
for it, so a default install pays nothing.

This module decides nothing about SMTP; it remembers and counts.
"""

from __future__ import annotations

import os
import time

from . import log

FOLDER = "clients"
BUSY_MS = 200  # a file another process holds longer than this is skipped, not waited for
MAX_FILE = 256 * 1024
MAX_TIMES = 10_000  # connection times kept per client (a rate above this never trips)
MAX_CLIENTS = 100_000
SWEEP_ONE_IN = 2_000
PENALTY_SECONDS = 600.0  # how long a client that misbehaved is answered 421 at connect
MAX_AHEAD = 3600.0  # a penalty or an answer further ahead (a clock stepped back, an edit) is void
_SAFE = frozenset("0123456789abcdefABCDEF.:")


class _Entry:
    """What one client's file says: connection times, a penalty, DNSBL answers."""

    __slots__ = ("times", "until", "why", "dnsbl_until", "dnsbl_zones", "dnsbl_listed")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.until = 0.0
        self.why = ""
        self.dnsbl_until = 0.0
        self.dnsbl_zones = ""
        self.dnsbl_listed: list[str] = []

    @classmethod
    def parse(cls, data: bytes) -> _Entry:
        """Leniently: a line that does not parse is left out (and goes at the next write)."""
        entry = cls()
        for line in data.decode("ascii", "replace").splitlines():
            kind, _, rest = line.partition(" ")
            try:
                if kind == "c":
                    entry.times = [float(t) for t in rest.split()][-MAX_TIMES:]
                elif kind == "p":
                    until, _, why = rest.partition(" ")
                    entry.until, entry.why = float(until), why
                elif kind == "d":
                    until, zones, *listed = rest.split(" ")
                    entry.dnsbl_until, entry.dnsbl_zones, entry.dnsbl_listed = float(until), zones, listed
            except ValueError:
                continue
        return entry

    def render(self, now: float) -> bytes:
        lines = []
        if self.times:
            lines.append("c " + " ".join(f"{t:.2f}" for t in self.times[-MAX_TIMES:]))
        if self.until > now:
            lines.append(f"p {self.until:.2f} {self.why}")
        if self.dnsbl_until > now:
            lines.append(" ".join(["d", f"{self.dnsbl_until:.2f}", self.dnsbl_zones, *self.dnsbl_listed]))
        return "".join(line + "\n" for line in lines).encode("ascii", "replace")


def file_name(addr: str) -> str:
    """The file of ADDR: the address itself when it looks like one (IPv6 colons as _),
    else a hash of it (REMOTE_ADDR from the environment can be anything)."""
    if 0 < len(addr) <= 45 and _SAFE.issuperset(addr) and not addr.startswith("."):
        return addr.replace(":", "_")
    from .delivery.duplicates import _sha256

    digest = _sha256()
    digest.update(addr.encode("utf-8", "replace"))
    return "h" + digest.hexdigest()[:32]


def _ours(name: str) -> bool:
    """NAME is one file_name() makes."""
    if name.startswith("h") and len(name) == 33:
        return all(c in "0123456789abcdef" for c in name[1:])
    return 0 < len(name) <= 45 and all(c in "0123456789abcdefABCDEF._" for c in name) and name[0] != "."


class ClientMemory:
    def __init__(self, spool: str, clock: object = time.time) -> None:
        self.folder = os.path.join(spool, FOLDER)
        self.path = self.folder  # what the log lines name
        self.clock = clock
        self.broken = False  # a trouble was logged (once per connection)
        self.reset_logged = False

    def now(self) -> float:
        return float(self.clock())  # type: ignore[operator]

    # -- one client's file, locked --------------------------------------------------
    def _open(self, addr: str, write: bool) -> int | None:
        """ADDR's file open and flock()ed (exclusively to WRITE); None: skip it this time."""
        import fcntl

        path = os.path.join(self.folder, file_name(addr))
        flags = os.O_RDWR | os.O_CREAT if write else os.O_RDONLY
        try:
            fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)
        except FileNotFoundError:
            if not write:
                return None  # nothing known of this client
            try:
                os.makedirs(self.folder, 0o750, exist_ok=True)
                fd = os.open(path, flags | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)
            except OSError as e:
                self._trouble(f"cannot create {path}: {e.strerror}")
                return None
        except OSError as e:
            self._trouble(f"cannot open {path}: {e.strerror}")
            return None
        deadline = time.monotonic() + BUSY_MS / 1000
        while True:
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if write else fcntl.LOCK_SH) | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                if time.monotonic() > deadline:
                    os.close(fd)
                    self._trouble(f"{path} is locked by another process: skipped for this connection")
                    return None
                time.sleep(0.005)
            except OSError as e:
                os.close(fd)
                self._trouble(f"cannot lock {path}: {e.strerror}")
                return None

    def _trouble(self, what: str) -> None:
        """Log WHAT once per connection; the question then has no answer (None)."""
        if not self.broken:  # once per connection
            log.warning("client memory: %s", what)
        self.broken = True
        return None

    def _read(self, fd: int, addr: str) -> _Entry:
        data = os.pread(fd, MAX_FILE + 1, 0)
        if len(data) > MAX_FILE or (data and not data.endswith(b"\n")) or b"\0" in data:
            if not self.reset_logged:
                log.warning("client memory: the file of %s is corrupt or too large: starting it afresh", addr)
                self.reset_logged = True
            return _Entry()
        entry = _Entry.parse(data)
        now = self.now()  # nothing from the future: a clock stepped back, or a hand edit
        entry.times = [t for t in entry.times if t <= now + 1]
        if entry.until > now + MAX_AHEAD:
            entry.until = 0.0
        if entry.dnsbl_until > now + MAX_AHEAD:
            entry.dnsbl_until = 0.0
        return entry

    def _read_only(self, addr: str) -> _Entry | None:
        if not addr:
            return None
        fd = self._open(addr, write=False)
        if fd is None:
            return None
        try:
            return self._read(fd, addr)
        finally:
            os.close(fd)

    def _change(self, addr: str, change: object) -> object:
        """Apply CHANGE (a function of the _Entry, mutating it) to ADDR's file; its result."""
        if not addr:
            return None
        fd = self._open(addr, write=True)
        if fd is None:
            return None
        try:
            entry = self._read(fd, addr)
            result = change(entry)  # type: ignore[operator]
            data = entry.render(self.now())
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            return result
        except OSError as e:
            self._trouble(f"cannot write the file of {addr}: {e.strerror}")
            return None
        finally:
            os.close(fd)

    # -- what a connection asks -------------------------------------------------
    def penalty(self, addr: str) -> str:
        """Why ADDR is to be turned away now ("" when it is not)."""
        entry = self._read_only(addr)
        if entry is None or entry.until <= self.now():
            return ""
        return entry.why or "misbehaved"

    def count_connection(self, addr: str, window: float, keep: int = MAX_TIMES) -> int:
        """Record a connection of ADDR now; how many it made in the last WINDOW seconds
        (counted and recorded under one lock: parallel connections count exactly), at
        most KEEP: only the newest KEEP times are kept (the rate + 1 is enough to know)."""
        now = self.now()
        keep = max(1, min(keep, MAX_TIMES))

        def count(entry: _Entry) -> int:
            recent = [t for t in entry.times if t > now - window]
            entry.times = recent[max(0, len(recent) - (keep - 1)) :] + [now]  # the newest KEEP
            return len(entry.times)

        counted = self._change(addr, count)
        self.sweep_now_and_then()
        return int(counted or 0)  # type: ignore[call-overload]

    def punish(self, addr: str, why: str, seconds: float = PENALTY_SECONDS) -> None:
        """Turn ADDR away at connect for SECONDS, saying WHY in the log."""
        until = self.now() + min(seconds, MAX_AHEAD)
        text = "".join(c if " " <= c <= "~" else "?" for c in why)[:200]

        def set_penalty(entry: _Entry) -> None:
            entry.until, entry.why = until, text

        self._change(addr, set_penalty)

    def cached_dnsbl(self, addr: str, zones: str) -> list[str] | None:
        """The answers of the blocklists ZONES for ADDR remembered lately; None when none."""
        entry = self._read_only(addr)
        if entry is None or entry.dnsbl_zones != zones or entry.dnsbl_until <= self.now():
            return None
        return entry.dnsbl_listed

    def cache_dnsbl(self, addr: str, zones: str, listed: list[str], seconds: float) -> None:
        until = self.now() + seconds

        def remember(entry: _Entry) -> None:
            entry.dnsbl_until, entry.dnsbl_zones, entry.dnsbl_listed = until, zones, list(listed)

        self._change(addr, remember)

    # -- staying bounded -------------------------------------------------------------
    def sweep_now_and_then(self) -> None:
        """One connection in SWEEP_ONE_IN looks whether the folder outgrew MAX_CLIENTS."""
        if int.from_bytes(os.urandom(2), "big") % SWEEP_ONE_IN == 0:
            try:
                if sum(1 for _ in os.scandir(self.folder)) > MAX_CLIENTS:
                    self.sweep(keep=MAX_CLIENTS // 2)
            except OSError:
                pass

    def sweep(self, window: float = 86400.0, keep: int = MAX_CLIENTS) -> int:
        """Remove the files with nothing in force (no connection in WINDOW seconds, no
        penalty, no DNSBL answer), then the least recently changed past KEEP; how many."""
        now = self.now()
        removed = 0
        try:
            files = list(os.scandir(self.folder))
        except OSError:
            return 0
        alive = []
        for item in files:
            if not _ours(item.name):
                continue  # not a client's file: left alone
            try:
                with open(item.path, "rb") as f:
                    entry = _Entry.parse(f.read(MAX_FILE + 1))
                stale = max([entry.until, entry.dnsbl_until, *(t + window for t in entry.times[-1:])])
                if stale <= now:
                    os.unlink(item.path)
                    removed += 1
                else:
                    alive.append((item.stat().st_mtime, item.path))
            except OSError:
                continue
        for _, path in sorted(alive)[: max(0, len(alive) - keep)]:
            try:
                os.unlink(path)
                removed += 1
            except OSError:
                pass
        return removed

    def close(self) -> None:
        pass  # nothing is held between questions
