"""From a spooled message to its handlers' outcomes, and the queue of deferred messages.

`Delivery.deliver()` takes one message folder (queue/ID, or incoming/ID for INLINE
handlers before the final reply), runs the checks once (their result is kept in
state.json, so a retry does not ask DNS again and sees what was true on arrival),
groups the recipients by the handler chosen at RCPT time (one run per handler per
message), and runs each handler that has not succeeded yet.  Each handler's outcome
is written to state.json as soon as it is known, so a retry never runs again a handler
that already succeeded.  Then the message moves: all done -> done/ (or deleted, with
`keep_done = 0`); something deferred -> stays in queue/ until `retry_for` is over,
then failed/; nothing deferred but something refused -> failed/.

This module does not speak SMTP.
"""

from __future__ import annotations

import os
import time

from . import log
from .config import Config
from .router import POSTMASTER_TO_FAILED, Router
from .runner import Outcome, program_environment, run_program, run_python
from .spool import ENVELOPE, MESSAGE, STATE, Spool, read_json, write_json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

BACKOFF = (60, 300, 900, 3600, 7200, 14400)  # seconds after the 1st, 2nd, ... deferral


def backoff(deferrals: int) -> int:
    return BACKOFF[min(max(deferrals, 1), len(BACKOFF)) - 1]


class Result:
    def __init__(self, queue_id: str, folder: str, outcomes: dict[str, Outcome]) -> None:
        self.queue_id = queue_id
        self.folder = folder  # where the message is now: queue | done | failed | deleted
        self.outcomes = outcomes


class Delivery:
    def __init__(self, config: Config, router: Router, spool: Spool, clock: Any = time.time) -> None:
        self.config = config
        self.router = router
        self.spool = spool
        self.clock = clock

    # -- checks -------------------------------------------------------------
    def authenticate(self, folder: str, envelope: dict[str, Any], state: dict[str, Any]) -> Any:
        """The AuthResults of the message (computed once, then read from state.json).

        Authentication-Results bearing our authserv-id that came with the message are
        removed from the spooled copy first, whether or not any check is enabled.
        """
        checks = self.config.checks
        enabled = checks.spf or checks.dkim or checks.dmarc or checks.arc
        if not enabled and state.get("authres"):
            return None
        if state.get("auth") is not None:
            from . import checks as checks_module  # the stack itself loads only in authenticate()

            stored = checks_module.AuthResults.from_dict(state["auth"])
            if not stored.temporary:  # a temperror is asked again on the next attempt
                return stored
        hostname = self.config.server.hostname
        path = os.path.join(folder, MESSAGE)
        self.remove_forged_results(path, envelope["queue_id"])
        results = None
        if enabled:
            from . import checks as checks_module

            with open(path, "rb") as f:
                data = f.read()
            results = checks_module.authenticate(
                data,
                client_ip=envelope.get("remote_addr", ""),
                helo=envelope.get("helo", ""),
                mail_from=envelope.get("sender", ""),
                settings=checks,
                authserv_id=hostname,
            )
            state["auth"] = results.to_dict()
        state["authres"] = results.header_value(hostname) if results else f"{hostname}; none"
        write_json(os.path.join(folder, STATE), state)
        return results

    def remove_forged_results(self, path: str, queue_id: str) -> None:
        with open(path, "rb") as f:
            head = f.read(256 * 1024)
        if b"authentication-results" not in head.lower():
            return  # the common case: nothing to look at, nothing imported
        from .checks import remove_our_authres

        with open(path, "rb") as f:
            data = f.read()
        cleaned = remove_our_authres(data, self.config.server.hostname)
        if cleaned == data:
            return
        tmp = path + ".clean"
        with open(tmp, "wb") as f:
            f.write(cleaned)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        log.warning("%s: removed Authentication-Results bearing our authserv-id", queue_id)

    # -- handlers -------------------------------------------------------------
    def handler_groups(self, envelope: dict[str, Any]) -> dict[str, list[str]]:
        groups: dict[str, list[str]] = {}
        for recipient in envelope["recipients"]:
            addresses = groups.setdefault(recipient.get("route", ""), [])
            if recipient["address"] not in addresses:
                addresses.append(recipient["address"])
        return groups

    def deliver(self, folder: str, *, inline_only: bool = False) -> dict[str, Outcome]:
        """Run the pending handlers of the message in FOLDER; outcomes of this run by handler."""
        envelope = read_json(os.path.join(folder, ENVELOPE))
        state = read_json(os.path.join(folder, STATE), {}) or {}
        handlers_state: dict[str, dict[str, Any]] = state.setdefault("handlers", {})
        groups = self.handler_groups(envelope)
        pending = [
            name
            for name in groups
            if handlers_state.get(name, {}).get("status") not in ("done", "failed")
            and (not inline_only or self._is_inline(name))
        ]
        outcomes: dict[str, Outcome] = {}
        if not pending:
            return outcomes
        auth = None
        try:
            auth = self.authenticate(folder, envelope, state)
        except Exception as e:  # checks must never cost a message; they report, not decide
            import traceback

            log.error(
                "%s: checks failed: %s", envelope["queue_id"], traceback.format_exc().replace("\n", " | ")
            )
            state["authres"] = f"{self.config.server.hostname}; none (checks failed: {type(e).__name__})"
        authres = state.get("authres") or f"{self.config.server.hostname}; none"
        prefix = f"Authentication-Results: {authres}\r\n".encode("utf-8", "replace")
        for name in pending:
            outcome = self.run_handler(name, groups[name], folder, envelope, prefix, auth, authres)
            outcomes[name] = outcome
            entry = handlers_state.setdefault(name, {"attempts": 0})
            entry.update(
                status=outcome.status,
                last_error=outcome.detail,
                last_try=self.clock(),
                recipients=groups[name],
            )
            entry["attempts"] = entry.get("attempts", 0) + 1
            write_json(os.path.join(folder, STATE), state)
            detail = f" {outcome.detail}" if outcome.detail else ""
            log.info("%s: handler=%s status=%s%s", envelope["queue_id"], name, outcome.status, detail)
        return outcomes

    def _is_inline(self, name: str) -> bool:
        handler = self.router.handlers.get(name)
        return bool(handler and handler.inline)

    def run_handler(
        self,
        name: str,
        recipients: list[str],
        folder: str,
        envelope: dict[str, Any],
        prefix: bytes,
        auth: Any,
        authres: str,
    ) -> Outcome:
        if name == POSTMASTER_TO_FAILED:
            return Outcome("failed", "postmaster mail with no postmaster handler and no catchall")
        handler = self.router.handlers.get(name)
        if handler is None:
            return Outcome("deferred", f"no handler named {name!r} in {self.config.handlers.dir}")
        if handler.error:
            return Outcome("deferred", handler.error)
        from .envelope import Envelope

        message_path = os.path.join(folder, MESSAGE)
        env = Envelope(
            queue_id=envelope["queue_id"],
            sender=envelope["sender"],
            recipients=recipients,
            helo=envelope.get("helo", ""),
            remote_addr=envelope.get("remote_addr", ""),
            remote_host=envelope.get("remote_host", ""),
            tls=envelope.get("tls", ""),
            handler=name,
            config=self.config.settings_for(name),
            server_config=self.config,
            message_path=message_path,
            prefix=prefix,
            auth=auth,
        )
        timeout = self.config.handlers.timeout
        if handler.kind == "python":
            return run_python(handler, env, timeout)
        auth_env = auth.environment() if auth is not None else {}
        return run_program(
            handler, env, program_environment(env, auth_env, authres), message_path, prefix, timeout
        )

    # -- moving -----------------------------------------------------------------
    def settle(self, queue_id: str) -> str:
        """Move a queued message where its handlers' outcomes say; returns the folder."""
        folder = self.spool.path("queue", queue_id)
        envelope = read_json(os.path.join(folder, ENVELOPE))
        state = read_json(os.path.join(folder, STATE), {}) or {}
        statuses = [
            state.get("handlers", {}).get(name, {}).get("status", "new")
            for name in self.handler_groups(envelope)
        ]
        now = self.clock()
        if all(s == "done" for s in statuses):
            if self.config.handlers.keep_done > 0:
                self.spool.move(queue_id, "queue", "done")
                return "done"
            self.spool.remove("queue", queue_id)
            return "deleted"
        if any(s in ("deferred", "new") for s in statuses):
            age = now - float(envelope.get("received_at", now))
            if age < self.config.handlers.retry_for:
                deferrals = state.get("deferrals", 0) + 1
                state.update(deferrals=deferrals, next_try=now + backoff(deferrals))
                write_json(os.path.join(folder, STATE), state)
                return "queue"
            state["expired"] = f"retried for {age:.0f} s (retry_for = {self.config.handlers.retry_for:g})"
            write_json(os.path.join(folder, STATE), state)
            log.warning("%s: %s; moved to failed/", queue_id, state["expired"])
        self.spool.move(queue_id, "queue", "failed")
        return "failed"

    def deliver_queued(self, queue_id: str) -> Result:
        outcomes = self.deliver(self.spool.path("queue", queue_id))
        return Result(queue_id, self.settle(queue_id), outcomes)

    # -- the queue ----------------------------------------------------------------
    def run_queue(self, now_too: bool = False) -> list[Result]:
        """Retry what is due (all of it with NOW_TOO); tidy done/ and stale incoming/."""
        results = []
        for queue_id in self.spool.ids("queue"):
            state = read_json(self.spool.path("queue", queue_id, STATE), {}) or {}
            if not now_too and state.get("next_try", 0) > self.clock():
                continue
            lock = self.spool.lock("queue", queue_id)
            if lock is None:
                continue  # another process has it
            try:
                state = read_json(self.spool.path("queue", queue_id, STATE), {}) or {}  # as of the lock
                due = now_too or state.get("next_try", 0) <= self.clock()
                if due and os.path.exists(self.spool.path("queue", queue_id, ENVELOPE)):
                    results.append(self.deliver_queued(queue_id))
            except Exception:
                import traceback

                log.error("%s: delivery failed: %s", queue_id, traceback.format_exc().replace("\n", " | "))
            finally:
                os.close(lock)
        self.tidy()
        return results

    def tidy(self) -> None:
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

    def list_queue(self) -> list[dict[str, Any]]:
        rows = []
        now = self.clock()
        for queue_id in self.spool.ids("queue"):
            envelope = read_json(self.spool.path("queue", queue_id, ENVELOPE))
            if envelope is None:
                continue
            state = read_json(self.spool.path("queue", queue_id, STATE), {}) or {}
            handlers = state.get("handlers", {})
            pending = [
                n for n in self.handler_groups(envelope) if handlers.get(n, {}).get("status") != "done"
            ]
            errors = [handlers[n]["last_error"] for n in pending if handlers.get(n, {}).get("last_error")]
            rows.append(
                {
                    "id": queue_id,
                    "age": now - float(envelope.get("received_at", now)),
                    "sender": envelope.get("sender", ""),
                    "recipients": [r["address"] for r in envelope["recipients"]],
                    "handlers": pending,
                    "attempts": max([handlers.get(n, {}).get("attempts", 0) for n in pending] or [0]),
                    "next_try": state.get("next_try", 0),
                    "last_error": "; ".join(errors),
                }
            )
        return rows
