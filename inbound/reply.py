"""Replies from handlers (auto-responders): RFC 3834-safe, built correctly, sent by [reply] transport.

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
Ed25519 key as dkimpy writes it).  Transports (`[reply] transport`):

    outbox    an .eml file in `[reply] outbox`, written atomically (dev/demo)
    sendmail  the `[reply] sendmail` command, split like a shell would but run without
              one, the message on stdin (recipient appended unless -t is given)
    smtp      the smarthost smtp_host:smtp_port; STARTTLS when offered and smtp_starttls
              (certificates are verified except on loopback), AUTH when smtp_user is set;
              port 465 means implicit TLS
    mx        straight to the recipient domain's MX hosts in preference order (the
              domain itself when it has none, nothing for a null MX), looked up with the
              resolver of `[checks]`; opportunistic STARTTLS

A temporary failure (4xx, no connection, a time-out, a sendmail exit status other than
a permanent one) raises TempFail so the queue tries the handler again; a permanent one
(5xx) is logged and send_reply returns False, since retrying cannot help.

This module is imported only when a handler replies; its heavy imports are inside the
functions.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import log
from .outcomes import TempFail

if TYPE_CHECKING:
    from email.message import EmailMessage

    from .config import Config
    from .envelope import Envelope

#: Our marker on every reply; a message carrying it is never answered (loops between servers).
MARKER = "X-Mailserver-Auto-Reply"
#: One reply per sender per handler in this many seconds.
REPLY_INTERVAL = 86400
SMTP_TIMEOUT = 30.0
SENDMAIL_TIMEOUT = 60.0
#: Port of MX hosts; tests point it at a local sink.
MX_PORT = 25
#: References kept in a reply (RFC 5322 3.6.4 lets us trim; the first and the newest stay).
MAX_REFERENCES = 20
#: sendmail exit statuses that mean "this will never work" (sysexits); others are retried.
SENDMAIL_PERMANENT = {65: "EX_DATAERR", 67: "EX_NOUSER", 68: "EX_NOHOST", 77: "EX_NOPERM"}

# Local parts of robots (vacation(1), Sieve vacation, procmail's FROM_DAEMON), lower case.
ROBOT_LOCAL_PARTS = re.compile(
    r"""^(?:
        mailer-daemon | mailer | postmaster | listserv | majordomo | mailman | ezmlm | lyris
      | nobody | uucp | daemon | bounces?
      | owner-.* | .*-owner | .*-request | .*-bounces? | .*-relay | bounce[-+.].*
      | (?:no|do[-_.]?not)[-_.]?reply.* | .*[-_.]no[-_.]?reply
    )$""",
    re.IGNORECASE | re.VERBOSE,
)
LIST_HEADERS = ("Mailing-List", "X-Mailing-List", "X-List")
PRECEDENCE_NO_REPLY = {"bulk", "list", "junk"}
RE_PREFIX = re.compile(r"^\s*(?:(?:re|aw|sv|antw|vs|ref)\s*(?:\[\d+\]|\(\d+\))?\s*:\s*)+", re.IGNORECASE)
MESSAGE_ID = re.compile(r"<[^<>\s]+>")

#: Injectable clock (the rate limit reads it).
now: Callable[[], float] = time.time


class PermanentFailure(Exception):
    """The reply can never be delivered (5xx, null MX, no such domain): log it, don't retry."""


@dataclass(frozen=True)
class Result:
    """What became of one reply: sent, or why not."""

    sent: bool
    detail: str


# -- the one entry point --------------------------------------------------------------
def send_reply(envelope: Envelope, body: str, **options: Any) -> bool:
    """Answer ENVELOPE's sender with BODY; False (and a log line) when no reply may or could be
    sent.  OPTIONS are those of reply(); raises TempFail when the transport fails temporarily."""
    return reply(envelope, body, **options).sent


def reply(
    envelope: Envelope,
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


# -- may we? ------------------------------------------------------------------------------
def refusal(envelope: Envelope) -> str | None:
    """Why ENVELOPE must not be answered (RFC 3834 and friends), or None when it may be."""
    sender = envelope.sender
    if not sender:
        return "the envelope sender is <> (a bounce or an auto-reply)"
    local, at, domain = sender.rpartition("@")
    if (
        not at
        or not local
        or not domain
        or local.startswith("-")
        or re.search(r"[\s\x00-\x1f\x7f<>]", sender)
    ):
        return f"the envelope sender {sender!r} is not a plain address"
    base = local.split("+", 1)[0]
    if ROBOT_LOCAL_PARTS.match(local) or ROBOT_LOCAL_PARTS.match(base):
        return f"the envelope sender {sender} is a robot's address"
    reason = automatic(envelope)
    if reason:
        return reason
    if not addressed_to_us(envelope):
        return "none of our addresses is in To/Cc (Bcc, a list or an alias): RFC 3834 section 2"
    config = envelope.server_config
    if config is not None and config.reply.require_auth:
        reason = unauthenticated(envelope)
        if reason:
            return reason
    return None


def automatic(envelope: Envelope) -> str | None:
    """Why the message looks automatic or list traffic, or None."""
    head = envelope.headers
    value = envelope.header("Auto-Submitted")
    if value and value.split(";")[0].strip().lower() != "no":
        return f"Auto-Submitted: {value[:60]}"
    if envelope.header(MARKER):
        return "it is an auto-reply of ours"
    precedence = envelope.header("Precedence").strip().lower()
    if precedence in PRECEDENCE_NO_REPLY:
        return f"Precedence: {precedence}"
    for name in head.keys():
        if name.lower().startswith("list-") or name.lower() in {h.lower() for h in LIST_HEADERS}:
            return f"it came through a mailing list ({name})"
    suppress = envelope.header("X-Auto-Response-Suppress").lower()
    if any(word in suppress for word in ("all", "autoreply", "oof")):
        return f"X-Auto-Response-Suppress: {suppress}"
    for name in ("X-Autoreply", "X-Autorespond", "X-Autogenerated"):
        if envelope.header(name):
            return f"it says it is automatic ({name})"
    if head.get_content_type() == "multipart/report":
        return "it is a delivery or disposition report (multipart/report)"
    return None


def addressed_to_us(envelope: Envelope) -> bool:
    """Whether one of our addresses is in To, Cc, Bcc or Resent-To/-Cc/-Bcc."""
    ours = {_plain(a) for a in envelope.recipients}
    config = envelope.server_config
    if config is not None and config.reply.from_:
        ours.add(_plain(_address_of(config.reply.from_)))
    listed: set[str] = set()
    for name in ("To", "Cc", "Bcc", "Resent-To", "Resent-Cc", "Resent-Bcc"):
        # the Envelope decodes under its parse deadline; an undecodable header lists nobody
        listed.update(_plain(a.address) for a in envelope.addresses(name))
    return bool(ours & listed)


def _plain(address: str) -> str:
    """An address compared loosely: lower case, without +extension."""
    local, _, domain = address.strip().lower().rpartition("@")
    return f"{local.split('+', 1)[0]}@{domain.rstrip('.')}"


def unauthenticated(envelope: Envelope) -> str | None:
    """None when SPF passed or an aligned DKIM signature passed; else why not."""
    auth = envelope.auth
    if auth is None:
        return "require_auth: no SPF/DKIM results (checks are off)"
    spf = getattr(auth, "spf", None)
    if _result(spf) == "pass" and getattr(spf, "identity", "mailfrom") != "helo":
        return None
    domain = envelope.sender.rpartition("@")[2].lower().rstrip(".")
    for signature in getattr(auth, "dkim", None) or ():
        signer = str(getattr(signature, "domain", "") or "").lower().rstrip(".")
        if _result(signature) == "pass" and signer and aligned(signer, domain):
            return None
    return f"require_auth: SPF is {_result(spf) or 'none'} and no DKIM signature of {domain} passed"


def _result(item: Any) -> str:
    value = getattr(item, "result", item)
    return str(value or "").lower()


_psl: Any = None


def aligned(a: str, b: str) -> bool:
    """Relaxed alignment (DMARC): A and B have the same organisational domain."""
    global _psl
    if a == b:
        return True
    try:
        if _psl is None:
            from publicsuffixlist import PublicSuffixList

            _psl = PublicSuffixList()
        org_a, org_b = _psl.privatesuffix(a), _psl.privatesuffix(b)
        return bool(org_a) and org_a == org_b
    except ImportError:  # pragma: no cover - a runtime dependency; be strict without it
        return a.endswith("." + b) or b.endswith("." + a)


# -- the message --------------------------------------------------------------------------
def reply_subject(original: str) -> str:
    """'Re: ' + ORIGINAL without stacking (Re: Re: / AW: / Re[2]: collapse to one Re:)."""
    rest = RE_PREFIX.sub("", original).strip()
    return f"Re: {rest}" if rest else "Re: your message"


def build(
    envelope: Envelope,
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
    from_address = _address_of(from_)
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


def _address_of(value: str) -> str:
    from email.utils import parseaddr

    return parseaddr(value)[1] or value


def message_bytes(message: EmailMessage) -> bytes:
    """The message as it goes on the wire (CRLF); SMTPUTF8 form only when an address needs it."""
    from email import policy

    addresses = f"{message['From']} {message['To']}"
    wire = policy.SMTP if addresses.isascii() else policy.SMTPUTF8
    return message.as_bytes(policy=wire)


def sign(data: bytes, config: Config) -> bytes:
    """DATA with a DKIM-Signature on top when [reply] dkim_* are all set; else DATA."""
    settings = config.reply
    if not (settings.dkim_domain and settings.dkim_selector and settings.dkim_key):
        return data
    import dkim

    try:
        with open(settings.dkim_key, "rb") as f:
            key = f.read()
    except OSError as e:
        raise TempFail(f"[reply] dkim_key {settings.dkim_key}: {e.strerror}") from None
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


# -- one reply per sender per handler per interval ----------------------------------------------
class RateLimit:
    """`<spool>/replies/<handler>.json`: sender -> time of the last reply, under flock."""

    def __init__(self, spool: str, handler: str, interval: float = REPLY_INTERVAL) -> None:
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", handler or "default").lstrip(".") or "default"
        self.folder = os.path.join(spool or ".", "replies")
        self.path = os.path.join(self.folder, f"{name}.json")
        self.interval = interval

    def reserve(self, sender: str) -> float | None:
        """Record a reply to SENDER now and return its stamp; None when one was sent recently."""
        key = sender.lower()
        with self._locked():
            data = self._read()
            stamp = now()
            last = data.get(key)
            if isinstance(last, (int, float)) and 0 <= stamp - last < self.interval:
                return None
            data = {
                k: v for k, v in data.items() if isinstance(v, (int, float)) and stamp - v < self.interval
            }
            data[key] = stamp
            self._write(data)
            return stamp

    def release(self, sender: str, stamp: float) -> None:
        """Forget the reservation STAMP (the reply was not sent after all)."""
        key = sender.lower()
        with self._locked():
            data = self._read()
            if data.get(key) == stamp:
                del data[key]
                self._write(data)

    def _locked(self) -> Any:
        import contextlib
        import fcntl

        os.makedirs(self.folder, mode=0o750, exist_ok=True)

        @contextlib.contextmanager
        def locked() -> Any:
            fd = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT, 0o640)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)

        return locked()

    def _read(self) -> dict[str, Any]:
        import json

        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            return data if isinstance(data, dict) else {}
        except (FileNotFoundError, ValueError):
            return {}

    def _write(self, data: dict[str, Any]) -> None:
        import json

        tmp = f"{self.path}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(data, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


# -- transports: (data CRLF, MAIL FROM, recipient, config) -> None, or raise ---------------------
def via_outbox(data: bytes, mail_from: str, rcpt: str, config: Config) -> None:
    """Write the reply as an .eml into [reply] outbox: a hidden temporary name, then rename."""
    import secrets

    folder = config.reply.outbox
    try:
        os.makedirs(folder, mode=0o750, exist_ok=True)
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(6)}.eml"
        tmp = os.path.join(folder, f".{name}.tmp")
        with open(tmp, "xb") as f:
            f.write(f"Return-Path: <{mail_from}>\r\n".encode() + data)
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.join(folder, name))
    except OSError as e:
        raise TempFail(f"cannot write to the outbox {folder}: {e.strerror}") from None


def via_sendmail(data: bytes, mail_from: str, rcpt: str, config: Config) -> None:
    """Pipe the reply (LF line endings) into the [reply] sendmail command; no shell."""
    import shlex
    import subprocess

    command = config.reply.sendmail
    argv = shlex.split(command)
    if not argv:
        raise TempFail("[reply] sendmail is empty")
    if "-t" not in argv:
        argv.append(rcpt)  # refusal() made sure it does not start with "-"
    try:
        done = subprocess.run(
            argv,
            input=data.replace(b"\r\n", b"\n"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=SENDMAIL_TIMEOUT,
            close_fds=True,
        )
    except subprocess.TimeoutExpired:
        raise TempFail(f"{argv[0]} took longer than {SENDMAIL_TIMEOUT:g} s") from None
    except OSError as e:
        raise TempFail(f"cannot run {argv[0]}: {e.strerror}") from None
    if done.returncode == 0:
        return
    why = done.stderr.decode("utf-8", "replace").strip().splitlines()
    detail = f"{argv[0]} exited with {done.returncode}" + (f": {why[0][:200]}" if why else "")
    if done.returncode in SENDMAIL_PERMANENT:
        raise PermanentFailure(detail)
    raise TempFail(detail)


def via_smtp(data: bytes, mail_from: str, rcpt: str, config: Config) -> None:
    """Hand the reply to the smarthost [reply] smtp_host:smtp_port."""
    import smtplib

    settings = config.reply
    host, port = settings.smtp_host, settings.smtp_port
    verify = not _is_loopback(host)
    where = f"smarthost {host}:{port}"
    try:
        smtp: smtplib.SMTP
        if port == 465:
            smtp = smtplib.SMTP_SSL(
                host,
                port,
                local_hostname=config.server.hostname,
                timeout=SMTP_TIMEOUT,
                context=_tls_context(verify),
            )
        else:
            smtp = smtplib.SMTP(host, port, local_hostname=config.server.hostname, timeout=SMTP_TIMEOUT)
        with smtp:
            smtp.ehlo_or_helo_if_needed()
            if port != 465 and settings.smtp_starttls and smtp.has_extn("starttls"):
                smtp.starttls(context=_tls_context(verify))
                smtp.ehlo()
            if settings.smtp_user:
                smtp.login(settings.smtp_user, settings.smtp_password)
            _transfer(smtp, mail_from, rcpt, data, where)
    except smtplib.SMTPAuthenticationError as e:
        raise TempFail(f"{where} refused our login: {e.smtp_code} {_text(e.smtp_error)}") from None
    except (TempFail, PermanentFailure):
        raise
    except smtplib.SMTPResponseException as e:
        raise TempFail(f"{where}: {e.smtp_code} {_text(e.smtp_error)}") from None
    except (OSError, smtplib.SMTPException) as e:
        raise TempFail(f"{where}: {type(e).__name__}: {e}") from None


def via_mx(data: bytes, mail_from: str, rcpt: str, config: Config) -> None:
    """Deliver to the MX hosts of the recipient's domain, best preference first."""
    from .resolver import DNSError, Resolver

    domain = rcpt.rpartition("@")[2].rstrip(".").lower()
    resolver = Resolver.from_settings(config.checks)
    problems: list[str] = []
    try:
        hosts = mx_hosts(resolver, domain)
    except DNSError as e:
        raise TempFail(f"MX lookup of {domain}: {e}") from None
    for host in hosts:
        try:
            addresses = [str(a) for kind in ("A", "AAAA") for a in resolver.resolve(host, kind)]
        except DNSError as e:
            problems.append(f"{host}: {e}")
            continue
        if not addresses:
            problems.append(f"{host}: no address")
        for address in addresses:
            try:
                _deliver_to(address, host, data, mail_from, rcpt, config)
                return
            except TempFail as e:
                problems.append(str(e))
    if problems and all(p.endswith(": no address") for p in problems):
        raise PermanentFailure(f"no MX host of {domain} has an address ({'; '.join(problems[:3])})")
    raise TempFail(f"no MX host of {domain} took the reply: {'; '.join(problems[-3:])}")


def mx_hosts(resolver: Any, domain: str) -> list[str]:
    """DOMAIN's mail hosts in preference order; [DOMAIN] when it has no MX (RFC 5321 5.1)."""
    if domain.startswith("[") and domain.endswith("]"):  # an address literal
        return [domain[1:-1].removeprefix("IPv6:")]
    response = resolver.query(domain, "MX")
    if response.nxdomain:
        raise PermanentFailure(f"{domain}: no such domain")
    records = [r.value for r in response.records if r.rdtype == "MX"]
    if not records and any(r.rdtype == "CNAME" for r in response.records):
        records = resolver.resolve(domain, "MX")
    if not records:
        return [domain]
    if len(records) == 1 and records[0][1] == "":
        raise PermanentFailure(f"{domain} accepts no mail (null MX, RFC 7505)")
    return [host for _, host in sorted(records, key=lambda r: r[0]) if host]


def _deliver_to(address: str, host: str, data: bytes, mail_from: str, rcpt: str, config: Config) -> None:
    import smtplib

    where = f"{host} [{address}]"
    try:
        with smtplib.SMTP(
            address, MX_PORT, local_hostname=config.server.hostname, timeout=SMTP_TIMEOUT
        ) as smtp:
            smtp.ehlo_or_helo_if_needed()
            if smtp.has_extn("starttls"):  # opportunistic (RFC 7435): encrypt, don't verify
                smtp.starttls(context=_tls_context(verify=False))
                smtp.ehlo()
            _transfer(smtp, mail_from, rcpt, data, where)
    except (TempFail, PermanentFailure):
        raise
    except smtplib.SMTPResponseException as e:
        _raise_for(e.smtp_code, e.smtp_error, where)
    except (OSError, smtplib.SMTPException) as e:
        raise TempFail(f"{where}: {type(e).__name__}: {e}") from None


def _transfer(smtp: Any, mail_from: str, rcpt: str, data: bytes, where: str) -> None:
    """MAIL, RCPT, DATA on a ready connection; 4xx -> TempFail, 5xx -> PermanentFailure."""
    import smtplib

    options = []
    if not data.isascii():
        if b"\r\n\r\n" in data and not data.split(b"\r\n\r\n", 1)[0].isascii():
            options.append("SMTPUTF8")
        if smtp.has_extn("8bitmime"):
            options.append("BODY=8BITMIME")
    try:
        smtp.sendmail(mail_from, [rcpt], data, mail_options=options)
    except smtplib.SMTPRecipientsRefused as e:
        code, text = next(iter(e.recipients.values()))
        _raise_for(code, text, where)
    except smtplib.SMTPNotSupportedError as e:
        raise PermanentFailure(f"{where}: {e}") from None
    except smtplib.SMTPResponseException as e:
        _raise_for(e.smtp_code, e.smtp_error, where)


def _raise_for(code: int, text: bytes | str, where: str) -> None:
    detail = f"{where}: {code} {_text(text)}"
    if 500 <= code < 600:
        raise PermanentFailure(detail)
    raise TempFail(detail)


def _text(value: bytes | str) -> str:
    text = value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)
    return " ".join(text.split())[:300]


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _tls_context(verify: bool) -> Any:
    import ssl

    context = ssl.create_default_context()
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


TRANSPORTS: dict[str, Callable[[bytes, str, str, Config], None]] = {
    "outbox": via_outbox,
    "sendmail": via_sendmail,
    "smtp": via_smtp,
    "mx": via_mx,
}
