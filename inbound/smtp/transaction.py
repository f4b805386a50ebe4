"""The state of one SMTP session outside its protocol: who is connected, the transaction
under way (MAIL FROM to the final reply, and its message file), the log line's summary,
and the shape of the Policy the session asks (type-checker names only).

A Transaction owns its spool file: begin() opens it with our Received: header, take()
checks and writes data, abort() forgets it.  Committing is the session's (after the
policy's last word).  Nothing here reads or writes the wire.
"""

from __future__ import annotations

from .. import log
from .data import ContentCheck

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol

    from ..spool import Incoming, Record, Spool

    class Decision(Protocol):
        reply: str
        fields: dict[str, Any]
        route: str | None

    class Policy(Protocol):
        """What the session asks, supplied by the caller (the router, the checks)."""

        @property
        def default_domain(self) -> str: ...

        def decide_recipient(self, address: str, domain: str) -> Decision:
            """'recipient_ok' with a route to accept; any other reply name refuses."""

        def decide_message(self, incoming: Incoming, record: Record) -> Decision | None:
            """Called with the message on disk in incoming/ before the final reply; None accepts."""


class Client:
    """Who is connected: address ("" when unknown, never assumed 127.0.0.1), port, name."""

    def __init__(self, addr: str = "", port: str = "", host: str = "") -> None:
        self.addr, self.port, self.host = addr, port, host
        self.dnsbl: list[str] = []  # "zone=code" of each blocklist listing it (dnsbl.py)


class Summary:
    """What the connection's log line says."""

    def __init__(self) -> None:
        self.helo = ""
        self.senders: list[str] = []
        self.recipients: list[str] = []
        self.refused: list[str] = []  # "address:code" of recipients we refused
        self.size = 0
        self.queue_ids: list[str] = []
        self.reply = ""  # the last reply sent
        self.outcomes: list[str] = []  # the final reply of each transaction's data
        self.tls = ""


class Transaction:
    """MAIL FROM to the final reply: the envelope so far, and the message file once data flows."""

    def __init__(self, sender: str, params: dict[str, str], smtputf8: bool) -> None:
        self.sender = sender
        self.params = params
        self.smtputf8 = smtputf8
        self.recipients: list[dict[str, str]] = []
        self.incoming: Incoming | None = None
        self.check: ContentCheck | None = None
        self.header_size = 0  # our Received: header, not counted against SIZE
        self.failed_reply: str | None = None  # BDAT: reply name of an earlier failure

    def begin(self, spool: Spool, header: Callable[[str], bytes]) -> bool:
        """Open the spool file and write our Received: header first; False when we cannot."""
        try:
            self.incoming = spool.receive()
            data = header(self.incoming.queue_id)
            self.incoming.write(data)
        except OSError as e:
            log.error("cannot spool: %s", e)
            self.abort()
            return False
        self.check = ContentCheck()
        self.header_size = len(data)
        return True

    def take(self, data: bytes, max_size: int) -> None:
        """Check DATA and write it, unless something already refuses the message."""
        assert self.incoming and self.check
        self.check.feed(data)
        if self.incoming.size - self.header_size + len(data) > max_size:
            self.check.problem = self.check.problem or "too_big"
        if self.check.problem:
            return
        try:
            self.incoming.write(data)
        except OSError as e:  # disk full, file too big: keep reading to the end, then 452
            log.error("%s: cannot write to the spool: %s", self.incoming.queue_id, e)
            self.check.problem = "storage_full"

    def finish(self, *, helo: str, esmtp: bool, client: Client, tls: str) -> Record:
        """The data is complete and clean: fsync it with its envelope record (incoming/)."""
        assert self.incoming
        return self.incoming.finish(
            self.sender,
            self.recipients,
            helo=helo,
            esmtp=esmtp,
            smtputf8=self.smtputf8,
            body=self.params.get("BODY", "").upper(),
            remote_addr=client.addr,
            remote_port=client.port,
            remote_host=client.host,
            tls=tls,
            dnsbl=client.dnsbl,
        )

    def abort(self) -> None:
        """Forget the message file (never accepted); the envelope stays for BDAT's RSET."""
        if self.incoming:
            self.incoming.abort()
            self.incoming = None
