"""The one outbound part: replies from handlers (auto-responders), RFC 3834-safe, built
correctly, sent by the [reply] transport.

`send_reply(envelope, body, ...)` is what `Envelope.reply()` calls.  It first asks
`refusal(envelope)` whether a reply may be sent at all, and sends none (returns False and
logs why) when RFC 3834 and common sense say not to:

* the envelope sender is <> (a bounce), or not a plain address, or its local part is a
  robot's: MAILER-DAEMON, postmaster, owner-*, *-request, *-bounces, listserv,
  majordomo, noreply / no-reply / do-not-reply ... (the list vacation(1) and Sieve
  vacation implementations keep);
* the message says it is automatic: `Auto-Submitted` other than `no`, `Precedence:
  bulk|list|junk`, any `List-*` header (RFC 2369/2919), `X-Auto-Response-Suppress`,
  a delivery or disposition report (multipart/report), or our own reply marker;
* none of our addresses (the envelope recipients routed to the handler, and `[reply]
  from`) is in To, Cc, Bcc, Resent-To, Resent-Cc or Resent-Bcc (RFC 3834 §2: we were
  Bcc'ed or reached through a list or an alias);
* `[reply] require_auth = yes` and neither SPF passed nor a DKIM signature passed whose
  d= aligns (same organisational domain) with the envelope sender's domain: the address
  the reply goes to must be authenticated, or we would send backscatter;
* this handler already answered this sender in the last REPLY_INTERVAL seconds (one a
  day; state in `<spool>/replies/<handler>.json` under flock, as every connection is a
  process of its own).

The reply goes to the envelope sender (RFC 3834 §4, not From or Reply-To), from `[reply]
from` (else the address the mail was sent to), with `Re:` once, In-Reply-To and
References, `Auto-Submitted: auto-replied`, our marker header, Date and Message-ID, and
a null MAIL FROM for the smtp and mx transports (RFC 3834 §3.3: nobody answers it).
With dkim_domain, dkim_selector and dkim_key set it is DKIM-signed (RSA PEM key, or an
Ed25519 key as dkimpy writes it).  It leaves by the `[reply] transport`: outbox,
sendmail, smtp or mx (transports.py says how each works).

A temporary failure (4xx, no connection, a time-out, a sendmail exit status other than
a permanent one) raises TempFail so the queue tries the handler again; a permanent one
(5xx) is logged and send_reply returns False, since retrying cannot help.

The rooms: rules.py (may we answer?), compose.py (the message, signed), ratelimit.py
(one reply per sender per day), transports.py (how it leaves); forward.py resends a
message as received (SRS, ARC, DKIM) by the same transports.  This package is imported
only when a handler replies; its heavy imports are inside the functions.  It types the
message it answers against `rules.ReplyContext`, not the Envelope class.
"""

from __future__ import annotations

from .. import log
from .compose import build, message_bytes, sign
from .ratelimit import REPLY_INTERVAL, RateLimit
from .rules import refusal
from .transports import TRANSPORTS, PermanentFailure

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

    from .rules import ReplyContext

__all__ = ["PermanentFailure", "Result", "reply", "send_reply"]


class Result:
    """What became of one reply: sent, or why not."""

    __slots__ = ("sent", "detail")

    def __init__(self, sent: bool, detail: str) -> None:
        self.sent = sent
        self.detail = detail

    def __repr__(self) -> str:
        return f"Result(sent={self.sent!r}, detail={self.detail!r})"


def send_reply(envelope: ReplyContext, body: str, **options: Any) -> bool:
    """Answer ENVELOPE's sender with BODY; False (and a log line) when no reply may or could be
    sent.  OPTIONS are those of reply(); raises TempFail when the transport fails temporarily."""
    return reply(envelope, body, **options).sent


def reply(
    envelope: ReplyContext,
    body: str,
    *,
    subject: str | None = None,
    sender: str | None = None,
    html: str | None = None,
    attachments: Iterable[Any] | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
) -> Result:
    """Send a reply and say how it went: Result(sent, detail).

    subject: default "Re: <original subject>"; sender: the From address (default `[reply]
    from`, else the recipient); html: an HTML alternative; attachments: objects with
    filename, content_type, data (an `envelope.attachments` item) or (filename, data[,
    content_type]) tuples; headers: extra header fields (not To/Cc/Bcc/From/Auto-Submitted).
    """
    who = f"{envelope.queue_id or '-'}: reply of {envelope.handler or 'handler'}"
    to = envelope.sender
    config = envelope.server_config
    if config is None:
        return _not_sent(who, to, "no server config: no [reply] settings to send with")
    reason = refusal(envelope)
    if reason:
        return _not_sent(who, to, reason)
    message = build(
        envelope, body, subject=subject, sender=sender, html=html, attachments=attachments, headers=headers
    )
    data = sign(message_bytes(message), config)
    limiter = RateLimit(config.server.spool, envelope.handler)
    stamp = limiter.reserve(to)
    if stamp is None:
        return _not_sent(who, to, f"already answered within {REPLY_INTERVAL // 3600} hours")
    transport = config.reply.transport
    try:
        TRANSPORTS[transport](data, "", to, config)
    except PermanentFailure as e:
        log.warning("%s to %s failed for good via %s: %s", who, to, transport, e)
        return Result(False, f"failed: {e}")
    except BaseException:
        limiter.release(to, stamp)  # it will be tried again: let that try send
        raise
    log.info("%s sent to %s via %s (%s)", who, to, transport, message["Message-ID"])
    return Result(True, f"sent to {to} via {transport}")


def _not_sent(who: str, to: str, reason: str) -> Result:
    log.info("%s not sent to %s: %s", who, to or "<>", reason)
    return Result(False, reason)
