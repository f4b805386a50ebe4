"""Duplicates: the same message delivered twice (a sender's retry after a lost 250, two MX
hosts of one domain) is recognised, so a handler can tell (`envelope.duplicate`, env
`DUPLICATE=1`) and the auto-responders do not answer it again.

The key of a message is a SHA-256 over its header fields (names lower-cased, values
unfolded) and its body, leaving out the trace fields every hop adds or changes
(Received, Authentication-Results, ARC-*, Return-Path, Delivered-To, X-Original-To), so
two copies that took different paths have one key.  What was handled is remembered per
handler as an empty file `<spool>/seen/<key[:2]>/<key>.<handler>` whose mtime says when
and whose content the queue id (a retry of the same message is not its own duplicate).
`[handlers] dedupe_days` (7; 0 = off) is how long; `queue --run` sweeps older ones.

No database, no import beyond a SHA-256: this runs for every accepted message.  This
module decides nothing: handlers do, with what it reports.
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

TRACE_FIELDS = (
    b"received",
    b"authentication-results",
    b"arc-seal",
    b"arc-message-signature",
    b"arc-authentication-results",
    b"return-path",
    b"delivered-to",
    b"x-original-to",
)
CHUNK = 65536


def _sha256() -> Any:
    """A SHA-256: hashlib's when it is loaded already (the checks load it), else the
    builtin module alone (half of hashlib's import, which brings OpenSSL's too)."""
    if "hashlib" not in sys.modules:
        try:
            from _sha256 import sha256

            return sha256()
        except ImportError:  # pragma: no cover - a Python built without it
            pass
    import hashlib

    return hashlib.sha256()


def message_key(path: str) -> str:
    """The key of the spooled message at PATH (streamed: any size, constant memory)."""
    digest = _sha256()
    with open(path, "rb") as f:
        field: list[bytes] = []
        for line in iter(f.readline, b""):
            if line in (b"\r\n", b"\n"):
                break
            if line[:1] in (b" ", b"\t") and field:
                field.append(line)
                continue
            _add_field(digest, field)
            field = [line]
        _add_field(digest, field)
        digest.update(b"\0body\0")
        for chunk in iter(lambda: f.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _add_field(digest: Any, field: list[bytes]) -> None:
    if not field:
        return
    text = b"".join(field)
    name, sep, value = text.partition(b":")
    name = name.strip().lower()
    if not sep or name in TRACE_FIELDS:
        return
    digest.update(name + b":" + b" ".join(value.split()) + b"\n")


class Seen:
    """What the handlers of this spool handled lately, one file per (key, handler)."""

    def __init__(self, spool: str, days: float, clock: object = time.time) -> None:
        self.folder = os.path.join(spool, "seen")
        self.seconds = days * 86400
        self.clock = clock

    def _path(self, key: str, handler: str) -> str:
        safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in handler) or "_"
        return os.path.join(self.folder, key[:2], f"{key}.{safe}")

    def duplicate(self, key: str, handler: str, queue_id: str) -> bool:
        """Whether HANDLER handled a message of KEY, other than QUEUE_ID, within the window."""
        if not self.seconds:
            return False
        path = self._path(key, handler)
        try:
            with open(path, "rb") as f:
                first = f.read(64).strip().decode("ascii", "replace")
            age = self.clock() - os.stat(path).st_mtime  # type: ignore[operator]
        except OSError:
            return False
        return age < self.seconds and first != queue_id

    def remember(self, key: str, handler: str, queue_id: str) -> None:
        """HANDLER has handled QUEUE_ID (of KEY) now; the first copy's id is kept."""
        if not self.seconds:
            return
        path = self._path(key, handler)
        try:
            os.makedirs(os.path.dirname(path), mode=0o750, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640)
        except FileExistsError:
            os.utime(path)  # a later copy handled again: the window starts anew
            return
        except OSError:
            return  # a full disk must not turn a done handler into a failure
        with os.fdopen(fd, "w") as f:
            f.write(queue_id)

    def sweep(self) -> None:
        """Forget what is older than the window (queue --run calls this)."""
        now = self.clock()  # type: ignore[operator]
        try:
            buckets = os.listdir(self.folder)
        except OSError:
            return
        for bucket in buckets:
            folder = os.path.join(self.folder, bucket)
            for name in os.listdir(folder) if os.path.isdir(folder) else []:
                path = os.path.join(folder, name)
                try:
                    if now - os.stat(path).st_mtime >= max(self.seconds, 1):  # type: ignore[operator]
                        os.unlink(path)
                except OSError:
                    pass
