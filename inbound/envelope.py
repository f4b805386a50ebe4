"""The Envelope a Python handler receives: who sent what to whom, and the parsed message.

Everything about the SMTP transaction (sender, recipients, helo, client, queue id,
auth results) is plain data from the spool.  The message is parsed lazily and defensively:

* `headers`, `subject`, `from_`, `to`, `cc` read only the header block (a 50 MB body is
  never loaded for them); `message`, `text`, `html`, `attachments` parse the whole thing.
* Hostile input is bounded before the stdlib parser sees it (bounded.py: header caps,
  MIME depth), and the message is parsed with bounded.py's policy, which cuts every
  header field of every part and decodes only text charsets (punycode, unicode_escape
  and other codecs that are no charsets of mail are read as UTF-8).  Each parse and
  each decoding (a header, the text and html bodies, the attachments) runs under the
  parse deadline, once: results are cached.  Each such cut is added to `defects`.
* Every string handed out is valid Unicode: raw 8-bit in header fields is read as UTF-8
  (RFC 6532), malformed octets as U+FFFD, never as lone surrogates.  Decoded header
  values are one line with no control character (CR, LF, form feed, VT, NEL, U+2028,
  escape... become a space); attachment filenames are made safe (no folders, no dot
  files, no control characters, never only dots).
* Addresses come from addresses.py, the one parser the DMARC check uses too (not
  `email.utils.parseaddr`, CVE-2023-27043): `from_` lists the addresses whose domains
  DMARC evaluated.  They are what the message *claims*: never authorise on them; use
  `auth` (SPF/DKIM/DMARC) for that.

Nothing here raises into the handler for a malformed message: values are best effort and
problems are listed in `defects`.  `reply()` and `forward()` call the replier and the
forwarder that delivery injected (autoreply): this module imports nothing later in the flow.
"""

from __future__ import annotations

import re

from . import bounded

TYPE_CHECKING = False  # typing and dataclasses cost start-up time; names for type checkers only
if TYPE_CHECKING:
    from collections.abc import Callable
    from email.message import EmailMessage
    from typing import Any

    from .checks.results import AuthResults
    from .checks.scanners import Spam, Verdicts
    from .config import Config


#: What an attachment's content type may look like (type/subtype, RFC 2045 token characters).
CONTENT_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]{1,64}/[a-z0-9!#$&^_.+-]{1,64}")


class _TooDeep(Exception):
    """The parts of a parsed message nest deeper than MAX_MIME_DEPTH (message/rfc822 in
    message/rfc822...): handlers walking it would recurse to death."""


class Address:
    """One parsed address of a header: display name and address (what the message claims)."""

    __slots__ = ("name", "address")

    def __init__(self, name: str, address: str) -> None:
        self.name = name
        self.address = address

    def __str__(self) -> str:
        return f"{self.name} <{self.address}>" if self.name else self.address

    def __repr__(self) -> str:
        return f"Address({self.name!r}, {self.address!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Address) and (self.name, self.address) == (other.name, other.address)

    def __hash__(self) -> int:
        return hash((self.name, self.address))


class Attachment:
    """One attachment: a safe file name, its content type, size and decoded bytes."""

    __slots__ = ("filename", "content_type", "size", "data")

    def __init__(self, filename: str, content_type: str, size: int, data: bytes) -> None:
        self.filename = filename
        self.content_type = content_type
        self.size = size
        self.data = data

    def __repr__(self) -> str:
        return f"Attachment({self.filename!r}, {self.content_type!r}, {self.size})"


class Envelope:
    """One message as one handler sees it (its recipients only)."""

    def __init__(
        self,
        *,
        queue_id: str,
        sender: str,
        recipients: list[str],
        helo: str = "",
        remote_addr: str = "",
        remote_host: str = "",
        tls: str = "",
        handler: str = "",
        config: dict[str, str] | None = None,
        server_config: Config | None = None,
        raw: bytes | None = None,
        message_path: str | None = None,
        prefix: bytes = b"",
        auth: AuthResults | None = None,
        replier: Callable[..., bool] | None = None,
        dnsbl: dict[str, str] | None = None,
        duplicate: bool = False,
        verdicts: Verdicts | None = None,
        forwarder: Callable[..., str] | None = None,
    ) -> None:
        text = bounded.valid_text  # every string handed out is valid Unicode (argv, env...)
        self.queue_id = queue_id
        self.sender = text(sender)
        self.recipients = [text(r) for r in recipients]
        self.helo = text(helo)
        self.remote_addr = text(remote_addr)
        self.remote_host = text(remote_host)
        self.tls = tls
        self.handler = handler
        self.config = dict(config or {})
        self.server_config = server_config
        self.auth = auth
        self.defects: list[str] = []
        self._raw = raw
        self._path = message_path
        self._prefix = prefix
        self._replier = replier
        self._forwarder = forwarder
        self.dnsbl = dict(dnsbl or {})  # blocklist zone -> code, for a client they list
        self.duplicate = duplicate  # this handler handled the same message lately (dedupe_days)
        self.verdicts = verdicts  # the scanners' (rspamd, clamd); None: none configured
        # rspamd's Spam (.action, .score, .required, .symbols) or None (not configured);
        # the virus clamd named or None; clamd's word: clean, infected, unknown, "" (off)
        self.spam: Spam | None = verdicts.spam if verdicts else None
        self.virus = verdicts.virus.name if verdicts and verdicts.virus else None
        self.virus_status = verdicts.virus.status if verdicts and verdicts.virus else ""
        self._headers: EmailMessage | None = None
        self._message: EmailMessage | None = None
        self._decoded: dict[tuple[str, str], object] = {}

    def __repr__(self) -> str:
        return f"<Envelope {self.queue_id} from {self.sender or '<>'} to {', '.join(self.recipients)}>"

    @property
    def recipient(self) -> str:
        return self.recipients[0] if self.recipients else ""

    @property
    def spool(self) -> str:
        return self.server_config.server.spool if self.server_config else ""

    @property
    def prefix(self) -> bytes:
        """Our header fields that go on top of the spooled message (Authentication-Results)."""
        return self._prefix

    # -- bytes ------------------------------------------------------------------
    @property
    def raw(self) -> bytes:
        """The message as delivered: our Authentication-Results and Received on top, CRLF."""
        if self._raw is None:
            assert self._path
            with open(self._path, "rb") as f:
                self._raw = self._prefix + f.read()
        return self._raw

    def _head_bytes(self) -> bytes:
        if self._raw is not None or not self._path:
            return self.raw[: bounded.MAX_HEADER_BYTES + 4]
        with open(self._path, "rb") as f:
            return self._prefix + f.read(bounded.MAX_HEADER_BYTES + 4)

    # -- parsed -----------------------------------------------------------------
    def _note(self, defect: str) -> None:
        """Add DEFECT to `defects` as one line of valid text (it may quote the message)."""
        self.defects.append(bounded.clean(defect))

    @property
    def headers(self) -> EmailMessage:
        """Only the header block, parsed (cheap; the body is not read)."""
        if self._headers is None:
            from email.parser import BytesParser

            block, cut = bounded.split_header_block(self._head_bytes())
            if cut:
                self._note(f"header block longer than {bounded.MAX_HEADER_BYTES} octets was cut")
            block = bounded.bound_headers(block, self.defects).replace(b"\r\n", b"\n")
            self._headers = self._parse(
                lambda: BytesParser(policy=bounded.email_policy()).parsebytes(block, headersonly=True)
            )
        return self._headers

    @property
    def message(self) -> EmailMessage:
        """The whole message (policy.default with bounded.py's bounds on every part); loads
        the body."""
        if self._message is None:
            from email.parser import BytesParser

            data = self.raw
            block, cut = bounded.split_header_block(data)
            body = data[len(block) :]
            head = bounded.bound_headers(block, self.defects)
            if not head.endswith(b"\n"):
                head += b"\r\n"
            if cut:  # no end of the header block within the cap: what follows is body
                head += b"\r\n"

            def parse(head: bytes) -> EmailMessage:
                whole = (head + body).replace(b"\r\n", b"\n")  # text parts with Python's own newlines
                return BytesParser(policy=bounded.email_policy()).parsebytes(whole)  # type: ignore[return-value]

            message = None
            if bounded.mime_depth_ok(data):  # multiparts measured; message/rfc822 nesting after
                try:
                    message = self._parse(lambda: parse(head), max_depth=bounded.MAX_MIME_DEPTH)
                except _TooDeep:
                    pass
            if message is None:
                self._note(f"MIME nesting deeper than {bounded.MAX_MIME_DEPTH}: parsed as one text part")
                head = re.sub(rb"(?im)^content-type:.*(\r?\n[ \t].*)*$", b"Content-Type: text/plain", head)
                message = self._parse(lambda: parse(head))
            self._message = message
        return self._message

    def _parse(self, parse: Any, max_depth: int = 0) -> EmailMessage:
        """PARSE() under the parse deadline, never raising (an empty message instead); with
        MAX_DEPTH, _TooDeep when its parts nest deeper (or the parser recursed to death)."""
        from email.message import EmailMessage

        try:
            with bounded.parse_deadline():
                message: EmailMessage = parse()
                if max_depth and bounded.nesting(message) > max_depth:
                    raise _TooDeep
        except _TooDeep:
            raise
        except RecursionError:
            if max_depth:
                raise _TooDeep from None
            self._note("message could not be parsed: RecursionError")
            return EmailMessage(policy=bounded.email_policy())
        except bounded.ParseTimeout:
            self._note(f"parsing took longer than {bounded.PARSE_SECONDS} s and was abandoned")
            return EmailMessage(policy=bounded.email_policy())
        except Exception as e:  # the stdlib parser must not reach the handler
            self._note(f"message could not be parsed: {type(e).__name__}")
            return EmailMessage(policy=bounded.email_policy())
        for defect in message.defects:
            self._note(f"{type(defect).__name__}: {defect}")
        return message

    def header(self, name: str, default: str = "") -> str:
        """One decoded header value, CR/LF flattened; DEFAULT when missing or undecodable.

        Decoding happens here, lazily, so it runs under the parse deadline too; cached."""
        key = ("header", name.lower())
        if key not in self._decoded:
            value: object = None
            try:
                with bounded.parse_deadline():
                    value = self.headers.get(name)
                    value = None if value is None else bounded.clean(value)
            except bounded.ParseTimeout:
                self._note(f"header {name}: decoding took longer than {bounded.PARSE_SECONDS} s")
            except Exception as e:
                self._note(f"header {name}: {type(e).__name__}")
            self._decoded[key] = value
        value = self._decoded[key]
        return default if value is None else str(value)

    @property
    def subject(self) -> str:
        return self.header("Subject")

    def addresses(self, name: str) -> list[Address]:
        """The addresses of every NAME header field (From, To, Cc, Resent-To...), read by the
        parser the DMARC check uses (addresses.py) from the raw values; bounded in time."""
        key = ("addresses", name.lower())
        if key not in self._decoded:
            from . import addresses

            found: list[Address] = []
            try:
                with bounded.parse_deadline():
                    for field, value in self.headers.raw_items():
                        if field.lower() != key[1]:
                            continue
                        for box in addresses.parse(value):
                            name_ = bounded.clean(addresses.display_name(box.name))
                            found.append(Address(name_, bounded.clean(box.address)))
            except bounded.ParseTimeout:
                self._note(f"header {name}: decoding took longer than {bounded.PARSE_SECONDS} s")
            except Exception as e:
                self._note(f"header {name}: {type(e).__name__}")
            self._decoded[key] = found
        found_before: list[Address] = self._decoded[key]  # type: ignore[assignment]
        return list(found_before)

    @property
    def from_(self) -> list[Address]:
        return self.addresses("From")

    @property
    def to(self) -> list[Address]:
        return self.addresses("To")

    @property
    def cc(self) -> list[Address]:
        return self.addresses("Cc")

    @property
    def message_id(self) -> str:
        return self.header("Message-ID")

    def _body(self, subtype: str) -> str | None:
        """The text of the body part of SUBTYPE, decoded under the parse deadline; cached."""
        key = ("body", subtype)
        if key not in self._decoded:
            message = self.message  # (its own deadline)
            value = None
            try:
                with bounded.parse_deadline():
                    value = self._find_body(message, subtype)
            except bounded.ParseTimeout:
                self._note(f"{subtype} body: decoding took longer than {bounded.PARSE_SECONDS} s")
            self._decoded[key] = value
        return self._decoded[key]  # type: ignore[return-value]

    def _find_body(self, message: EmailMessage, subtype: str) -> str | None:
        part = None
        try:
            part = message.get_body(preferencelist=(subtype,))
            if part is None:
                return None
            charset = part.get_content_charset()
            if charset and not bounded.text_charset(charset):
                self._note(f"{subtype} body: charset {charset[:40]!r} is not a text charset: read as UTF-8")
            content = part.get_content()  # bounded.decode_text, through the policy
            return content if isinstance(content, str) else None
        except Exception as e:  # broken transfer encoding, odd structure...
            self._note(f"{subtype} body: {type(e).__name__}: {e}")
            try:
                payload = part.get_payload(decode=True) if part is not None else None
                return bounded.decode_text(payload, "utf-8") if isinstance(payload, bytes) else None
            except Exception:
                return None

    @property
    def text(self) -> str | None:
        return self._body("plain")

    @property
    def html(self) -> str | None:
        return self._body("html")

    @property
    def attachments(self) -> list[Attachment]:
        """The attachments, decoded under the parse deadline; cached (the list is a copy)."""
        key = ("attachments", "")
        if key not in self._decoded:
            message = self.message  # (its own deadline)
            found: list[Attachment] = []
            try:
                with bounded.parse_deadline():
                    for n, part in enumerate(message.iter_attachments(), 1):
                        found.append(self._attachment(n, part))
            except bounded.ParseTimeout:
                self._note(f"attachments: decoding took longer than {bounded.PARSE_SECONDS} s")
            except Exception as e:
                self._note(f"attachments: {type(e).__name__}")
            self._decoded[key] = found
        return list(self._decoded[key])  # type: ignore[call-overload]

    def _attachment(self, n: int, part: EmailMessage) -> Attachment:
        fallback = f"attachment-{n}"
        try:
            data = part.get_payload(decode=True)
            data = data if isinstance(data, bytes) else b""
            filename = bounded.safe_filename(bounded.clean(part.get_filename() or ""), fallback)
            content_type = bounded.clean(part.get_content_type()).lower()
        except Exception as e:
            self._note(f"attachment {n}: {type(e).__name__}")
            data, filename, content_type = b"", fallback, ""
        if not CONTENT_TYPE.fullmatch(content_type):
            content_type = "application/octet-stream"
        return Attachment(filename, content_type, len(data), data)

    # -- answering -----------------------------------------------------------------
    def reply(self, body: str, **options: Any) -> bool:
        """Send an RFC 3834-safe reply; False (and a log line) when one must not be sent."""
        if self._replier is None:
            raise RuntimeError("no reply transport: this Envelope was not built by the server")
        return self._replier(self, body, **options)

    def forward(self, to: str, **options: Any) -> str:
        """Resend the message as received to TO (SRS, ARC, DKIM); the MAIL FROM it used."""
        if self._forwarder is None:
            raise RuntimeError("no forward transport: this Envelope was not built by the server")
        return self._forwarder(self, to, **options)

    @property
    def srs_original(self) -> str:
        """A bounce to our SRS address: the sender of the message we forwarded; else ""."""
        forward = self.server_config.forward if self.server_config else None
        if not (forward and forward.srs_domain and any(r[:3].upper() == "SRS" for r in self.recipients)):
            return ""  # (srs.py, and hmac with it, imported only for a bounce)
        from .srs import bounced_for

        return bounced_for(self.recipients, forward)

    def as_dict(self, with_attachments: bool = False) -> dict[str, Any]:
        """A JSON-safe summary (for webhooks and logs)."""
        data: dict[str, Any] = {
            "queue_id": self.queue_id,
            "sender": self.sender,
            "recipients": self.recipients,
            "helo": self.helo,
            "remote_addr": self.remote_addr,
            "subject": self.subject,
            "from": [str(a) for a in self.from_],
            "to": [str(a) for a in self.to],
            "cc": [str(a) for a in self.cc],
            "text": self.text,
            "html": self.html,
            "auth": self.auth.to_dict() if self.auth else None,
            "defects": self.defects,
        }
        if with_attachments:
            import base64

            data["attachments"] = [
                {
                    "filename": a.filename,
                    "content_type": a.content_type,
                    "size": a.size,
                    "data": base64.b64encode(a.data).decode(),
                }
                for a in self.attachments
            ]
        return data
