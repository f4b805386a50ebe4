"""`mailserver.py queue`: what waits, what failed, and doing something about it.

    queue [--list]           the deferred messages in queue/: age, tries, next try, error
    queue --list --failed    the messages in failed/: refused, or out of retries
    queue --show ID          one message: its envelope, auth results, each handler's
                             outcome and attempts, where it is and when it is tried next
    queue --retry ID...      failed/ID back into queue/ with a fresh retry window (the
                             handlers that succeeded stay done; the next --run retries)
    queue --run [--now] [-v] retry what is due (-v: say what was done and what waits)

Run as root, it works as the spool's owner (handlers never run as root, and no
root-owned file lands in the spool), unless the spool itself is root's.  The moves and
the retries themselves are delivery/queue.py's; this module prints for a person.
"""

from __future__ import annotations

import os
import re
import sys
import time

from ..config import Config
from ..delivery.queue import Queue
from ..delivery.router import Router
from ..exits import EX_CONFIG, EX_NOINPUT, EX_OK, EX_SOFTWARE
from ..spool import Record, Spool, State


def run_as_spool_owner(config: Config) -> str:
    """As root, become the owner of the spool (uid, gid, groups, HOME); "" or why not."""
    if os.geteuid() != 0:
        return ""
    try:
        owner = os.stat(config.server.spool)
    except OSError:
        return ""
    if owner.st_uid == 0:
        return ""  # a spool of root's: root it is
    import pwd

    try:
        entry = pwd.getpwuid(owner.st_uid)
        os.initgroups(entry.pw_name, owner.st_gid)
        os.setgid(owner.st_gid)
        os.setuid(owner.st_uid)
    except (KeyError, OSError) as e:
        return f"cannot become the spool's owner (uid {owner.st_uid}): {e}"
    os.environ["HOME"] = entry.pw_dir
    os.environ["USER"] = os.environ["LOGNAME"] = entry.pw_name
    return ""


def queue(
    config: Config,
    *,
    run: bool = False,
    now: bool = False,
    failed: bool = False,
    show: str | None = None,
    retry: list[str] | None = None,
    verbose: bool = False,
) -> int:
    spool = config.server.spool
    if not os.path.isdir(spool):
        print(
            f"mailserver: the spool {spool} does not exist ([server] spool in {config.path})", file=sys.stderr
        )
        return EX_CONFIG
    problem = run_as_spool_owner(config)
    if problem:
        print(f"mailserver: {problem}", file=sys.stderr)
        return EX_SOFTWARE
    delivery = Queue(config, Router(config), Spool(spool))
    if show:
        return show_message(delivery, show)
    if retry:
        return retry_messages(delivery, retry)
    if run:
        return run_queue(delivery, now=now, verbose=verbose)
    return list_messages(delivery, "failed" if failed else "queue")


def list_messages(delivery: Queue, folder: str) -> int:
    rows = delivery.list_queue(folder)
    if not rows:
        print("queue is empty" if folder == "queue" else "failed/ is empty")
        return EX_OK
    print(f"{'ID':23} {'AGE':>7} {'TRIES':>5} {'NEXT':>6} {'HANDLERS':16} RECIPIENTS / LAST ERROR")
    clock = time.time()
    for row in rows:
        wait = "-" if folder == "failed" else age(max(0, row["next_try"] - clock))
        print(
            f"{row['id']:23} {age(row['age']):>7} {row['attempts']:>5} {wait:>6} "
            f"{','.join(row['handlers']) or '-':16} {' '.join(row['recipients'])}"
        )
        if row["last_error"]:
            print(f"{'':23} {'':>7} {'':>5} {'':>6} {'':16} {row['last_error']}")
    return EX_OK


def show_message(delivery: Queue, queue_id: str) -> int:
    folder_name = delivery.spool.where(queue_id) if plain_id(queue_id) else None
    if folder_name is None:
        print(f"mailserver: no message {queue_id!r} in the spool", file=sys.stderr)
        return EX_NOINPUT
    folder = delivery.spool.path(folder_name, queue_id)
    record = Record.load(folder) or Record(queue_id, "", [])
    state = State.load(folder)
    received = "?"
    if record.received_at:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(record.received_at))
        received = f"{stamp} ({age(time.time() - record.received_at)} ago)"
    print(f"id:          {queue_id}")
    print(f"folder:      {folder_name}/")
    print(f"received:    {received}")
    print(
        f"client:      {record.remote_addr or 'unknown'} helo={record.helo or '-'} tls={record.tls or 'no'}"
    )
    print(f"sender:      <{record.sender}>")
    print(f"size:        {record.size} octets")
    for recipient in record.recipients:
        print(f"recipient:   <{recipient.address}> -> {recipient.route or '-'}")
    print(f"auth:        {state.authres or '(checks not run yet)'}")
    if state.scan is not None:
        from ..delivery.deliver import stored_verdicts

        verdicts = stored_verdicts(state)
        for name, value in verdicts.results() if verdicts else []:  # as in X-Spam-Result...
            label = "spam:" if name == "X-Spam-Result" else "virus:"
            print(f"{label:<12} {value}")
    for name in record.groups():
        entry = state.handlers.get(name)
        if entry is None:
            print(f"handler:     {name}: not run yet")
            continue
        tried = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.last_try)) if entry.last_try else "-"
        detail = f" ({entry.last_error})" if entry.last_error else ""
        print(f"handler:     {name}: {entry.status} after {entry.attempts} attempt(s), last {tried}{detail}")
    if folder_name == "queue" and state.next_try:
        print(f"next try:    in {age(max(0, state.next_try - time.time()))}")
    if state.expired:
        print(f"expired:     {state.expired}")
    return EX_OK


def retry_messages(delivery: Queue, queue_ids: list[str]) -> int:
    status = EX_OK
    for queue_id in queue_ids:
        where = delivery.spool.where(queue_id) if plain_id(queue_id) else None
        again = delivery.retry_failed(queue_id) if where == "failed" else None
        if again is None:
            print(f"mailserver: {queue_id}: not in failed/ ({where or 'no such message'})", file=sys.stderr)
            status = EX_NOINPUT
            continue
        print(f"{queue_id}: back in queue/, handlers to run again: {', '.join(again) or 'none'}")
    return status


def run_queue(delivery: Queue, *, now: bool, verbose: bool) -> int:
    results = delivery.run_queue(now_too=now)
    for result in results:
        outcomes = ", ".join(f"{name}={o.status}" for name, o in result.outcomes.items())
        print(f"{result.queue_id}: {result.folder} ({outcomes})")
    if verbose:
        waiting = delivery.list_queue()
        done = sum(1 for r in results if r.folder in ("done", "deleted"))
        failed = sum(1 for r in results if r.folder == "failed")
        deferred = sum(1 for r in results if r.folder == "queue")
        soonest = min((row["next_try"] for row in waiting), default=0.0)
        when = f"next in {age(max(0.0, soonest - time.time()))}" if waiting else "the queue is empty"
        tried = f"{len(results)} tried: {done} done, {deferred} deferred, {failed} failed"
        print(f"{tried}; {len(waiting)} waiting, {when}" if waiting else f"{tried}; {when}")
    return EX_OK


def plain_id(queue_id: str) -> bool:
    """A queue id and nothing else (no path separators, no dot files)."""
    return bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", queue_id))


def age(seconds: float) -> str:
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
