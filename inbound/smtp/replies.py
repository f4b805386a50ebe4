"""Every SMTP reply the server sends, by name: code, enhanced status code (RFC 3463), text.

Verb methods in session.py pick a name and fill the {placeholders}; nothing else in the
package writes reply text (inetd.py's 421 for a broken config, and EHLO's keyword list
through `ehlo_reply`, come from here too).  The 220 greeting and 354 carry no enhanced code (RFC 2034
applies it to replies after EHLO; 354 is intermediate); every other reply does.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs start-up time; names below are for type checkers only
if TYPE_CHECKING:
    pass


REPLIES: dict[str, str] = {
    # connection
    "greeting": "220 {host} ESMTP mailserver ready",
    "bye": "221 2.0.0 {host} closing connection",
    "timeout": "421 4.4.2 {host} Timeout, closing connection",
    "too_many_errors": "421 4.7.0 {host} Too many errors, closing connection",
    "too_many_refused": "421 4.7.0 {host} Too many unknown recipients, closing connection",
    "too_many_commands": "421 4.7.0 {host} Too many commands in one session, closing connection",
    "unavailable": "421 4.3.0 {host} Service not available, try again later",
    "config_error": "421 4.3.0 Service not available: configuration error",
    "rate_limited": "421 4.7.0 {host} Too many connections from your address lately, try again later",
    "penalized": "421 4.7.0 {host} Your address is refused for a while ({why}), try again later",
    "pregreet": "554 5.5.1 {host} Protocol error: you talked before the greeting",
    "too_busy": "421 4.7.0 {host} Too many connections, try again later",
    "too_many_from_you": "421 4.7.0 {host} Too many connections from your address, try again later",
    "internal_error": "451 4.3.0 Internal error, try again later",
    # greeting verbs and chatter
    "helo": "250 {host}",
    "ok": "250 2.0.0 OK",
    "reset": "250 2.0.0 Reset state",
    "vrfy": "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery",
    "expn": "502 5.5.1 EXPN not available",
    "help": "214 2.0.0 Commands: {verbs}",
    "tls_go": "220 2.0.0 Ready to start TLS",
    "tls_unavailable": "502 5.5.1 STARTTLS not available",
    "tls_active": "503 5.5.1 TLS already active",
    # syntax and sequence
    "unknown_command": "500 5.5.2 Command not recognized",
    "line_too_long": "500 5.5.2 Line too long (RFC 5321 4.5.3.1.4: 512 octets)",
    "nul_in_command": "500 5.5.2 NUL character in command",
    "bad_syntax": "501 5.5.4 Syntax: {usage}",
    "bad_address": "501 5.1.7 Bad address syntax: {why}",
    "bad_recipient_syntax": "501 5.1.3 Bad recipient address syntax: {why}",
    "need_helo": "503 5.5.1 Send EHLO or HELO first",
    "need_mail": "503 5.5.1 Send MAIL first",
    "need_rcpt": "503 5.5.1 Send RCPT first",
    "nested_mail": "503 5.5.1 Sender already given; RSET first",
    "bdat_in_progress": "503 5.5.1 BDAT transfer in progress; only BDAT allowed",
    "bdat_aborted": "503 5.5.1 Previous BDAT failed; RSET first",
    "unknown_parameter": "555 5.5.4 Unsupported parameter: {param}",
    "non_ascii_address": "553 5.6.7 Non-ASCII address requires SMTPUTF8",
    # transaction
    "sender_ok": "250 2.1.0 Sender OK",
    "recipient_ok": "250 2.1.5 Recipient OK",
    "start_data": "354 End data with <CR><LF>.<CR><LF>",
    "chunk_ok": "250 2.0.0 {size} octets received",
    "queued": "250 2.0.0 OK queued as {queue_id}",
    "not_our_domain": "550 5.7.1 <{address}>: relay access denied, we do not serve {domain}",
    "dnsbl_listed": "554 5.7.1 <{address}>: refused: your address {client} is listed by {zone} ({code})",
    "no_such_user": "550 5.1.1 <{address}>: no such user here",
    "handler_unavailable": "451 4.3.0 <{address}>: handler unavailable, try again later",
    "too_many_recipients": "452 4.5.3 Too many recipients",
    "size_declared_too_big": "552 5.3.4 Message size exceeds fixed limit of {limit} octets",
    "too_big": "552 5.3.4 Message too big: limit is {limit} octets",
    "bare_lf": "550 5.5.2 Message refused: bare LF in message; lines must end in CRLF",
    "bare_cr": "550 5.5.2 Message refused: bare CR in message; lines must end in CRLF",
    "nul_in_data": "550 5.6.0 Message refused: NUL character in message",
    "text_line_too_long": "550 5.6.0 Message refused: line longer than 1000 octets (RFC 5321 4.5.3.1.6)",
    "storage_full": "452 4.3.1 Insufficient system storage, try again later",
    "handler_refused": "550 5.7.1 Message refused: {why}",
    "handler_deferred": "451 4.3.0 Message deferred: {why}",
    "dmarc_reject": "550 5.7.1 Message rejected by the DMARC policy of {domain}",
    "virus_reject": "550 5.7.1 Message refused: virus found ({virus})",
    "spam_reject": "550 5.7.1 Message refused as spam (score {score})",
}


def render(name: str, **fields: object) -> bytes:
    """One reply as wire bytes (CRLF included); CR and LF in fields are flattened."""
    clean = {k: str(v).replace("\r", " ").replace("\n", " ") for k, v in fields.items()}
    return (REPLIES[name].format(**clean) + "\r\n").encode("utf-8", "replace")


def ehlo_reply(greeting: str, keywords: list[str]) -> bytes:
    """The multi-line 250 to EHLO: the greeting line, then one extension keyword a line."""
    lines = [greeting, *keywords]
    text = "".join(f"250-{item}\r\n" for item in lines[:-1]) + f"250 {lines[-1]}\r\n"
    return text.encode("utf-8", "replace")


def code_of(name: str) -> int:
    return int(REPLIES[name][:3])
