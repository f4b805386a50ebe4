"""The queue: where a message goes after its handlers ran, and the retries of deferred ones.

After a delivery, `settle()` moves the message where its handlers' outcomes say: all
done -> done/ (or deleted, with `keep_done = 0`); something deferred -> stays in queue/
with a backoff until `retry_for` is over, then failed/; nothing deferred but something
refused -> failed/.  `deliver_safely()` is the one per-message exception boundary, used
by inetd mode after the session and by `queue --run`: whatever happens, the message
stays in the spool and a log line says why.

This module does not speak SMTP and runs no handler itself (deliver.py does).
"""

from __future__ import annotations

import os

from .. import log
from ..spool import ENVELOPE, Record, State
from .deliver import Delivery

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..outcomes import Outcome

BACKOFF = (60, 300, 900, 3600, 7200, 14400)  # seconds after the 1st, 2nd, ... deferral
SETTLED = {
    "queue": "deferred: left in queue/ for `queue --run`",
    "deleted": "done: every handler succeeded (removed from the spool, keep_done = 0)",
    "done": "done: every handler succeeded (kept in done/)",
    "failed": "failed: moved to failed/",
}


def backoff(deferrals: int) -> int:
    return BACKOFF[min(max(deferrals, 1), len(BACKOFF)) - 1]


class Result:
    def __init__(self, queue_id: str, folder: str, outcomes: dict[str, Outcome]) -> None:
        self.queue_id = queue_id
        self.folder = folder  # where the message is now: queue | done | failed | deleted
        self.outcomes = outcomes


class Queue(Delivery):
    """Delivery plus the moves after it, the retry queue and its listing."""

    def settle(self, queue_id: str, state: State | None = None) -> str:
        """Move a queued message where its handlers' outcomes say; returns the folder.
        STATE: as deliver() left it, perhaps not written (its last outcome, all done)."""
        folder = self.spool.path("queue", queue_id)
        record = Record.load(folder)
        assert record is not None
        state = State.load(folder) if state is None else state
        statuses = [state.status(name) for name in record.groups()]
        now = self.clock()
        if all(s == "done" for s in statuses):
            if self.config.handlers.keep_done > 0:
                self.spool.move(queue_id, "queue", "done")
                return "done"
            self.spool.discard("queue", queue_id)
            return "deleted"
        if any(s in ("deferred", "new") for s in statuses):
            age = now - (max(record.received_at, state.retry_from) or now)
            if age < self.config.handlers.retry_for:
                state.deferrals += 1
                state.next_try = now + backoff(state.deferrals)
                state.save(folder)
                return "queue"
            state.expired = f"retried for {age:.0f} s (retry_for = {self.config.handlers.retry_for:g})"
            state.save(folder)
            log.warning("%s: %s; moved to failed/", queue_id, state.expired)
        self.spool.move(queue_id, "queue", "failed")
        return "failed"

    def deliver_queued(self, queue_id: str) -> Result:
        folder = self.spool.path("queue", queue_id)
        state = State.load(folder)
        outcomes = self.deliver(folder, state=state, removed_when_done=self.config.handlers.keep_done <= 0)
        try:
            where = self.settle(queue_id, state)
        except Exception:  # the last outcome, perhaps not written: written now, or it runs again
            if os.path.isdir(folder):
                try:
                    state.save(folder)
                except OSError:
                    pass
            raise
        return Result(queue_id, where, outcomes)

    def deliver_safely(self, queue_id: str) -> Result | None:
        """deliver_queued() inside the delivery stage's one exception boundary."""
        try:
            result = self.deliver_queued(queue_id)
        except OSError as e:  # a full disk after the 250: one clear line, the message stays
            where = f" {e.filename}" if e.filename else ""
            log.error(
                "%s: cannot write the spool%s: %s; left in queue/ for queue --run",
                queue_id,
                where,
                e.strerror or e,
            )
            return None
        except Exception:
            log.exception("%s: delivery failed, left in queue/", queue_id)
            return None
        log.info("%s: %s", queue_id, SETTLED.get(result.folder, result.folder))
        return result

    # -- the queue ----------------------------------------------------------------
    def run_queue(self, now_too: bool = False) -> list[Result]:
        """Retry what is due (all of it with NOW_TOO); tidy done/ and stale incoming/."""
        results = []
        for queue_id in self.spool.ids("queue"):
            if not now_too and State.load(self.spool.path("queue", queue_id)).next_try > self.clock():
                continue
            lock = self.spool.lock("queue", queue_id)
            if lock is None:
                continue  # another process has it
            try:
                state = State.load(self.spool.path("queue", queue_id))  # as of the lock
                due = now_too or state.next_try <= self.clock()
                if due and os.path.exists(self.spool.path("queue", queue_id, ENVELOPE)):
                    result = self.deliver_safely(queue_id)
                    if result is not None:
                        results.append(result)
            finally:
                os.close(lock)
        self.tidy()
        return results

    def tidy(self) -> None:
        from .duplicates import Seen

        Seen(self.config.server.spool, self.config.handlers.dedupe_days).sweep()
        if self.config.keeps_client_memory:
            from ..clients import ClientMemory

            ClientMemory(self.config.server.spool).sweep(window=max(86400.0, self.config.limits.rate_window))
        now = self.clock()
        keep = self.config.handlers.keep_done * 86400
        for queue_id in self.spool.ids("done"):
            path = self.spool.path("done", queue_id)
            if keep and now - os.path.getmtime(path) > keep:
                self.spool.remove("done", queue_id)
        stale = self.config.server.data_timeout + self.config.server.command_timeout + 3600
        for queue_id in self.spool.ids("incoming"):
            lock = self.spool.lock("incoming", queue_id)
            if lock is None:
                continue
            try:
                if now - os.path.getmtime(self.spool.path("incoming", queue_id)) > stale:
                    self.spool.remove("incoming", queue_id)  # never accepted: the client retries
            finally:
                os.close(lock)

    def retry_failed(self, queue_id: str) -> list[str] | None:
        """Move failed/QUEUE_ID back into queue/ with a fresh retry window: the handlers that
        did not succeed run again, those that did stay done.  Their names; None if no such."""
        lock = self.spool.lock("failed", queue_id, wait=True)
        if lock is None:
            return None
        try:
            folder = self.spool.path("failed", queue_id)
            record = Record.load(folder)
            if record is None:
                return None
            state = State.load(folder)
            again = [name for name in record.groups() if state.status(name) != "done"]
            for name in again:
                state.handler(name).status = "new"
            state.deferrals, state.next_try, state.expired = 0, 0.0, ""
            state.retry_from = self.clock()
            state.save(folder)
            self.spool.move(queue_id, "failed", "queue")
        finally:
            os.close(lock)
        log.info(
            "%s: moved from failed/ back into queue/ (handlers %s)", queue_id, ", ".join(again) or "none"
        )
        return again

    def list_queue(self, folder_name: str = "queue") -> list[dict[str, Any]]:
        """One row per message in FOLDER_NAME (queue, or failed): what it waits for and why."""
        rows = []
        now = self.clock()
        for queue_id in self.spool.ids(folder_name):
            folder = self.spool.path(folder_name, queue_id)
            record = Record.load(folder)
            if record is None:
                continue
            state = State.load(folder)
            pending = [n for n in record.groups() if state.status(n) != "done"]
            errors = [state.handlers[n].last_error for n in pending if n in state.handlers]
            rows.append(
                {
                    "id": queue_id,
                    "age": now - (record.received_at or now),
                    "sender": record.sender,
                    "recipients": [r.address for r in record.recipients],
                    "handlers": pending,
                    "attempts": max(
                        [state.handlers[n].attempts for n in pending if n in state.handlers] or [0]
                    ),
                    "next_try": state.next_try,
                    "last_error": "; ".join(e for e in errors if e) or state.expired,
                }
            )
        return rows
