"""The Policy: what the SMTP session asks before it answers.

Per recipient, the DNS blocklists' word (a listed client gets 554 5.7.1 for everyone
but postmaster@ when `dnsbl_reject`), then the router's decision (our domain? a handler
for it?); per message, just before the final reply, the DMARC reject policy (`[checks]
dmarc_reject`), the scanners' verdicts (`spam_reject`, `virus_reject`: 550 5.7.1) and
INLINE handlers.  Only in those cases are the checks, scanners and handlers loaded
before the 250; otherwise a session imports nothing beyond the router.

The policy decides; it keeps no state of its own (the checks' results are delivery's,
in state.json) and never writes to the client: the session does, from the Decision.
"""

from __future__ import annotations

from . import log
from .config import Config
from .delivery.router import Router
from .spool import Incoming, Record, Spool

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .smtp.transaction import Client


class Decision:
    """A policy's answer to the session: a reply name, its fields, and for an accepted
    recipient the route (handler name) to remember with it."""

    __slots__ = ("reply", "fields", "route")

    def __init__(self, reply: str, fields: dict[str, Any] | None = None, route: str | None = None) -> None:
        self.reply = reply
        self.fields = fields or {}
        self.route = route

    def __repr__(self) -> str:
        return f"Decision({self.reply!r}, {self.fields!r}, route={self.route!r})"


class Policy:
    """The session's policy: route recipients; DMARC reject and INLINE handlers before the 250."""

    def __init__(self, config: Config, router: Router, spool: Spool, client: Client | None = None) -> None:
        self.config = config
        self.client = client
        self.router = router
        self.spool = spool
        self.folder_logged = False

    @property
    def default_domain(self) -> str:
        return self.router.default_domain

    def decide_recipient(self, address: str, domain: str) -> Decision:
        client = self.client
        if client and client.dnsbl and self.config.checks.dnsbl_reject and self.router.is_ours(domain):
            if address.rpartition("@")[0].lower() != "postmaster":  # RFC 5321 4.5.1: always
                zone, _, code = client.dnsbl[0].partition("=")
                fields = {"address": address, "client": client.addr, "zone": zone, "code": code}
                return Decision("dnsbl_listed", fields)
        route = self.router.route(address)
        if route.accepted:
            return Decision("recipient_ok", route=route.handler)
        if route.refusal == "not_our_domain":
            return Decision("not_our_domain", {"address": address, "domain": domain})
        if route.refusal == "handler_unavailable" and self.router.folder_error:
            if not self.folder_logged:  # one line per connection, not one per recipient
                log.error("%s: every local address deferred (451)", self.router.folder_error)
                self.folder_logged = True
        elif route.refusal == "handler_unavailable":
            log.warning(
                "<%s>: handler %s unavailable: %s",
                address,
                route.handler,
                self.router.why_unavailable(route.handler),
            )
        return Decision(route.refusal, {"address": address})

    def decide_message(self, incoming: Incoming, record: Record) -> Decision | None:
        names = {r.route for r in record.recipients}
        inline = any(self.router.handlers.get(n) and self.router.handlers[n].inline for n in names)
        checks = self.config.checks
        scan_first = (checks.rspamd and checks.spam_reject) or (checks.clamd and checks.virus_reject)
        if not inline and not checks.dmarc_reject and not scan_first:
            return None  # the common case: nothing to decide before the 250, nothing imported
        from .delivery.deliver import Delivery

        delivery = Delivery(self.config, self.router, self.spool)
        if checks.dmarc_reject:
            auth = delivery.checked(incoming.dir, record)
            if auth is not None and auth.dmarc_rejects():
                return Decision("dmarc_reject", {"domain": getattr(auth.dmarc, "from_domain", "")})
        if scan_first:
            verdicts = delivery.scanned(incoming.dir, record)
            virus = verdicts.virus if verdicts else None
            if checks.virus_reject and virus and virus.status == "infected":
                log.info("%s: refused: virus %s (clamd)", record.queue_id, virus.name)
                return Decision("virus_reject", {"virus": virus.name})
            spam = verdicts.spam if verdicts else None
            if checks.spam_reject and spam and spam.action == "reject":
                log.info("%s: refused: spam, score %.2f (rspamd)", record.queue_id, spam.score or 0)
                return Decision("spam_reject", {"score": f"{spam.score or 0:.2f}"})
        if inline:
            outcomes = delivery.deliver(incoming.dir, inline_only=True)
            for outcome in outcomes.values():
                if outcome.status in ("failed", "unauthenticated"):
                    return Decision("handler_refused", {"why": outcome.detail})
            for outcome in outcomes.values():
                if outcome.status == "deferred":
                    return Decision("handler_deferred", {"why": outcome.detail})
        return None
