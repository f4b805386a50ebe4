"""archive: keep every message in a Maildir (readable by mutt, Dovecot, `mail -f`...).

[handler.archive] settings:

    maildir = /var/mail/archive   ; default <spool>/archive; relative to the config file

Delivery is the Maildir way (qmail's maildir(5)): the message is written to tmp/ under a
unique name, fsync'ed, then renamed into new/, so a reader never sees half a message.
`Return-Path:` and `Delivered-To:` are put on top, and line endings are LF.
Copy this file into handlers/ (and add a route) to use it.
"""

import os
import time

from mailserver import TempFail

_count = 0


def handle(envelope):
    folder = maildir_path(envelope)
    try:
        deliver(folder, prefix(envelope) + envelope.raw.replace(b"\r\n", b"\n"))
    except OSError as e:
        raise TempFail(f"cannot deliver to the Maildir {folder}: {e.strerror}")


def maildir_path(envelope) -> str:
    path = envelope.config.get("maildir", "").strip() or os.path.join(envelope.spool, "archive")
    if not os.path.isabs(path) and envelope.server_config is not None:
        path = os.path.join(os.path.dirname(envelope.server_config.path), path)
    return os.path.normpath(path)


def prefix(envelope) -> bytes:
    lines = f"Return-Path: <{envelope.sender}>\n"
    lines += "".join(f"Delivered-To: {r}\n" for r in envelope.recipients)
    return lines.encode("utf-8", "replace")


def unique_name() -> str:
    """time.M<µs>P<pid>Q<n>.host, as maildir(5) describes ('/' and ':' escaped in host)."""
    import socket  # imported here: every connection loads the handlers, few call this one

    global _count
    _count += 1
    now = time.time()
    host = socket.gethostname().replace("/", "\\057").replace(":", "\\072")
    return f"{int(now)}.M{int(now % 1 * 1e6)}P{os.getpid()}Q{_count}.{host}"


def deliver(folder: str, data: bytes) -> str:
    """Write DATA into FOLDER/new atomically; the path of the new message."""
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(folder, sub), mode=0o700, exist_ok=True)
    name = unique_name()
    tmp = os.path.join(folder, "tmp", name)
    with open(tmp, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    final = os.path.join(folder, "new", name)
    os.rename(tmp, final)
    fd = os.open(os.path.join(folder, "new"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return final
