"""From a spooled message to its handlers' outcomes: checks once, then each pending handler.

`Delivery.deliver()` takes one message folder (queue/ID, or incoming/ID for INLINE
handlers before the final reply), runs the checks once (their result is kept in
state.json, so a retry does not ask DNS again and sees what was true on arrival),
groups the recipients by the handler chosen at RCPT time (one run per handler per
message), and runs each handler that has not succeeded yet.  Each handler's outcome
is written to state.json as soon as it is known, so a retry never runs again a handler
that already succeeded.  Where the message goes next is queue.py's business.

`handler_envelope()` is the one place that builds the Envelope a handler gets (also for
`send --reply` and `deliver --dry-run`), and the composition root that gives it its
replier (autoreply), so envelope.py imports nothing later in the flow.

This module does not speak SMTP and does not move messages between folders.
"""

from __future__ import annotations

import os
import time

from .. import log
from ..config import Config
from ..outcomes import FINAL, Outcome
from ..spool import MESSAGE, Record, Spool, State
from .duplicates import Seen, message_key
from .router import POSTMASTER_TO_FAILED, Router, require_problem, requirement
from .runner import program_environment, run_program, run_python

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..checks.results import AuthResults
    from ..checks.scanners import Verdicts
    from ..envelope import Envelope


#: Queue ids whose checks (and scans) ran in this process.
_checked_here: set[str] = set()
_scanned_here: set[str] = set()
#: Scanners whose failure this process has logged: once per connection, not per message.
_failure_logged: set[str] = set()


def use_spool_caches(spool_root: str) -> None:
    """Caches built once for every process live under the spool: the Public Suffix List's
    (checks.orgdomain, read by DMARC and the reply rules)."""
    from ..checks.orgdomain import use_cache_dir

    use_cache_dir(os.path.join(spool_root, "cache"))


def send_reply(envelope: Envelope, body: str, **options: Any) -> bool:
    """The replier handed to every Envelope: autoreply, imported on the first reply only."""
    from ..autoreply import send_reply as autoreply_send

    return autoreply_send(envelope, body, **options)


def forward_message(envelope: Envelope, to: str, **options: Any) -> str:
    """The forwarder handed to every Envelope: autoreply.forward, imported when used."""
    from ..autoreply.forward import forward

    return forward(envelope, to, **options)


def stored_auth(state: State) -> AuthResults | None:
    """The AuthResults kept in STATE, or None (none stored, or unreadable)."""
    if not state.auth:
        return None
    from ..checks.results import AuthResults

    try:
        return AuthResults.from_dict(state.auth)
    except Exception:  # results of another version: as if none (require_auth then refuses)
        return None


def authres_prefix(state: State, hostname: str) -> bytes:
    """Our trace fields, as they go on top of the message for handlers:
    Authentication-Results, then the scanners' X-Spam-Result and X-Virus-Result."""
    value = state.authres or f"{hostname}; none"
    prefix = f"Authentication-Results: {value}\r\n".encode("utf-8", "replace")
    verdicts = stored_verdicts(state)
    return prefix + verdicts.header_fields(hostname) if verdicts else prefix


def stored_verdicts(state: State) -> Verdicts | None:
    """The scanners' verdicts kept in STATE, or None (none configured or asked yet)."""
    if state.scan is None:
        return None
    from ..checks.scanners import Verdicts

    return Verdicts.from_dict(state.scan)


def handler_envelope(
    config: Config,
    record: Record,
    *,
    handler: str,
    recipients: list[str],
    folder: str | None = None,
    state: State | None = None,
    auth: AuthResults | None = None,
    duplicate: bool = False,
) -> Envelope:
    """The Envelope of one handler's run: RECIPIENTS of RECORD, the message in FOLDER."""
    from ..envelope import Envelope

    use_spool_caches(config.server.spool)
    state = state or State()
    return Envelope(
        queue_id=record.queue_id,
        sender=record.sender,
        recipients=recipients,
        helo=record.helo,
        remote_addr=record.remote_addr,
        remote_host=record.remote_host,
        tls=record.tls,
        handler=handler,
        config=config.settings_for(handler),
        server_config=config,
        message_path=os.path.join(folder, MESSAGE) if folder else None,
        prefix=authres_prefix(state, config.server.hostname) if folder else b"",
        auth=auth,
        verdicts=stored_verdicts(state),
        replier=send_reply,
        forwarder=forward_message,
        dnsbl=dict(item.partition("=")[::2] for item in record.dnsbl),
        duplicate=duplicate,
    )


def authenticated(auth: AuthResults | None, required: tuple[str, ...]) -> bool:
    """One of REQUIRED ("dmarc=pass", "dkim=pass"...) holds in AUTH (no results: none does)."""
    if auth is None:
        return False
    results = {name.split("_")[0].lower(): value for name, value in auth.environment().items()}
    return any(results.get(method) == result for method, _, result in (r.partition("=") for r in required))


class Delivery:
    def __init__(self, config: Config, router: Router, spool: Spool, clock: Any = time.time) -> None:
        self.config = config
        self.router = router
        self.spool = spool
        self.clock = clock
        use_spool_caches(spool.root)

    # -- checks -------------------------------------------------------------
    def authenticate(self, folder: str, record: Record, state: State) -> AuthResults | None:
        """The AuthResults of the message (computed once, then read from state.json).

        Authentication-Results bearing our authserv-id that came with the message are
        removed from the spooled copy first, whether or not any check is enabled.
        """
        checks = self.config.checks
        enabled = checks.spf or checks.dkim or checks.dmarc or checks.arc
        if not enabled and state.authres:
            return None
        stored = stored_auth(state)
        # A temperror is asked again at the next try, not a second time by the process that
        # just asked (checks before the 250, then the handlers): one DNS budget a message.
        if stored is not None and (not stored.temporary or record.queue_id in _checked_here):
            return stored
        hostname = self.config.server.hostname
        path = os.path.join(folder, MESSAGE)
        from ..checks.forged import remove_forged_results

        if remove_forged_results(path, hostname):
            log.warning("%s: removed Authentication-Results bearing our authserv-id", record.queue_id)
        results = None
        if enabled:
            from ..checks import authenticate

            results = authenticate(
                path,
                client_ip=record.remote_addr,
                helo=record.helo,
                mail_from=record.sender,
                settings=checks,
                authserv_id=hostname,
            )
            state.auth = results.to_dict()
            _checked_here.add(record.queue_id)
            if results.dns_budget:
                log.warning("%s: checks stopped: DNS budget spent (%s)", record.queue_id, results.dns_budget)
                self.remember_costly_client(record, results.dns_budget)
        state.authres = results.header_value(hostname) if results else f"{hostname}; none"
        return results

    def remember_costly_client(self, record: Record, why: str) -> None:
        """A client whose message spent the DNS budget is turned away at connect for a while
        (the per-client memory, when [limits] keeps one): its names make us query others."""
        if not self.config.turns_clients_away or not record.remote_addr:
            return
        from ..clients import ClientMemory

        ClientMemory(self.config.server.spool).punish(record.remote_addr, f"DNS budget spent: {why}")

    def checks(self, folder: str, record: Record, state: State) -> AuthResults | None:
        """authenticate() inside the checks' one exception boundary: they report, and a bug
        in them never costs a message (the handlers then see `none (checks failed)`).
        The results are written to state.json at once: a program handler's `send --reply`
        reads them there (and `queue --show` shows them)."""
        before = (state.auth, state.authres)
        try:
            results = self.authenticate(folder, record, state)
        except OSError:
            raise  # the spool's trouble (a full disk), not the checks': delivery's boundary says so
        except Exception as e:
            log.exception("%s: checks failed", record.queue_id)
            state.authres = f"{self.config.server.hostname}; none (checks failed: {type(e).__name__})"
            results = None
        if (state.auth, state.authres) != before:
            state.save(folder, durable=False)  # lost in a crash, the checks run again: no fsync
        return results

    # -- scanners -------------------------------------------------------------
    def scan(self, folder: str, record: Record, state: State) -> Verdicts | None:
        """The verdicts of the scanners `[checks]` configures (rspamd, clamd), asked once
        and kept in state.json; an `unknown` one is asked again by the next try.  None
        when no scanner is configured."""
        checks = self.config.checks
        if not (checks.rspamd or checks.clamd):
            return None
        stored = stored_verdicts(state)
        if stored is not None and (record.queue_id in _scanned_here or not stored.unknown):
            asked = (stored.spam is not None, stored.virus is not None)
            if asked == (bool(checks.rspamd), bool(checks.clamd)):  # the same scanners as now
                return stored
        from ..checks.scanners import scan

        verdicts = scan(
            os.path.join(folder, MESSAGE),
            checks,
            {
                "ip": record.remote_addr,
                "helo": record.helo,
                "sender": record.sender,
                "recipients": [r.address for r in record.recipients],
                "queue_id": record.queue_id,
                "hostname": record.remote_host,
            },
        )
        _scanned_here.add(record.queue_id)
        if verdicts.summary():
            log.info("%s: %s", record.queue_id, verdicts.summary())
        for failure in verdicts.unknown:
            scanner = failure.partition(":")[0]
            if scanner not in _failure_logged:
                _failure_logged.add(scanner)
                log.warning("%s: %s; verdict unknown, accepted as unscanned", record.queue_id, failure)
        state.scan = verdicts.to_dict()
        state.save(folder, durable=False)  # lost in a crash, the scan runs again: no fsync
        return verdicts

    def scanned(self, folder: str, record: Record) -> Verdicts | None:
        """The verdicts for a message not yet accepted (spam_reject, virus_reject)."""
        return self.scan(folder, record, State.load(folder))

    def checked(self, folder: str, record: Record) -> AuthResults | None:
        """The checks' results for a message not yet accepted (the DMARC reject policy)."""
        return self.checks(folder, record, State.load(folder))

    # -- handlers -------------------------------------------------------------
    def deliver(
        self,
        folder: str,
        *,
        inline_only: bool = False,
        state: State | None = None,
        removed_when_done: bool = False,
    ) -> dict[str, Outcome]:
        """Run the pending handlers of the message in FOLDER; outcomes of this run by handler.
        STATE: the message's, loaded by the caller (updated here in place).

        Each outcome is written to state.json, fsync'ed, as soon as it is known; except,
        REMOVED_WHEN_DONE (the caller removes the message at once when every handler is
        done), the last outcome when it leaves every handler done: the removal is then
        the durable record of it."""
        record = Record.load(folder)
        if record is None:
            raise FileNotFoundError(f"{folder}: no envelope record")
        state = State.load(folder) if state is None else state
        groups = record.groups()
        pending = [
            name
            for name in groups
            if state.status(name) not in FINAL and (not inline_only or self._is_inline(name))
        ]
        outcomes: dict[str, Outcome] = {}
        if not pending:
            return outcomes
        auth = self.checks(folder, record, state)
        self.scan(folder, record, state)
        seen, key = self.duplicates(folder)
        for name in pending:
            duplicate = bool(key) and seen.duplicate(key, name, record.queue_id)
            outcome = self.run_handler(name, groups[name], folder, record, state, auth, duplicate)
            if key and outcome.status == "done":
                seen.remember(key, name, record.queue_id)
            outcomes[name] = outcome
            entry = state.handler(name)
            entry.status, entry.last_error = outcome.status, outcome.detail
            entry.last_try, entry.recipients = self.clock(), groups[name]
            entry.attempts += 1
            if not removed_when_done or any(state.status(other) != "done" for other in groups):
                state.save(folder)
            detail = f" {outcome.detail}" if outcome.detail else ""
            shown = "failed/" if name == POSTMASTER_TO_FAILED else name
            log.info("%s: handler=%s status=%s%s", record.queue_id, shown, outcome.status, detail)
        return outcomes

    def duplicates(self, folder: str) -> tuple[Seen, str]:
        """The store of what was handled lately, and this message's key ("" when off)."""
        seen = Seen(self.config.server.spool, self.config.handlers.dedupe_days)
        if not self.config.handlers.dedupe_days:
            return seen, ""
        try:
            return seen, message_key(os.path.join(folder, MESSAGE))
        except OSError:
            return seen, ""

    def _is_inline(self, name: str) -> bool:
        handler = self.router.handlers.get(name)
        return bool(handler and handler.inline)

    def run_handler(
        self,
        name: str,
        recipients: list[str],
        folder: str,
        record: Record,
        state: State,
        auth: Any,
        duplicate: bool = False,
    ) -> Outcome:
        if name == POSTMASTER_TO_FAILED:
            return Outcome("failed", "no handler takes it (postmaster@, or a bounce to SRS: none configured)")
        handler = self.router.handlers.get(name)
        if handler is None:
            return Outcome("deferred", f"no handler named {name!r} in {self.config.handlers.dir}")
        if handler.error:
            return Outcome("deferred", handler.error)
        required = requirement(handler, self.config.settings_for(name))
        if required:
            problem = require_problem(list(required))
            if problem:
                return Outcome("deferred", f"[handler.{name}] require: {problem}")
            if not authenticated(auth, required):
                return Outcome("unauthenticated", f"REQUIRE: none of {', '.join(required)} holds")
        env = handler_envelope(
            self.config,
            record,
            handler=name,
            recipients=recipients,
            folder=folder,
            state=state,
            auth=auth,
            duplicate=duplicate,
        )
        timeout = self.config.handlers.timeout
        if handler.kind == "python":
            return run_python(handler, env, timeout)
        auth_env = auth.environment() if auth is not None else {}
        authres = state.authres or f"{self.config.server.hostname}; none"
        environment = program_environment(env, auth_env, authres)
        return run_program(handler, env, environment, os.path.join(folder, MESSAGE), env.prefix, timeout)
