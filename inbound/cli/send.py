"""`mailserver.py send`: a small SMTP client to trigger an automation.

Sending (SPEC §3):

    mailserver.py send --to ADDR [--to ADDR...] [--server HOST:PORT] [--from ADDR]
                       [--subject S] [--body B | --file F] [--attach FILE...] [-v]

builds a plain message (or sends the ready .eml of --file, `-` for stdin, as it is) to
the server (default 127.0.0.1:2525, the `listen` default).  -v prints the SMTP dialogue
on stderr as `C:`/`S:` lines; the server's final reply goes to stdout.  Exit status:

    0   the server accepted the message for every recipient (250)
    75  EX_TEMPFAIL     a 4xx reply, or no connection (refused, time-out, closed)
    69  EX_UNAVAILABLE  a 5xx reply (for any recipient: the others may have got it)
    64  EX_USAGE        bad arguments;  66 EX_NOINPUT: the --file cannot be read

Replying from a program handler (`send --reply`) is reply.py beside this file, forwarding
(`send --forward ADDR`) forward.py.

This module speaks SMTP as a client only; it knows nothing of the server's session.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from ..exits import EX_NOINPUT, EX_OK, EX_TEMPFAIL, EX_UNAVAILABLE, EX_USAGE

DEFAULT_SERVER = "127.0.0.1:2525"
DEFAULT_FROM = "you@localhost"
DEFAULT_SUBJECT = "Test message from mailserver.py send"
DEFAULT_BODY = "This is a test message sent by `mailserver.py send`.\n"
DATA_LINES_SHOWN = 30


def add_arguments(parser: Any) -> None:
    """Register the options of `send` on an argparse (sub)parser."""
    import argparse

    parser.add_argument(
        "--to", action="append", metavar="ADDR", help="recipient (repeat for more); required unless --reply"
    )
    parser.add_argument(
        "--server",
        default=DEFAULT_SERVER,
        metavar="HOST:PORT",
        help=f"where to send (default {DEFAULT_SERVER})",
    )
    parser.add_argument(
        "--from", dest="from_", metavar="ADDR", help=f"sender, envelope and From: (default {DEFAULT_FROM})"
    )
    parser.add_argument("--subject", metavar="S", help="the Subject (not with --file)")
    content = parser.add_mutually_exclusive_group()
    content.add_argument("--body", metavar="B", help="the body text")
    content.add_argument(
        "--file", metavar="F", help="a ready .eml to send as it is (- for stdin); with --reply: the body text"
    )
    parser.add_argument("--attach", action="append", metavar="FILE", help="attach FILE (repeat for more)")
    parser.add_argument("--helo", default="localhost", metavar="NAME", help="EHLO name (default localhost)")
    parser.add_argument("--timeout", type=float, default=30.0, metavar="SECONDS", help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true", help="print the SMTP dialogue on stderr")
    parser.add_argument(
        "--reply",
        nargs="?",
        const="",
        metavar="QUEUE_ID",
        help="from a program handler: answer the sender of spooled message QUEUE_ID (default $QUEUE_ID) "
        "with the RFC 3834 checks and the [reply] transport",
    )
    parser.add_argument("--handler", metavar="NAME", help="with --reply: handler name for the rate limit")
    parser.add_argument(
        "--forward",
        metavar="ADDR",
        help="from a program handler: forward spooled message $QUEUE_ID as received to ADDR "
        "(SRS, ARC, DKIM; the [reply] transport)",
    )
    parser.add_argument("--queue-id", metavar="ID", help="with --forward: the message (default $QUEUE_ID)")


def main(args: Any) -> int:
    """Run `send` with parsed ARGS; the exit status."""
    if not args.to:
        return usage("--to ADDR is required")
    try:
        host, port = parse_server(args.server)
    except ValueError as e:
        return usage(str(e))
    if args.file and (args.subject is not None or args.attach):
        return usage("--subject and --attach go with --body, not with --file (it is sent as it is)")
    sender = args.from_ or DEFAULT_FROM
    if args.file:
        try:
            data = read_input(args.file).replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")  # bare LF is refused
        except OSError as e:
            print(f"mailserver send: {args.file}: {e.strerror}", file=sys.stderr)
            return EX_NOINPUT
    else:
        try:
            data = compose(sender, args.to, args.subject, args.body, args.attach or [])
        except OSError as e:
            print(f"mailserver send: {e.filename}: {e.strerror}", file=sys.stderr)
            return EX_NOINPUT
    return transmit(
        host, port, sender, args.to, data, helo=args.helo, verbose=args.verbose, timeout=args.timeout
    )


def usage(message: str) -> int:
    print(f"mailserver send: {message}", file=sys.stderr)
    return EX_USAGE


def read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


def parse_server(text: str) -> tuple[str, int]:
    """'HOST:PORT', '[::1]:PORT', '::1:PORT', 'HOST' or '::1' (port 25) -> (host, port).

    An IPv6 address without brackets takes its last group as the port when what is left
    is an address itself (::1:25 is ::1, port 25); write [::1:25] for the address."""
    host, port = text.strip(), "25"
    if host.startswith("["):
        host, _, rest = host[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else port
    elif host.count(":") == 1:
        host, port = host.split(":")
    elif host.count(":") > 1:
        import ipaddress

        address, _, last = host.rpartition(":")
        try:
            if last.isdigit() and address not in ("", ":") and ipaddress.IPv6Address(address.strip("[]")):
                host, port = address, last
        except ValueError:
            pass  # all of it is the address
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--server {text!r}: expected HOST:PORT")
    return host, int(port)


def compose(sender: str, to: list[str], subject: str | None, body: str | None, attach: list[str]) -> bytes:
    """A plain test message (CRLF)."""
    import mimetypes
    from email import policy
    from email.message import EmailMessage
    from email.utils import formatdate, make_msgid

    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(to)
    message["Subject"] = DEFAULT_SUBJECT if subject is None else subject
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid("send", domain=sender.rpartition("@")[2] or "localhost")
    message.set_content(DEFAULT_BODY if body is None else body)
    for path in attach:
        with open(path, "rb") as f:
            content = f.read()
        kind = mimetypes.guess_type(path)[0] or "application/octet-stream"
        maintype, _, subtype = kind.partition("/")
        message.add_attachment(content, maintype=maintype, subtype=subtype, filename=os.path.basename(path))
    addresses = sender + "".join(to)
    return message.as_bytes(policy=policy.SMTP if addresses.isascii() else policy.SMTPUTF8)


def transmit(
    host: str,
    port: int,
    sender: str,
    recipients: list[str],
    data: bytes,
    *,
    helo: str = "localhost",
    verbose: bool = False,
    timeout: float = 30.0,
) -> int:
    """One SMTP transaction; prints the outcome; the exit status (see the module docstring)."""
    import smtplib

    where = f"{host}:{port}"
    try:
        with _Client(host, port, local_hostname=helo, timeout=timeout, echo=verbose) as smtp:
            options = []
            if not (sender + "".join(recipients)).isascii():
                options.append("SMTPUTF8")
            if not data.isascii() and smtp.has_extn("8bitmime"):
                options.append("BODY=8BITMIME")
            refused = smtp.sendmail(sender, recipients, data, mail_options=options)
            code, text = smtp.last_reply
    except smtplib.SMTPRecipientsRefused as e:
        return _refusals(e.recipients)
    except smtplib.SMTPResponseException as e:  # greeting, EHLO, MAIL or DATA refused
        return _failed(where, e.smtp_code, e.smtp_error)
    except smtplib.SMTPNotSupportedError as e:
        print(f"mailserver send: {where}: {e}", file=sys.stderr)
        return EX_UNAVAILABLE
    except (OSError, smtplib.SMTPException) as e:
        print(f"mailserver send: {where}: {type(e).__name__}: {e}", file=sys.stderr)
        return EX_TEMPFAIL
    print(f"{code} {_text(text)}")
    return _refusals(refused) if refused else EX_OK


def _refusals(refused: dict[str, tuple[int, bytes]]) -> int:
    for address, (code, text) in refused.items():
        print(f"mailserver send: <{address}>: {code} {_text(text)}", file=sys.stderr)
    return EX_UNAVAILABLE if any(code >= 500 for code, _ in refused.values()) else EX_TEMPFAIL


def _failed(where: str, code: int, text: bytes | str) -> int:
    print(f"mailserver send: {where}: {code} {_text(text)}", file=sys.stderr)
    return EX_UNAVAILABLE if code >= 500 else EX_TEMPFAIL


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _client_class() -> Any:
    import smtplib

    class Client(smtplib.SMTP):
        """smtplib.SMTP that can print the dialogue as C:/S: lines and keeps the last reply."""

        def __init__(self, *args: Any, echo: bool = False, **kwargs: Any) -> None:
            self.echo = echo
            self.last_reply: tuple[int, bytes] = (0, b"")
            super().__init__(*args, **kwargs)

        def send(self, s: Any) -> None:
            if self.echo:
                text = s.decode("utf-8", "replace") if isinstance(s, bytes) else str(s)
                lines = text.split("\r\n")
                if lines and lines[-1] == "":
                    lines.pop()
                if len(lines) > DATA_LINES_SHOWN + 2:
                    hidden = len(lines) - DATA_LINES_SHOWN - 1
                    lines = lines[:DATA_LINES_SHOWN] + [f"[... {hidden} more lines ...]"] + lines[-1:]
                for line in lines:
                    sys.stderr.write(f"C: {line}\n")
            super().send(s)

        def getreply(self) -> tuple[int, bytes]:
            code, text = super().getreply()
            self.last_reply = (code, text)
            if self.echo:
                lines = text.decode("utf-8", "replace").split("\n") or [""]
                for n, line in enumerate(lines):
                    sys.stderr.write(f"S: {code}{' ' if n == len(lines) - 1 else '-'}{line}\n")
            return code, text

    return Client


def _Client(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - reads like the class it makes
    return _client_class()(*args, **kwargs)
