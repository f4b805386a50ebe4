"""The administrative commands: check and deliver [--dry-run] (the queue is queue.py's).

Each prints for a person on stdout, problems on stderr, and returns a sysexits status.
"""

from __future__ import annotations

import os
import sys

from ..config import Config
from ..delivery.router import POSTMASTER_TO_FAILED, Router
from ..exits import EX_CONFIG, EX_DATAERR, EX_NOUSER, EX_OK, EX_TEMPFAIL
from ..spool import Spool


def check(config: Config) -> int:
    """Validate config and every handler; print the routes table.  78 when anything is broken."""
    router = Router(config)
    handlers = router.handlers
    problems = list(router.problems)
    for pattern, name in config.routes:
        if name not in handlers:
            problems.append(f"{config.path}: [routes] {pattern}: no handler named {name!r}")
    if config.handlers.catchall and config.handlers.catchall not in handlers:
        problems.append(f"{config.path}: [handlers] catchall: no handler named {config.handlers.catchall!r}")
    bounces = config.forward.bounces
    if bounces and bounces not in handlers:
        problems.append(f"{config.path}: [forward] bounces: no handler named {bounces!r}")
    for name in config.handler_config:
        if name not in handlers:
            print(f"note: [handler.{name}] configures a handler that is not installed", file=sys.stderr)
    for name in sorted(handlers):
        missing = router.unconfigured(name)
        if missing:  # not broken: that handler's mail waits (451) until it is configured
            print(
                f"warning: [handler.{name}] {', '.join(missing)} not set in {config.path} "
                f"(required by {handlers[name].path}): mail to {name}@ is deferred (451) until then",
                file=sys.stderr,
            )
    from ..delivery.router import require_problem, requirement

    for name, handler in sorted(handlers.items()):
        required = requirement(handler, config.settings_for(name))
        problem = require_problem(list(required)) if required else ""
        if problem:
            problems.append(f"{config.path}: [handler.{name}] require: {problem}")
    problems += _environment_problems(config)
    for note in _notes(config):
        print(f"note: {note}", file=sys.stderr)
    print(f"config:   {config.path}")
    print(f"domains:  {', '.join(config.server.domains)}")
    print(f"spool:    {config.server.spool}")
    print(f"handlers: {config.handlers.dir}")
    print()
    print(f"{'ADDRESS PATTERN':40} {'HANDLER':16} {'KIND':8} NOTE")
    for pattern, name in config.routes:
        print(f"{pattern:40} {name:16} {_kind(handlers, name):8} [routes]")
    for name, handler in sorted(handlers.items()):
        for pattern in handler.addresses:
            print(f"{pattern:40} {name:16} {handler.kind:8} ADDRESSES{' INLINE' if handler.inline else ''}")
    for name, handler in sorted(handlers.items()):
        note = handler.error or ("INLINE" if handler.inline else "")
        for domain in config.server.domains:
            print(f"{name + '[+*]@' + domain:40} {name:16} {handler.kind:8} {note}")
    postmaster = "postmaster" if "postmaster" in handlers else config.handlers.catchall or "(failed/)"
    print(f"{'postmaster@<each domain>':40} {postmaster:16}")
    if config.forward.srs_domain:
        print(f"{'SRS0=*@' + config.forward.srs_domain + ' (bounces)':40} {bounces or '(failed/)':16}")
    print(f"{'*@<each domain> (anything else)':40} {config.handlers.catchall or '(refused 550 5.1.1)':16}")
    for problem in problems:
        print(f"mailserver: {problem}", file=sys.stderr)
    return EX_CONFIG if problems else EX_OK


def _environment_problems(config: Config) -> list[str]:
    """What the running user would hit: the spool, the log target, TLS files, the reply transport."""
    problems = []
    spool = config.server.spool
    if not os.path.isdir(spool):
        problems.append(
            f"{config.path}: [server] spool: {spool} does not exist (create it for the server's user)"
        )
    elif not os.access(spool, os.W_OK | os.X_OK):
        problems.append(f"{config.path}: [server] spool: {spool} is not writable by this user")
    from .. import log

    problem = log.target_problem(config.server.log)
    if problem:
        problems.append(f"{config.path}: [server] log: {problem}")
    if config.tls.certificate:
        from ..smtp.tls import make_context

        try:
            make_context(config.tls.certificate, config.tls.key)
        except Exception as e:  # OSError, ssl.SSLError: the server would not offer STARTTLS
            reason = getattr(e, "strerror", None) or str(e)
            files = f"{config.tls.certificate} / {config.tls.key}"
            problems.append(
                f"{config.path}: [tls] certificate/key: {files}: {reason} (STARTTLS would not be offered)"
            )
    problems += _transport_problems(config)
    if config.reply.dkim_key:
        try:
            with open(config.reply.dkim_key, "rb") as f:
                f.read(1)
        except OSError as e:  # every signed reply and forward would be deferred
            problems.append(f"{config.path}: [reply] dkim_key: {config.reply.dkim_key}: {e.strerror}")
    return problems


def _transport_problems(config: Config) -> list[str]:
    reply = config.reply
    where = f"{config.path}: [reply]"
    if reply.transport == "sendmail":
        import shlex
        import shutil

        try:
            argv = shlex.split(reply.sendmail)
        except ValueError as e:
            return [f"{where} sendmail: {e}"]
        if not argv:
            return [f"{where} sendmail: empty command"]
        if not shutil.which(argv[0]):
            return [
                f"{where} sendmail: {argv[0]} not found (install an MTA, or use transport = smtp, mx, outbox)"
            ]
    if reply.transport == "smtp" and not reply.smtp_host:
        return [f"{where} smtp_host: empty, but transport = smtp needs a smarthost"]
    if reply.transport == "outbox":
        folder = reply.outbox
        existing = folder
        while not os.path.exists(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing)
        if not os.access(existing, os.W_OK | os.X_OK):
            return [f"{where} outbox: {folder} is not writable by this user"]
    return []


def _notes(config: Config) -> list[str]:
    """Things that are not errors but surprise people: scripts without +x."""
    notes = []
    folder = config.handlers.dir
    for filename in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, filename)
        if filename.startswith(("_", ".")) or filename.endswith(".py") or not os.path.isfile(path):
            continue
        if not os.access(path, os.X_OK):
            with open(path, "rb") as f:
                if f.read(2) == b"#!":
                    notes.append(f"{path}: a script without the executable bit is not a handler (chmod +x)")
    return notes


def _kind(handlers: dict, name: str) -> str:
    return handlers[name].kind if name in handlers else "MISSING"


def deliver(config: Config, sender: str, recipients: list[str], file: str, *, dry_run: bool) -> int:
    """A message through routing, checks and handlers without SMTP."""
    router = Router(config)
    routes = [router.route(r) for r in recipients]
    refused = [r for r in routes if not r.accepted]
    for route in refused:
        print(f"mailserver: <{route.address}>: refused ({route.refusal.replace('_', ' ')})", file=sys.stderr)
    if dry_run:
        return _dry_run(config, router, sender, routes) or (EX_NOUSER if refused else EX_OK)
    if refused:
        return EX_NOUSER
    data = sys.stdin.buffer.read() if file == "-" else open(file, "rb").read()
    data = data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    from .queue import run_as_spool_owner

    problem = run_as_spool_owner(config)  # read as who asked; handlers never run as root
    if problem:
        print(f"mailserver: {problem}", file=sys.stderr)
        return EX_TEMPFAIL
    from ..delivery.queue import Queue
    from ..smtp.received import received_header

    spool = Spool(config.server.spool)
    incoming = spool.receive()
    incoming.write(
        received_header(hostname=config.server.hostname, queue_id=incoming.queue_id, via="deliver")
    )
    incoming.write(data)
    incoming.finish(sender, [{"address": r.address, "route": r.handler} for r in routes])
    incoming.commit()
    try:
        result = Queue(config, router, spool).deliver_queued(incoming.queue_id)
    finally:
        incoming.release()
    for name, outcome in result.outcomes.items():
        print(f"{incoming.queue_id}: {name}: {outcome.status} {outcome.detail}".rstrip())
    statuses = {o.status for o in result.outcomes.values()}
    if "deferred" in statuses:
        return EX_TEMPFAIL
    if "failed" in statuses:
        return EX_DATAERR
    return EX_OK


def _dry_run(config: Config, router: Router, sender: str, routes: list) -> int:
    from ..delivery.deliver import handler_envelope
    from ..delivery.runner import program_environment
    from ..spool import Recipient, Record

    record = Record("DRY-RUN", sender, [Recipient(r.address, r.handler) for r in routes if r.accepted])
    for route in routes:
        if route.accepted:
            print(f"route: {route.address} -> {route.handler} ({route.via})")
    for name, addresses in record.groups().items():
        if name == POSTMASTER_TO_FAILED:
            print("would move the message to failed/ (postmaster@ or an SRS bounce, no handler)")
            continue
        handler = router.handlers[name]
        print(f"handler: {name} ({handler.kind}{', INLINE' if handler.inline else ''}) {handler.path}")
        envelope = handler_envelope(config, record, handler=name, recipients=addresses)
        if handler.kind == "python":
            print(f"  envelope.config = {envelope.config!r}")
        else:
            print(f"  cwd: {os.path.dirname(handler.path)}")
            print(f"  timeout: {config.handlers.timeout:g} s")
            for key, value in sorted(program_environment(envelope, {}, "(checks not run)").items()):
                print(f"  {key}={value}")
    print("dry run: nothing was run")
    return EX_OK
