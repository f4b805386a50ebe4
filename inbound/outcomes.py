"""What a handler run can come to: done, deferred or failed, and the exceptions that say so.

Handlers import `from mailserver import Reject, TempFail` (and ForwardRefused); mailserver.py re-exports these
very classes, so the server catches what handlers raise even when it runs as a script.
`Outcome` is what delivery records per handler; `HandlerTimeout` is what the alarm raises
when a Python handler runs past `[handlers] timeout`.

This module imports nothing.
"""


class TempFail(Exception):
    """Try again later: the message stays queued and `queue --run` retries it with backoff."""


class Reject(Exception):
    """Permanent refusal: 550 to the client for INLINE handlers, else the message goes to failed/."""


class ForwardRefused(Reject):
    """envelope.forward() / send --forward will not (or cannot ever) forward this message: a
    loop, our own domain, no [forward] settings, or the destination refused it for good.
    A Reject: uncaught, the message goes to failed/ (retrying cannot help)."""


class HandlerTimeout(BaseException):
    """Raised by SIGALRM in a Python handler; a BaseException so that no `except Exception`
    (the handler's own, or the Envelope's parse guards) can swallow it."""


#: The statuses after which a handler is not run again (an Outcome is one of these or
#: "deferred"; "unauthenticated" is a refusal by REQUIRE, and goes to failed/ as "failed").
FINAL = ("done", "failed", "unauthenticated")


class Outcome:
    """How one handler run went: a status and a one-line detail for logs and state.json."""

    __slots__ = ("status", "detail")

    def __init__(self, status: str, detail: str = "") -> None:
        self.status = status  # "done" | "deferred" | "failed" | "unauthenticated"
        self.detail = detail

    def __repr__(self) -> str:
        return f"Outcome({self.status!r}, {self.detail!r})"
