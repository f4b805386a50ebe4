"""One reply per sender per handler per REPLY_INTERVAL, remembered across processes.

Every connection is a process of its own, so the memory is a file:
`<spool>/replies/<handler>.json` (sender -> time of the last reply), read and written
under flock.  The file stays small whoever writes to us: on every look-up, entries older
than the interval (or dated more than an interval ahead, after a clock step) are
dropped, for senders never answered again too, and at most MAX_ENTRIES are kept (the
oldest go first: a sender then may get a second reply within the day, which is better
than a memory that grows with every forged sender).  This module knows nothing of
messages.
"""

from __future__ import annotations

import os
import re
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

#: One reply per sender per handler in this many seconds.
REPLY_INTERVAL = 86400
#: Senders remembered per handler (about 60 octets each in the file).
MAX_ENTRIES = 10_000
#: A sender address longer than this is remembered by its first MAX_KEY characters.
MAX_KEY = 320

#: Injectable clock (tests move it).
now: Callable[[], float] = time.time


class RateLimit:
    """`<spool>/replies/<handler>.json`: sender -> time of the last reply, under flock."""

    def __init__(self, spool: str, handler: str, interval: float = REPLY_INTERVAL) -> None:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", handler or "default").lstrip(".") or "default"
        self.folder = os.path.join(spool or ".", "replies")
        self.path = os.path.join(self.folder, f"{name}.json")
        self.interval = interval

    def reserve(self, sender: str) -> float | None:
        """Record a reply to SENDER now and return its stamp; None when one was sent recently."""
        key = sender.lower()[:MAX_KEY]
        with self._locked():
            data = self._read()
            stamp = now()
            kept = self._fresh(data, stamp)
            if key in kept:
                if len(kept) != len(data):
                    self._write(kept)
                return None
            kept[key] = stamp
            if len(kept) > MAX_ENTRIES:
                newest = sorted(kept.items(), key=lambda item: item[1])[-MAX_ENTRIES:]
                kept = dict(newest)
            self._write(kept)
            return stamp

    def release(self, sender: str, stamp: float) -> None:
        """Forget the reservation STAMP (the reply was not sent after all)."""
        key = sender.lower()[:MAX_KEY]
        with self._locked():
            data = self._read()
            kept = self._fresh(data, now())
            if kept.get(key) == stamp:
                del kept[key]
            if len(kept) != len(data):
                self._write(kept)

    def _fresh(self, data: dict[str, Any], stamp: float) -> dict[str, float]:
        """The entries of DATA that still count at STAMP: numbers within an interval of it."""
        return {
            k: float(v)
            for k, v in data.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and abs(stamp - v) < self.interval
        }

    def _locked(self) -> Any:
        import contextlib
        import fcntl

        os.makedirs(self.folder, mode=0o750, exist_ok=True)

        @contextlib.contextmanager
        def locked() -> Any:
            fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o640)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

        return locked()

    def _read(self) -> dict[str, Any]:
        import json

        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except (FileNotFoundError, ValueError):
            return {}

    def _write(self, data: dict[str, Any]) -> None:
        import json

        tmp = f"{self.path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
