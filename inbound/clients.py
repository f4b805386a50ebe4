"""Per-client memory without a daemon: what every connection process knows of a client.

Every connection is a process of its own, so what they share is a small sqlite database
under the spool (`<spool>/clients.sqlite`, WAL, a short busy timeout): the connections
of each client address in the last `[limits] rate_window` seconds, and penalties of
clients that misbehaved (talked before the banner, ran into too many errors or unknown
recipients), each with the time it ends, and recent DNS blocklist answers
(dnsbl.py).  A client over its rate, or under a penalty, is answered `421 4.7.0` at
connect, without a session (inetd.py asks).

The store is bounded (old rows expire on every write; past MAX_ROWS the oldest go) and
never stops mail: a locked database is skipped for this connection, a corrupt one is
moved aside and made anew, and either is logged.  It is opened only when `[limits]`
asks for it, so a default install pays nothing (sqlite3 costs ~3 ms to import).

This module decides nothing about SMTP; it remembers and counts.
"""

from __future__ import annotations

import os
import time

from . import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    import sqlite3

FILENAME = "clients.sqlite"
BUSY_MS = 200  # a store another process holds longer than this is skipped, not waited for
MAX_ROWS = 100_000
PENALTY_SECONDS = 600.0  # how long a client that misbehaved is answered 421 at connect
SCHEMA = """
CREATE TABLE IF NOT EXISTS connections (addr TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS connections_addr ON connections (addr, at);
CREATE TABLE IF NOT EXISTS penalties (addr TEXT PRIMARY KEY, until REAL NOT NULL, why TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dnsbl (addr TEXT PRIMARY KEY, until REAL NOT NULL, listed TEXT NOT NULL);
"""


SCHEMA_VERSION = 1  # PRAGMA user_version once SCHEMA is in place: later opens skip it


def _sqlite3():  # type: ignore[no-untyped-def]
    """The sqlite3 C module itself: the `sqlite3` package adds only its date adapters
    and costs every connection ~2 ms more (datetime, collections.abc)."""
    try:
        import _sqlite3

        return _sqlite3
    except ImportError:  # an interpreter that does not build it under that name
        import sqlite3

        return sqlite3


class ClientMemory:
    """The shared store of one spool; every method is safe to call when it is broken."""

    def __init__(self, spool: str, clock: object = time.time) -> None:
        self.path = os.path.join(spool, FILENAME)
        self.clock = clock
        self._db: sqlite3.Connection | None = None
        self.broken = False

    def _open(self) -> sqlite3.Connection | None:
        if self._db is not None or self.broken:
            return self._db
        sqlite3 = _sqlite3()

        for attempt in (1, 2):
            try:
                db = sqlite3.connect(self.path, timeout=BUSY_MS / 1000, isolation_level=None)
                db.execute("PRAGMA synchronous=OFF")  # counts and penalties: losing one is harmless
                if db.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:  # new (or older)
                    db.execute("PRAGMA journal_mode=WAL")  # kept in the file, like user_version
                    db.executescript(SCHEMA)
                    db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                db.execute("SELECT count(*) FROM penalties").fetchone()
                self._db = db
                return db
            except sqlite3.OperationalError as e:
                if "locked" in str(e) or "busy" in str(e):
                    log.warning("client memory %s is locked (%s): skipped for this connection", self.path, e)
                    break
                if attempt == 2 or not self._move_aside(e):
                    break
            except sqlite3.DatabaseError as e:  # not a database, malformed: start again
                if attempt == 2 or not self._move_aside(e):
                    break
        self.broken = True
        return None

    def _move_aside(self, error: Exception) -> bool:
        broken = f"{self.path}.broken-{int(time.time())}"
        try:
            os.replace(self.path, broken)
        except OSError:
            return False
        for suffix in ("-wal", "-shm"):
            try:
                os.unlink(self.path + suffix)
            except OSError:
                pass
        log.error(
            "client memory %s was unreadable (%s): moved to %s, starting afresh", self.path, error, broken
        )
        return True

    def _run(self, sql: str, args: tuple[object, ...] = ()) -> list[tuple[object, ...]] | None:
        db = self._open()
        if db is None:
            return None
        sqlite3 = _sqlite3()

        try:
            return db.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            log.warning("client memory %s: %s: skipped", self.path, e)
            self.broken = True
            return None

    def now(self) -> float:
        return float(self.clock())  # type: ignore[operator]

    # -- what a connection asks -------------------------------------------------
    def penalty(self, addr: str) -> str:
        """Why ADDR is to be turned away now ("" when it is not)."""
        if not addr:
            return ""
        rows = self._run("SELECT why FROM penalties WHERE addr = ? AND until > ?", (addr, self.now()))
        return str(rows[0][0]) if rows else ""

    def count_connection(self, addr: str, window: float) -> int:
        """Record a connection of ADDR now; how many it made in the last WINDOW seconds
        (counted and recorded in one transaction: parallel connections count exactly)."""
        if not addr:
            return 0
        now = self.now()
        if self._run("BEGIN IMMEDIATE") is None:
            return 0
        rows = self._run("SELECT count(*) FROM connections WHERE addr = ? AND at > ?", (addr, now - window))
        self._run("INSERT INTO connections VALUES (?, ?)", (addr, now))
        if self._run("COMMIT") is None:
            return 0
        self._expire(now, window)
        return int(rows[0][0]) + 1 if rows else 0  # type: ignore[call-overload]

    def punish(self, addr: str, why: str, seconds: float = PENALTY_SECONDS) -> None:
        """Turn ADDR away at connect for SECONDS, saying WHY in the log."""
        if not addr:
            return
        self._run(
            "INSERT OR REPLACE INTO penalties VALUES (?, ?, ?)", (addr, self.now() + seconds, why[:200])
        )

    def cached_dnsbl(self, addr: str) -> list[str] | None:
        """The blocklist answers for ADDR remembered lately; None when there are none."""
        rows = self._run("SELECT listed FROM dnsbl WHERE addr = ? AND until > ?", (addr, self.now()))
        return str(rows[0][0]).split() if rows else None

    def cache_dnsbl(self, addr: str, listed: list[str], seconds: float) -> None:
        self._run(
            "INSERT OR REPLACE INTO dnsbl VALUES (?, ?, ?)", (addr, self.now() + seconds, " ".join(listed))
        )
        self._run("DELETE FROM dnsbl WHERE until <= ?", (self.now(),))

    def _expire(self, now: float, window: float) -> None:
        self._run("DELETE FROM connections WHERE at <= ?", (now - max(window, 1.0),))
        self._run("DELETE FROM penalties WHERE until <= ?", (now,))
        rows = self._run("SELECT count(*) FROM connections")
        if rows and int(rows[0][0]) > MAX_ROWS:  # type: ignore[call-overload]
            self._run(
                "DELETE FROM connections WHERE rowid IN (SELECT rowid FROM connections ORDER BY at LIMIT ?)",
                (int(rows[0][0]) - MAX_ROWS,),  # type: ignore[call-overload]
            )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
