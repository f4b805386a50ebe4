"""How a reply leaves: an outbox file, sendmail, a smarthost, or the recipient's MX hosts.

Each transport is `(data CRLF, MAIL FROM, recipient, config) -> None`, or raises
TempFail (try the handler again later) or PermanentFailure (retrying cannot help).

    outbox    an .eml file in `[reply] outbox`, written atomically (dev/demo)
    sendmail  the `[reply] sendmail` command, split like a shell would but run without
              one, the message on stdin (recipient appended unless -t is given; a
              forward drops -t and adds -f MAIL FROM); its exit status judged by the
              one sysexits table (exits.py)
    smtp      the smarthost smtp_host:smtp_port; STARTTLS when offered and smtp_starttls
              (certificates are verified except on loopback), AUTH when smtp_user is set;
              port 465 means implicit TLS
    mx        straight to the recipient domain's MX hosts in preference order (the
              domain itself when it has none, nothing for a null MX), looked up with the
              resolver of `[checks]`; opportunistic STARTTLS
"""

from __future__ import annotations

import os
import time

from .. import exits
from ..outcomes import TempFail

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ..config import Config

SMTP_TIMEOUT = 30.0
SENDMAIL_TIMEOUT = 60.0
#: Port of MX hosts; tests point it at a local sink.
MX_PORT = 25


class PermanentFailure(Exception):
    """The reply can never be delivered (5xx, null MX, no such domain): log it, don't retry."""


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
    if mail_from:  # a forward: this envelope, not the header's recipients (-t would loop)
        argv = [a for a in argv if a != "-t"] + ["-f", mail_from]
    if "-t" not in argv:
        argv.append(rcpt)  # refusal() (forward: its ADDRESS) made sure it does not start with "-"
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
    if exits.is_permanent(done.returncode):
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
    from ..checks.resolver import DNSError, Resolver

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
