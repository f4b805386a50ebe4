"""The spool: where a message lives from its first byte until its handlers are done.

Layout under `[server] spool` (SPEC §6); each message is one folder named by its queue id:

    incoming/ID/   being received: `message` (our Received: + the data as it came, CRLF)
                   and `envelope.json` (sender, recipients, client, ...)
    queue/ID/      accepted: the final 250 was or is about to be sent; `state.json` keeps
                   each handler's outcome and the attempt history
    done/ID/       handled, kept for `[handlers] keep_done` days
    failed/ID/     refused by a handler or out of retries; never deleted by us

A message moves between folders by one atomic rename() of its folder, after fsync of its
files and of the folder, so whatever is killed when, an accepted message is in exactly one
place.  Before the final 250 that is four fsyncs: the message, envelope.json, the
message's folder, then queue/ after the rename.  After it, each handler's outcome is two
(state.json and its folder), except the last one with `keep_done = 0`: the message's
removal, a rename into incoming/ and its fsync, is then the record.  Whoever works on a
message holds flock() on its folder; the lock follows the folder across renames, so
`queue --run` never runs a message another process holds.

Two typed records live beside each message: `Record` (envelope.json, written once when
the data is complete: sender, recipients and their routes, the client) and `State`
(state.json, rewritten as delivery goes: the checks' results, each handler's outcome
and attempts, the retry schedule).  Both are plain JSON on disk, read back leniently:
a missing or foreign key takes its default.

This module knows files, not SMTP and not handlers.
"""

from __future__ import annotations

import fcntl
import os
import time

TYPE_CHECKING = False  # typing costs start-up time; names for type checkers only
if TYPE_CHECKING:
    from typing import IO, Any

FOLDERS = ("incoming", "queue", "done", "failed")
MESSAGE = "message"
ENVELOPE = "envelope.json"
STATE = "state.json"
_counter = 0


def new_queue_id() -> str:
    """Unique across processes (pid), sortable by time: 13 hex digits of µs, pid, counter."""
    global _counter
    _counter += 1
    return f"{time.time_ns() // 1000:013X}{os.getpid():06X}{_counter:02X}"


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def dumps(data: Any) -> str:
    """DATA as one line of JSON, keys sorted: json.dumps without `indent` is the C encoder;
    json.dump, or any indent, is the pure-Python one (~10x the time on a state.json)."""
    import json

    return json.dumps(data, sort_keys=True) + "\n"


def write_json(path: str, data: Any, durable: bool = True) -> None:
    """Replace PATH atomically with DATA as JSON; DURABLE: fsync'ed (file and folder)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(dumps(data))
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if durable:
        fsync_dir(os.path.dirname(path))


def read_json(path: str, default: Any = None) -> Any:
    import json

    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default


class Recipient:
    """One accepted recipient and the handler the router chose for it at RCPT time."""

    __slots__ = ("address", "route")

    def __init__(self, address: str, route: str = "") -> None:
        self.address = address
        self.route = route

    def __repr__(self) -> str:
        return f"Recipient({self.address!r}, route={self.route!r})"


class Record:
    """envelope.json: what the SMTP transaction (or `deliver`) said about one message."""

    TEXT = ("queue_id", "sender", "helo", "body", "remote_addr", "remote_port", "remote_host", "tls")
    FLAGS = ("esmtp", "smtputf8")

    def __init__(self, queue_id: str, sender: str, recipients: list[Recipient], **fields: Any) -> None:
        self.queue_id = queue_id
        self.sender = sender
        self.recipients = recipients
        self.helo = str(fields.get("helo", ""))
        self.esmtp = bool(fields.get("esmtp", False))
        self.smtputf8 = bool(fields.get("smtputf8", False))
        self.body = str(fields.get("body", ""))
        self.remote_addr = str(fields.get("remote_addr", ""))
        self.remote_port = str(fields.get("remote_port", ""))
        self.remote_host = str(fields.get("remote_host", ""))
        self.tls = str(fields.get("tls", ""))
        self.received_at = float(fields.get("received_at", 0.0) or 0.0)
        self.size = int(fields.get("size", 0) or 0)
        self.dnsbl = [str(item) for item in fields.get("dnsbl") or []]  # "zone=code" listings

    def groups(self) -> dict[str, list[str]]:
        """Recipient addresses by route (handler name), in order, each address once."""
        groups: dict[str, list[str]] = {}
        for recipient in self.recipients:
            addresses = groups.setdefault(recipient.route, [])
            if recipient.address not in addresses:
                addresses.append(recipient.address)
        return groups

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: getattr(self, name) for name in self.TEXT + self.FLAGS}
        data["recipients"] = [{"address": r.address, "route": r.route} for r in self.recipients]
        data["received_at"] = self.received_at
        data["size"] = self.size
        if self.dnsbl:
            data["dnsbl"] = self.dnsbl
        return data

    @classmethod
    def from_json(cls, data: Any) -> Record:
        data = data if isinstance(data, dict) else {}
        recipients = []
        for item in data.get("recipients") or []:
            if isinstance(item, dict):
                recipients.append(Recipient(str(item.get("address", "")), str(item.get("route", "") or "")))
            else:
                recipients.append(Recipient(str(item)))
        fields = {k: v for k, v in data.items() if k not in ("queue_id", "sender", "recipients")}
        return cls(str(data.get("queue_id", "")), str(data.get("sender", "")), recipients, **fields)

    @classmethod
    def load(cls, folder: str) -> Record | None:
        data = read_json(os.path.join(folder, ENVELOPE))
        return None if data is None else cls.from_json(data)

    def save(self, folder: str) -> None:
        write_json(os.path.join(folder, ENVELOPE), self.to_json())

    def create(self, folder: str) -> None:
        """Write envelope.json, new, in a folder not yet accepted, fsync'ed (the folder's own
        fsync is the caller's): no temporary file, nobody reads it before the rename."""

        fd = os.open(os.path.join(folder, ENVELOPE), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(dumps(self.to_json()))
            f.flush()
            os.fsync(f.fileno())


class HandlerState:
    """One handler's progress on one message."""

    __slots__ = ("status", "attempts", "last_error", "last_try", "recipients")

    def __init__(self, data: Any = None) -> None:
        data = data if isinstance(data, dict) else {}
        self.status = str(data.get("status", "new"))  # new | done | deferred | failed
        self.attempts = int(data.get("attempts", 0) or 0)
        self.last_error = str(data.get("last_error", "") or "")
        self.last_try = float(data.get("last_try", 0.0) or 0.0)
        self.recipients = [str(r) for r in data.get("recipients") or []]

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class State:
    """state.json: the checks' results, each handler's outcome, the retry schedule."""

    def __init__(self, data: Any = None) -> None:
        data = dict(data) if isinstance(data, dict) else {}
        handlers = data.pop("handlers", None)
        self.handlers = (
            {str(name): HandlerState(value) for name, value in (handlers or {}).items()}
            if isinstance(handlers, dict)
            else {}
        )
        self.auth: dict[str, Any] | None = data.pop("auth", None)  # AuthResults.to_dict()
        self.authres = str(data.pop("authres", "") or "")  # the Authentication-Results value
        self.scan: dict[str, Any] | None = data.pop("scan", None)  # scanners.Verdicts.to_dict()
        self.deferrals = int(data.pop("deferrals", 0) or 0)
        self.next_try = float(data.pop("next_try", 0.0) or 0.0)
        self.expired = str(data.pop("expired", "") or "")
        self.retry_from = float(data.pop("retry_from", 0.0) or 0.0)  # `queue --retry`: a fresh window
        self.extra = data  # keys of other versions, kept as they were

    def handler(self, name: str) -> HandlerState:
        return self.handlers.setdefault(name, HandlerState())

    def status(self, name: str) -> str:
        entry = self.handlers.get(name)
        return entry.status if entry else "new"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.extra)
        data["handlers"] = {name: entry.to_json() for name, entry in self.handlers.items()}
        if self.auth is not None:
            data["auth"] = self.auth
        if self.authres:
            data["authres"] = self.authres
        if self.scan is not None:
            data["scan"] = self.scan
        if self.deferrals:
            data["deferrals"] = self.deferrals
        if self.next_try:
            data["next_try"] = self.next_try
        if self.expired:
            data["expired"] = self.expired
        if self.retry_from:
            data["retry_from"] = self.retry_from
        return data

    @classmethod
    def load(cls, folder: str) -> State:
        return cls(read_json(os.path.join(folder, STATE), {}))

    def save(self, folder: str, durable: bool = True) -> None:
        """Write state.json atomically; DURABLE (the default): fsync'ed, as a handler's
        outcome must be.  What can be computed again (the checks' results) need not be."""
        write_json(os.path.join(folder, STATE), self.to_json(), durable)


class Spool:
    def __init__(self, root: str) -> None:
        self.root = root

    def folder(self, name: str) -> str:
        return os.path.join(self.root, name)

    def path(self, folder: str, queue_id: str, *name: str) -> str:
        return os.path.join(self.root, folder, queue_id, *name)

    def ensure(self) -> None:
        for name in FOLDERS:
            os.makedirs(self.folder(name), mode=0o750, exist_ok=True)

    def receive(self) -> Incoming:
        """Start a new message in incoming/ (creating the spool folders if needed)."""
        ensured = False
        while True:
            queue_id = new_queue_id()
            try:
                os.mkdir(self.path("incoming", queue_id), 0o750)
                return Incoming(self, queue_id)
            except FileExistsError:
                continue
            except FileNotFoundError:  # a new spool: its folders, once
                if ensured:
                    raise
                self.ensure()
                ensured = True

    def ids(self, folder: str) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.folder(folder)) if not n.startswith("."))
        except FileNotFoundError:
            return []

    def where(self, queue_id: str) -> str | None:
        for folder in FOLDERS:
            if os.path.isdir(self.path(folder, queue_id)):
                return folder
        return None

    def move(self, queue_id: str, src: str, dst: str) -> None:
        """One rename of the message's folder, durable once DST is fsync'ed: the rename is
        one metadata transaction (ext4, XFS, btrfs journal both folders together), so
        SRC's fsync would add nothing."""
        try:
            os.rename(self.path(src, queue_id), self.path(dst, queue_id))
        except FileNotFoundError:  # DST/ itself missing (or SRC: then the rename says so again)
            os.makedirs(self.folder(dst), mode=0o750, exist_ok=True)
            os.rename(self.path(src, queue_id), self.path(dst, queue_id))
        fsync_dir(self.folder(dst))

    def remove(self, folder: str, queue_id: str) -> None:
        top = self.path(folder, queue_id)
        for name in os.listdir(top):
            os.unlink(os.path.join(top, name))
        os.rmdir(top)

    def discard(self, folder: str, queue_id: str) -> None:
        """Remove a handled message in one durable step (the record that its handlers are
        done): one rename back into incoming/, fsync'ed (what is there was never
        acknowledged, and `queue --run` sweeps what a crash leaves), then the deletion."""
        self.move(queue_id, folder, "incoming")
        self.remove("incoming", queue_id)

    def lock(self, folder: str, queue_id: str, wait: bool = False) -> int | None:
        """flock the message's folder; an fd to keep (the lock), or None when someone has it
        (WAIT: block until they let go)."""
        try:
            fd = os.open(self.path(folder, queue_id), os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            os.close(fd)
            return None
        return fd


class Incoming:
    """A message being received: write() its bytes, then commit() or abort()."""

    def __init__(self, spool: Spool, queue_id: str) -> None:
        self.spool = spool
        self.queue_id = queue_id
        self.dir = spool.path("incoming", queue_id)
        self.lock_fd = spool.lock("incoming", queue_id, wait=True)  # tidy() holds it only briefly
        fd = os.open(os.path.join(self.dir, MESSAGE), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        self.file: IO[bytes] = os.fdopen(fd, "wb", buffering=256 * 1024)
        self.size = 0

    @property
    def message_path(self) -> str:
        return os.path.join(self.dir, MESSAGE)

    def write(self, data: bytes) -> None:
        self.file.write(data)
        self.size += len(data)

    def finish(self, sender: str, recipients: list[dict[str, str]], **client: Any) -> Record:
        """Everything on disk and fsync'ed in incoming/ (still not accepted): the message and
        its envelope record (CLIENT: helo, remote_addr... as the session knows them)."""
        record = Record(
            self.queue_id,
            sender,
            [Recipient(r["address"], r.get("route", "")) for r in recipients],
            received_at=time.time(),
            size=self.size,
            **client,
        )
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        record.create(self.dir)
        fsync_dir(self.dir)  # both names in the folder, before its rename into queue/
        return record

    def commit(self) -> None:
        """Accept: one atomic rename into queue/; after this the 250 may be sent."""
        self.spool.move(self.queue_id, "incoming", "queue")
        self.dir = self.spool.path("queue", self.queue_id)

    def abort(self) -> None:
        try:
            self.file.close()
        except OSError:
            pass
        try:
            self.spool.remove("incoming", self.queue_id)
        except OSError:
            pass
        self.release()

    def release(self) -> None:
        if self.lock_fd is not None:
            os.close(self.lock_fd)
            self.lock_fd = None
