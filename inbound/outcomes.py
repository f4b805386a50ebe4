"""What a handler can say besides "done": raise TempFail (try later) or Reject (refuse for good).

Handlers import them as `from mailserver import Reject, TempFail`; mailserver.py re-exports
these very classes, so the server catches what handlers raise even when it runs as a script.
"""


class TempFail(Exception):
    """Try again later: the message stays queued and `queue --run` retries it with backoff."""


class Reject(Exception):
    """Permanent refusal: 550 to the client for INLINE handlers, else the message goes to failed/."""
