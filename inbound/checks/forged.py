"""Forged Authentication-Results removed from a spooled message, before anything reads it.

RFC 8601 section 5: fields bearing our authserv-id that arrived with the message are
forgeries (or stale); they go, whether or not any check runs.  The common message has no
Authentication-Results at all, so the header block is searched first and the parser
(authres.py) is imported only when there is something to look at.
"""

from __future__ import annotations

import os

HEAD = 256 * 1024


def remove_forged_results(path: str, authserv_id: str) -> bool:
    """Remove our-authserv-id Authentication-Results from the spooled file PATH (atomically,
    fsync'ed); True when something was removed."""
    with open(path, "rb") as f:
        head = f.read(HEAD)
    if b"authentication-results" not in head.lower():
        return False
    from .authres import remove_our_authres

    with open(path, "rb") as f:
        data = f.read()
    cleaned = remove_our_authres(data, authserv_id)
    if cleaned == data:
        return False
    tmp = path + ".clean"
    with open(tmp, "wb") as f:
        f.write(cleaned)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return True
