"""The one owner of SIGALRM: `deadline(seconds, exception)`, a wall-clock bound that nests.

A handler's timeout (delivery/runner.py) and the Envelope's parse deadline (envelope.py)
both bound code they do not control with SIGALRM.  They nest: a parse deadline inside a
handler's timeout must neither cancel nor postpone the outer one.  So the alarm keeps a
stack of deadlines and always arms the timer for the earliest; when it fires, the
exception of the deadline that is due is raised (the outer one's reaches the outer
`with`, since inner blocks cannot stop a BaseException they do not catch).

Off the main thread signals cannot be used: the block then runs unbounded.

This module knows nothing of handlers or messages.
"""

from __future__ import annotations

import signal
import threading
import time

# (due time, exception class) of each open deadline, outermost first
_stack: list[tuple[float, type[BaseException]]] = []
_previous: object = None


def _fire(signum: int, frame: object) -> None:
    now = time.monotonic()
    for due, exception in _stack:  # outermost due first: it wins
        if due <= now + 0.0005:
            raise exception
    _arm()  # woken early (timer granularity): arm again for what is left


def _arm() -> None:
    if not _stack:
        signal.setitimer(signal.ITIMER_REAL, 0)
        return
    left = min(due for due, _ in _stack) - time.monotonic()
    signal.setitimer(signal.ITIMER_REAL, max(left, 0.0005))


class deadline:  # noqa: N801 - used as a context manager, reads as a phrase
    """`with deadline(5, Timeout): ...` raises Timeout in the block after 5 s of wall clock."""

    def __init__(self, seconds: float, exception: type[BaseException]) -> None:
        self.seconds = seconds
        self.exception = exception
        self.entry: tuple[float, type[BaseException]] | None = None

    def __enter__(self) -> deadline:
        global _previous
        if not self.seconds or threading.current_thread() is not threading.main_thread():
            return self
        if not _stack:
            _previous = signal.signal(signal.SIGALRM, _fire)
        self.entry = (time.monotonic() + self.seconds, self.exception)
        _stack.append(self.entry)
        _arm()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.entry is None:
            return
        signal.setitimer(signal.ITIMER_REAL, 0)  # first: a late alarm must not undo the block
        if self.entry in _stack:
            _stack.remove(self.entry)
        self.entry = None
        if _stack:
            _arm()
        else:
            signal.signal(signal.SIGALRM, _previous)  # type: ignore[arg-type]

    def cancel(self) -> None:
        """Disarm now (the block succeeded; nothing after this may be interrupted by us)."""
        self.__exit__()
