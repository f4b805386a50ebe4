"""postmaster@ every local domain (RFC 5321 4.5.1): keep the mail in a Maildir under the spool.

Read it with any Maildir reader, e.g. `mutt -f /var/spool/mailserver/postmaster`.
Set `[handler.postmaster] maildir = /path` to keep it elsewhere.
"""

import os
import time


def handle(envelope):
    import socket  # here, not at the top: every connection loads every handler module

    maildir = envelope.config.get("maildir") or os.path.join(envelope.spool, "postmaster")
    for sub in ("tmp", "new", "cur"):
        os.makedirs(os.path.join(maildir, sub), mode=0o750, exist_ok=True)
    name = f"{time.time_ns()}.P{os.getpid()}Q{envelope.queue_id}.{socket.gethostname()}"
    tmp = os.path.join(maildir, "tmp", name)
    with open(tmp, "xb") as f:
        f.write(envelope.raw.replace(b"\r\n", b"\n"))
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, os.path.join(maildir, "new", name))
