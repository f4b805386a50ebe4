"""Our Received: trace header (RFC 5321 4.4), for the session and for `deliver`.

The HELO argument and the client's address reach here already restricted to printable
ASCII by the session's grammar; nothing here reads or writes the wire.
"""

from __future__ import annotations

import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .session import Session
    from .transaction import Transaction


def received_header(
    *,
    hostname: str,
    queue_id: str,
    helo: str = "",
    client_addr: str = "",
    client_host: str = "",
    protocol: str = "",
    tls: str = "",
    recipient: str = "",
    via: str = "",
) -> bytes:
    """The Received: field with its CRLF.  No HELO means not over SMTP (`deliver`): VIA says how."""
    date = time.strftime("%a, %d %b %Y %H:%M:%S %z")
    if not protocol:
        text = f"Received: by {hostname} (mailserver {via or 'local'}) id {queue_id};\r\n\t{date}\r\n"
        return text.encode("utf-8", "replace")
    source = f"{client_host} [{client_addr}]" if client_host else f"[{client_addr}]"
    if not client_addr:
        source = "unknown"
    tls_note = f" ({tls})" if tls else ""
    to = f"\r\n\tfor <{recipient}>" if recipient else ""
    text = (
        f"Received: from {helo} ({source})\r\n\tby {hostname} (mailserver)"
        f" with {protocol}{tls_note} id {queue_id}{to};\r\n\t{date}\r\n"
    )
    return text.encode("utf-8", "replace")


def session_received_header(session: Session, tx: Transaction, queue_id: str) -> bytes:
    """The Received: field of a message arriving in SESSION's transaction TX."""
    tls = session.channel.tls_version
    protocol = "UTF8SMTP" if tx.smtputf8 else "ESMTP" if session.esmtp else "SMTP"
    recipients = tx.recipients
    return received_header(
        hostname=session.hostname,
        queue_id=queue_id,
        helo=session.helo or "",
        client_addr=session.client.addr,
        client_host=session.client.host,
        protocol=protocol + ("S" if tls else ""),
        tls=f"{tls}:{session.channel.tls_cipher}" if tls else "",
        recipient=recipients[0]["address"] if len(recipients) == 1 else "",
    )
