"""The Gate: what the SMTP session asks before it answers.

Per recipient, the router's decision (our domain? a handler for it?); per message, just
before the final reply, the DMARC reject policy (`[checks] dmarc_reject`) and INLINE
handlers.  Only in those two cases are the checks and handlers loaded before the 250;
otherwise a session imports nothing beyond the router.
"""

from __future__ import annotations

import os

from . import log
from .config import Config
from .replies import Decision
from .router import Router
from .spool import STATE, Incoming, Spool, read_json

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class Gate:
    """The session's policy: route recipients; DMARC reject and INLINE handlers before the 250."""

    def __init__(self, config: Config, router: Router, spool: Spool) -> None:
        self.config = config
        self.router = router
        self.spool = spool

    @property
    def default_domain(self) -> str:
        return self.router.default_domain

    def decide_recipient(self, address: str, domain: str) -> Decision:
        route = self.router.route(address)
        if route.accepted:
            return Decision("recipient_ok", route=route.handler)
        if route.refusal == "not_our_domain":
            return Decision("not_our_domain", {"address": address, "domain": domain})
        if route.refusal == "handler_unavailable":
            log.warning(
                "<%s>: handler %s unavailable: %s",
                address,
                route.handler,
                getattr(self.router.handlers.get(route.handler), "error", "missing"),
            )
        return Decision(route.refusal, {"address": address})

    def decide_message(self, incoming: Incoming, envelope: dict[str, Any]) -> Decision | None:
        names = {r.get("route", "") for r in envelope["recipients"]}
        inline = any(self.router.handlers.get(n) and self.router.handlers[n].inline for n in names)
        if not inline and not self.config.checks.dmarc_reject:
            return None  # the common case: nothing to decide before the 250, nothing imported
        from .delivery import Delivery

        delivery = Delivery(self.config, self.router, self.spool)
        if self.config.checks.dmarc_reject:
            state = read_json(os.path.join(incoming.dir, STATE), {}) or {}
            try:
                auth = delivery.authenticate(incoming.dir, envelope, state)
            except Exception as e:
                log.error("%s: checks failed: %s: %s", incoming.queue_id, type(e).__name__, e)
                auth = None
            if auth is not None and auth.dmarc_rejects():
                return Decision("dmarc_reject", {"domain": getattr(auth.dmarc, "from_domain", "")})
        if inline:
            outcomes = delivery.deliver(incoming.dir, inline_only=True)
            for outcome in outcomes.values():
                if outcome.status == "failed":
                    return Decision("handler_refused", {"why": outcome.detail})
            for outcome in outcomes.values():
                if outcome.status == "deferred":
                    return Decision("handler_deferred", {"why": outcome.detail})
        return None
