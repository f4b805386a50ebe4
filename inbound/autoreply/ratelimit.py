"""One reply per sender per handler per REPLY_INTERVAL, remembered across processes.

Every connection is a process of its own, so the memory is a file:
`<spool>/replies/<handler>.json` (sender -> time of the last reply), read and written
under flock.  Entries older than the interval are dropped on every write, so the file
stays small.  This module knows nothing of messages.
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
        key = sender.lower()
        with self._locked():
            data = self._read()
            stamp = now()
            last = data.get(key)
            if isinstance(last, (int, float)) and 0 <= stamp - last < self.interval:
                return None
            data = {
                k: v for k, v in data.items() if isinstance(v, (int, float)) and stamp - v < self.interval
            }
            data[key] = stamp
            self._write(data)
            return stamp

    def release(self, sender: str, stamp: float) -> None:
        """Forget the reservation STAMP (the reply was not sent after all)."""
        key = sender.lower()
        with self._locked():
            data = self._read()
            if data.get(key) == stamp:
                del data[key]
                self._write(data)

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
