"""The reply as a message: headers that keep threads and stop loops, body, attachments, DKIM.

`build()` makes the EmailMessage (Re: once, In-Reply-To/References, Auto-Submitted,
our marker, 7bit transfer encodings so no relay converts it), `message_bytes()` its wire
form, `sign()` adds the DKIM-Signature of `[reply] dkim_*`.  `attachment_parts()` turns
what a handler gives as attachments into (filename, data, content type), shared with
`send --reply`.  Nothing here decides whether to answer or sends anything.
"""

from __future__ import annotations

import re

from ..outcomes import TempFail
from .rules import MARKER, address_of

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from email.message import EmailMessage
    from typing import Any

    from ..config import Config
    from .rules import ReplyContext

#: References kept in a reply (RFC 5322 3.6.4 lets us trim; the first and the newest stay).
MAX_REFERENCES = 20
RE_PREFIX = re.compile(r"^\s*(?:(?:re|aw|sv|antw|vs|ref)\s*(?:\[\d+\]|\(\d+\))?\s*:\s*)+", re.IGNORECASE)
MESSAGE_ID = re.compile(r"<[^<>\s]+>")


def reply_subject(original: str) -> str:
    """'Re: ' + ORIGINAL without stacking (Re: Re: / AW: / Re[2]: collapse to one Re:)."""
    rest = RE_PREFIX.sub("", original).strip()
    return f"Re: {rest}" if rest else "Re: your message"


def build(
    envelope: ReplyContext,
    body: str,
    *,
    subject: str | None = None,
    sender: str | None = None,
    html: str | None = None,
    attachments: Iterable[Any] | None = None,
    headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
) -> EmailMessage:
    """The reply as an EmailMessage (not yet signed)."""
    import mimetypes
    from email import policy
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    config = envelope.server_config
    from_ = sender or (config.reply.from_ if config else "") or envelope.recipient
    from_address = address_of(from_)
    domain = from_address.rpartition("@")[2] or (config.server.hostname if config else "localhost")
    # 7bit bodies (quoted-printable/base64 when needed): no relay has to convert them, and
    # a conversion would break the DKIM signature.
    message = EmailMessage(policy=policy.default.clone(cte_type="7bit"))
    message["From"] = from_
    message["To"] = envelope.sender
    message["Subject"] = subject if subject is not None else reply_subject(envelope.subject)
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid("reply", domain=domain)
    original = envelope.message_id.strip()
    original = original if MESSAGE_ID.fullmatch(original) else ""
    references = MESSAGE_ID.findall(envelope.header("References")) + ([original] if original else [])
    if len(references) > MAX_REFERENCES:
        references = references[:1] + references[-(MAX_REFERENCES - 1) :]
    if original:
        message["In-Reply-To"] = original
    if references:
        message["References"] = " ".join(references)
    message["Auto-Submitted"] = "auto-replied"
    message[MARKER] = envelope.handler or "yes"
    message["X-Auto-Response-Suppress"] = "All"  # Exchange: no out-of-office answers to us
    for name, value in _pairs(headers):
        if name.lower() in ("to", "cc", "bcc", "from", "auto-submitted", MARKER.lower()):
            raise ValueError(f"reply header {name} is set by send_reply and cannot be given")
        if re.search(r"[\r\n]", name + value) or not re.fullmatch(r"[!-9;-~]+", name):
            raise ValueError(f"reply header {name!r} is not a valid header field")
        del message[name]
        message[name] = value
    message.set_content(body)
    if html is not None:
        message.add_alternative(html, subtype="html")
    for item in attachments or ():
        filename, data, content_type = _attachment(item)
        if not content_type:
            content_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        maintype, _, subtype = content_type.partition("/")
        if isinstance(data, str):
            data = data.encode("utf-8")
        message.add_attachment(data, maintype=maintype, subtype=subtype or "octet-stream", filename=filename)
    return message


def _pairs(headers: Mapping[str, str] | Iterable[tuple[str, str]] | None) -> list[tuple[str, str]]:
    from collections.abc import Mapping

    if headers is None:
        return []
    if isinstance(headers, Mapping):
        return [(str(k), str(v)) for k, v in headers.items()]
    return [(str(k), str(v)) for k, v in headers]


def _attachment(item: Any) -> tuple[str, bytes | str, str]:
    if isinstance(item, tuple):
        filename, data, *rest = item
        return str(filename), data, str(rest[0]) if rest else ""
    return str(item.filename), item.data, str(getattr(item, "content_type", "") or "")


def message_bytes(message: EmailMessage) -> bytes:
    """The message as it goes on the wire (CRLF); SMTPUTF8 form only when an address needs it."""
    from email import policy

    addresses = f"{message['From']} {message['To']}"
    wire = policy.SMTP if addresses.isascii() else policy.SMTPUTF8
    return message.as_bytes(policy=wire)


def signing_key(config: Config) -> bytes | None:
    """The `[reply] dkim_key` (PEM: RSA; else Ed25519) when dkim_domain, dkim_selector and
    dkim_key are all set, else None; a key file that cannot be read is a TempFail."""
    settings = config.reply
    if not (settings.dkim_domain and settings.dkim_selector and settings.dkim_key):
        return None
    try:
        with open(settings.dkim_key, "rb") as f:
            return f.read()
    except OSError as e:
        raise TempFail(f"[reply] dkim_key {settings.dkim_key}: {e.strerror}") from None


def sign(data: bytes, config: Config) -> bytes:
    """DATA with a DKIM-Signature on top when [reply] dkim_* are all set; else DATA."""
    key = signing_key(config)
    if key is None:
        return data
    settings = config.reply
    import dkim

    algorithm = b"rsa-sha256" if b"-----BEGIN" in key else b"ed25519-sha256"
    try:
        signature = dkim.sign(
            data,
            settings.dkim_selector.encode("ascii"),
            settings.dkim_domain.encode("ascii"),
            key.strip() if algorithm == b"ed25519-sha256" else key,
            canonicalize=(b"relaxed", b"relaxed"),
            signature_algorithm=algorithm,
        )
    except Exception as e:  # a broken key is our problem: keep the message and say so
        raise TempFail(f"DKIM signing with {settings.dkim_key} failed: {type(e).__name__}: {e}") from None
    return bytes(signature) + data
