"""One SMTP session (RFC 5321) over a Channel: verbs in, named replies out, messages to the spool.

One method per verb (`smtp_MAIL`), found by name; each is a run of guard clauses that
end in one named reply from replies.py.  Extensions: PIPELINING, SIZE, 8BITMIME,
SMTPUTF8, ENHANCEDSTATUSCODES, CHUNKING (BDAT), and STARTTLS when a TLS context is given.

Message data goes to the spool as it arrives (constant memory), through a ContentCheck
that refuses what must not be in a message: bare CR or bare LF (SMTP smuggling),
NUL, lines over 1000 octets.  Only CRLF.CRLF ends DATA.  The final 250 is sent after
Incoming.commit(), that is after fsync and the rename into queue/.

The session knows nothing of handlers: a Gate (given by the caller) decides on each
recipient and may veto a finished message before the final reply.  Every unexpected
error inside a verb becomes `451 4.3.0` and a log line; never a traceback on the wire.
"""

from __future__ import annotations

import re
import time

from . import log
from .channel import Channel, Closed, Timeout
from .replies import Decision, code_of, render
from .spool import Incoming, Spool

TYPE_CHECKING = False  # typing and dataclasses cost start-up time: type-checker names only
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, Protocol

    class Gate(Protocol):
        """Policy the session asks, supplied by the caller (the router, the checks)."""

        def decide_recipient(self, address: str, domain: str) -> Decision:
            """'recipient_ok' with a route to accept; any other reply name refuses."""

        def decide_message(self, incoming: Incoming, envelope: dict[str, Any]) -> Decision | None:
            """Called with the message on disk in incoming/ before the final reply; None accepts."""


COMMAND_LINE_LIMIT = 512  # RFC 5321 4.5.3.1.4, CRLF included
TEXT_LINE_LIMIT = 1000  # RFC 5321 4.5.3.1.6, CRLF included
ERROR_LIMIT = 10  # 5xx replies before 421 and close
COMMAND_LIMIT = 1000  # commands in one session (NOOP every 299 s must not hold a process forever)
READ_CHUNK = 65536


class Client:
    """Who is connected: address ("" when unknown, never assumed 127.0.0.1), port, name."""

    def __init__(self, addr: str = "", port: str = "", host: str = "") -> None:
        self.addr, self.port, self.host = addr, port, host


class Transaction:
    """MAIL FROM to the final reply."""

    def __init__(self, sender: str, params: dict[str, str], smtputf8: bool) -> None:
        self.sender = sender
        self.params = params
        self.smtputf8 = smtputf8
        self.recipients: list[dict[str, str]] = []
        self.incoming: Incoming | None = None
        self.check: ContentCheck | None = None
        self.failed_reply: str | None = None  # BDAT: reply name of an earlier failure


class Summary:
    """What the connection's log line says."""

    def __init__(self) -> None:
        self.helo = ""
        self.senders: list[str] = []
        self.recipients: list[str] = []
        self.refused: list[str] = []  # "address:code" of recipients we refused
        self.size = 0
        self.queue_ids: list[str] = []
        self.reply = ""
        self.tls = ""


class ContentCheck:
    """Streams message bytes and remembers the first reason to refuse them (a reply name)."""

    def __init__(self) -> None:
        self.problem: str | None = None
        self.line_length = 0  # octets since the last LF
        self.last_was_cr = False

    def feed(self, data: bytes) -> None:
        if self.problem or not data:
            return
        if b"\0" in data:
            self.problem = "nul_in_data"
            return
        lf, cr, crlf = data.count(b"\n"), data.count(b"\r"), data.count(b"\r\n")
        joined = self.last_was_cr and data[:1] == b"\n"  # CR|LF split between feeds
        if lf - crlf - joined > 0:
            self.problem = "bare_lf"
            return
        if self.last_was_cr and not joined:
            self.problem = "bare_cr"
            return
        trailing_cr = data.endswith(b"\r")
        if cr - crlf - trailing_cr > 0:
            self.problem = "bare_cr"
            return
        self.last_was_cr = trailing_cr
        first = data.find(b"\n")
        if first < 0:
            self.line_length += len(data)
        else:
            inner = data[first + 1 :].split(b"\n")[:-1]
            longest = max(self.line_length + first + 1, *(len(p) + 1 for p in inner), 0)
            self.line_length = len(data) - data.rfind(b"\n") - 1
            if longest > TEXT_LINE_LIMIT:
                self.problem = "text_line_too_long"
                return
        if self.line_length > TEXT_LINE_LIMIT:
            self.problem = "text_line_too_long"

    def finish(self) -> None:
        if not self.problem and (self.last_was_cr or self.line_length):
            self.problem = "bare_cr" if self.last_was_cr else "bare_lf"


# Addresses (RFC 5321 4.1.2, with RFC 6531 UTF-8 when SMTPUTF8 is used)
# (non-ASCII as the negated class [^\x00-\x7f]: ranges up to U+10FFFF take 100 ms to compile)
_ATOM = r"(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]|[^\x00-\x7f])+"
_LOCAL = rf'(?:{_ATOM}(?:\.{_ATOM})*|"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|[^\x00-\x7f]|\\[\x20-\x7e])*")'
_ALNUM = r"(?:[A-Za-z0-9]|[^\x00-\x7f])"
_LABEL = rf"{_ALNUM}(?:(?:[A-Za-z0-9\-]|[^\x00-\x7f])*{_ALNUM})?"
_DOMAIN = rf"(?:{_LABEL}(?:\.{_LABEL})*\.?|\[[^\[\]\\\s]+\])"
MAILBOX = re.compile(rf"({_LOCAL})@({_DOMAIN})")
SOURCE_ROUTE = re.compile(rf"@{_DOMAIN}(?:,@{_DOMAIN})*:")
HELO_ARG = re.compile(r"[^\x00-\x20\x7f]{1,255}")
MAX_ADDRESS = 320


def parse_path(text: str, keyword: str) -> tuple[str, str] | None:
    """'FROM:<a@b> SIZE=1' -> ('a@b', 'SIZE=1'); None when it is not of that form."""
    if not text[: len(keyword)].isascii() or text[: len(keyword)].upper() != keyword:
        return None
    rest = text[len(keyword) :].lstrip(" ")
    if not rest.startswith("<"):
        return None
    quoted, escaped = False, False
    for i, ch in enumerate(rest[1:], 1):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            params = rest[i + 1 :]
            if params and not params.startswith(" "):
                return None
            return rest[1:i], params.strip(" ")
    return None


def check_mailbox(path: str) -> tuple[str, str] | str:
    """(local, domain) of a path, or a reason it is malformed."""
    path = SOURCE_ROUTE.sub("", path, count=1) if path.startswith("@") else path
    if len(path) > MAX_ADDRESS:
        return "address too long"
    match = MAILBOX.fullmatch(path)
    if not match:
        return f"<{path}> is not local@domain"
    return match.group(1), match.group(2)


def parse_params(text: str) -> dict[str, str] | str:
    params: dict[str, str] = {}
    for item in filter(None, text.split(" ")):  # SP only: no control or Unicode "whitespace"
        key, _, value = item.partition("=")
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9\-]*", key) or key.upper() in params:
            return item
        key = key.upper()
        params[key] = value
    return params


class Session:
    def __init__(
        self,
        channel: Channel,
        *,
        hostname: str,
        max_message_size: int,
        max_recipients: int,
        command_timeout: float,
        data_timeout: float,
        gate: Gate,
        spool: Spool,
        client: Client,
        start_tls: Callable[[Channel], Channel] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.channel = channel
        self.hostname = hostname
        self.max_size = max_message_size
        self.max_recipients = max_recipients
        self.command_timeout = command_timeout
        self.data_timeout = data_timeout
        self.gate = gate
        self.spool = spool
        self.client = client
        self.start_tls = start_tls
        self.clock = clock
        self.helo: str | None = None
        self.esmtp = False
        self.tx: Transaction | None = None
        self.errors = 0
        self.commands = 0
        self.running = True
        self.summary = Summary()
        self.accepted: list[Incoming] = []

    # -- the loop ------------------------------------------------------------
    def run(self) -> Summary:
        try:
            self.reply("greeting", host=self.hostname)
            while self.running:
                line = self.read_command()
                if line is None:
                    break
                self.dispatch(line)
        except Timeout:
            self.reply_quietly("timeout", host=self.hostname)
        except Closed:
            pass
        finally:
            self.abort_transaction()
        return self.summary

    def read_command(self) -> bytes | None:
        deadline = self.clock() + self.command_timeout
        line = self.channel.read_line(COMMAND_LINE_LIMIT, deadline)
        if not line:
            return None
        if not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):  # skip the rest of the long line
                line = self.channel.read_line(COMMAND_LINE_LIMIT, deadline)
            self.reply("line_too_long")
            return b""
        return line

    def dispatch(self, line: bytes) -> None:
        if not line:
            return
        self.commands += 1
        if self.commands > COMMAND_LIMIT:
            self.reply("too_many_commands", host=self.hostname)
            return
        text = line[:-2] if line.endswith(b"\r\n") else line[:-1]
        if b"\0" in text:
            self.reply("nul_in_command")
            return
        if b"\r" in text:
            self.reply("unknown_command")
            return
        verb, _, arg = text.partition(b" ")
        method = getattr(self, "smtp_" + verb.decode("ascii", "replace").upper(), None)
        if method is None or not verb.isalpha():
            self.reply("unknown_command")
            return
        if self.tx and self.tx.incoming and verb.upper() not in (b"BDAT", b"RSET", b"QUIT", b"NOOP"):
            self.reply("bdat_in_progress")
            return
        try:
            argument = arg.decode("utf-8")
        except UnicodeDecodeError:
            self.reply("bad_syntax", usage="not valid UTF-8")
            return
        try:
            method(argument)
        except (Timeout, Closed):
            raise
        except Exception:
            import traceback

            log.error(
                "internal error in %s: %s",
                verb.decode("ascii", "replace"),
                traceback.format_exc().replace("\n", " | "),
            )
            if self.tx and self.tx.incoming:  # mid-message: the data cannot be trusted
                self.abort_transaction()
            self.reply("internal_error")

    def reply(self, name: str, **fields: Any) -> None:
        data = render(name, **fields)
        self.summary.reply = data.decode("utf-8", "replace").strip()
        code = code_of(name)
        self.channel.write(data)
        if code >= 500 and name not in ("too_many_errors",):
            self.errors += 1
            if self.errors >= ERROR_LIMIT:
                self.reply("too_many_errors", host=self.hostname)
                self.running = False
        if code == 421:
            self.running = False

    def reply_quietly(self, name: str, **fields: Any) -> None:
        try:
            self.reply(name, **fields)
        except (Closed, Timeout):
            pass

    # -- greeting and chatter ---------------------------------------------------
    def smtp_EHLO(self, arg: str) -> None:
        if not HELO_ARG.fullmatch(arg):
            self.reply("bad_syntax", usage="EHLO domain")
            return
        self.abort_transaction()
        self.helo, self.esmtp = arg, True
        self.summary.helo = arg
        lines = [
            f"{self.hostname} greets {arg}",
            "PIPELINING",
            f"SIZE {self.max_size}",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
        ]
        if self.start_tls and not self.channel.tls_version:
            lines.append("STARTTLS")
        lines.append("HELP")
        text = "".join(f"250-{item}\r\n" for item in lines[:-1]) + f"250 {lines[-1]}\r\n"
        self.summary.reply = "250 EHLO"
        self.channel.write(text.encode("utf-8", "replace"))

    def smtp_HELO(self, arg: str) -> None:
        if not HELO_ARG.fullmatch(arg):
            self.reply("bad_syntax", usage="HELO domain")
            return
        self.abort_transaction()
        self.helo, self.esmtp = arg, False
        self.summary.helo = arg
        self.reply("helo", host=self.hostname)

    def smtp_NOOP(self, arg: str) -> None:
        self.reply("ok")

    def smtp_RSET(self, arg: str) -> None:
        if arg.strip():
            self.reply("bad_syntax", usage="RSET")
            return
        self.abort_transaction()
        self.reply("reset")

    def smtp_QUIT(self, arg: str) -> None:
        self.reply("bye", host=self.hostname)
        self.running = False

    def smtp_HELP(self, arg: str) -> None:
        self.reply("help")

    def smtp_VRFY(self, arg: str) -> None:
        if not arg.strip():
            self.reply("bad_syntax", usage="VRFY address")
            return
        self.reply("vrfy")

    def smtp_EXPN(self, arg: str) -> None:
        self.reply("expn")

    def smtp_STARTTLS(self, arg: str) -> None:
        if not self.start_tls:
            self.reply("tls_unavailable")
            return
        if self.channel.tls_version:
            self.reply("tls_active")
            return
        if arg.strip():
            self.reply("bad_syntax", usage="STARTTLS")
            return
        if not self.helo:
            self.reply("need_helo")
            return
        # Anything the client sent after STARTTLS in plaintext is dropped, never executed
        # after the handshake (CVE-2011-0411 class).
        dropped = self.channel.discard_pending_input()
        if dropped:
            log.warning("dropped %d octets pipelined after STARTTLS", dropped)
        self.reply("tls_go")
        self.channel = self.start_tls(self.channel)
        self.abort_transaction()
        self.helo, self.esmtp = None, False  # RFC 3207 4.2: forget everything
        self.summary.tls = f"{self.channel.tls_version} {self.channel.tls_cipher}"

    # -- the transaction --------------------------------------------------------
    def smtp_MAIL(self, arg: str) -> None:
        if not self.helo:
            self.reply("need_helo")
            return
        if self.tx:
            self.reply("nested_mail")
            return
        parsed = parse_path(arg, "FROM:")
        if parsed is None:
            self.reply("bad_syntax", usage="MAIL FROM:<address> [SIZE=n] [BODY=8BITMIME] [SMTPUTF8]")
            return
        path, param_text = parsed
        params = parse_params(param_text)
        if isinstance(params, str):
            self.reply("bad_syntax", usage=f"bad parameter {params}")
            return
        for key, value in params.items():
            if key == "SIZE" and not (value.isascii() and value.isdigit() and len(value) <= 20):
                self.reply("bad_syntax", usage="SIZE=number")
                return
            if key == "BODY" and not (value.isascii() and value.upper() in ("7BIT", "8BITMIME")):
                self.reply("bad_syntax", usage="BODY=7BIT or BODY=8BITMIME")
                return
            if key == "SMTPUTF8" and value:
                self.reply("bad_syntax", usage="SMTPUTF8 takes no value")
                return
            if key not in ("SIZE", "BODY", "SMTPUTF8"):
                self.reply("unknown_parameter", param=key)
                return
        smtputf8 = "SMTPUTF8" in params
        if path:
            checked = check_mailbox(path)
            if isinstance(checked, str):
                self.reply("bad_address", why=checked)
                return
            if not smtputf8 and not path.isascii():
                self.reply("non_ascii_address")
                return
            path = SOURCE_ROUTE.sub("", path, count=1) if path.startswith("@") else path
        if int(params.get("SIZE", "0")) > self.max_size:
            self.reply("size_declared_too_big", limit=self.max_size)
            return
        self.tx = Transaction(sender=path, params=params, smtputf8=smtputf8)
        self.summary.senders.append(path or "<>")
        self.reply("sender_ok")

    def smtp_RCPT(self, arg: str) -> None:
        if not self.tx:
            self.reply("need_mail")
            return
        if self.tx.failed_reply:  # a BDAT failed: this transaction is over until RSET
            self.reply("bdat_aborted")
            return
        parsed = parse_path(arg, "TO:")
        if parsed is None:
            self.reply("bad_syntax", usage="RCPT TO:<address>")
            return
        path, param_text = parsed
        if param_text:
            self.reply("unknown_parameter", param=param_text.split(" ")[0])
            return
        if path.lower() == "postmaster":  # RFC 5321 4.5.1: <postmaster> without a domain
            path = f"postmaster@{self.gate_default_domain()}"
        checked = check_mailbox(path)
        if isinstance(checked, str):
            self.reply("bad_recipient_syntax", why=checked)
            return
        if not self.tx.smtputf8 and not path.isascii():
            self.reply("non_ascii_address")
            return
        local, domain = checked
        address = f"{local}@{domain.lower().rstrip('.')}"
        if any(r["address"] == address for r in self.tx.recipients):
            self.reply("recipient_ok")  # a duplicate collapses into the first
            return
        if len(self.tx.recipients) >= self.max_recipients:
            self.reply("too_many_recipients")
            return
        decision = self.gate.decide_recipient(address, domain.lower().rstrip("."))
        if decision.reply == "recipient_ok":
            self.tx.recipients.append({"address": address, "route": decision.route or ""})
            self.summary.recipients.append(address)
        else:
            self.summary.refused.append(f"{address}:{code_of(decision.reply)}")
        self.reply(decision.reply, **decision.fields)

    def gate_default_domain(self) -> str:
        return getattr(self.gate, "default_domain", self.hostname)

    def smtp_DATA(self, arg: str) -> None:
        if arg.strip():
            self.reply("bad_syntax", usage="DATA")
            return
        if not self.tx:
            self.reply("need_mail")
            return
        if self.tx.failed_reply:
            self.reply("bdat_aborted")
            return
        if not self.tx.recipients:
            self.reply("need_rcpt")
            return
        tx = self.begin_message(self.tx)
        if tx is None:
            self.reply("storage_full")
            return
        self.reply("start_data")
        self.receive_data(tx, self.clock() + self.data_timeout)
        self.end_message(tx)

    def receive_data(self, tx: Transaction, deadline: float) -> None:
        """Stream DATA to the spool in bulk until CRLF.CRLF, undoing dot-stuffing exactly.

        Only CRLF.CRLF ends the data (RFC 5321 4.1.1.4): a '.' line after a bare LF or CR is
        data, so a smuggled end is swallowed into this message, which the content check then
        refuses.  The DATA line itself counts as the CRLF before a leading '.'.
        """
        # Invariant: data[:2] is context already taken (at first the CRLF ending the DATA
        # command), so a CRLF.CRLF or CRLF. spanning two reads is seen whole; replace()
        # never changes those two context octets.
        pending = b"\r\n"
        while True:
            chunk = self.channel.read_available(deadline)
            if not chunk:
                raise Closed
            data = pending + chunk
            end = data.find(b"\r\n.\r\n")
            if end >= 0:
                self.channel.unread(data[end + 5 :])  # pipelined commands after the data
                self.take_data(tx, data[: end + 2].replace(b"\r\n.", b"\r\n")[2:])
                return
            cut = len(data) - 4  # an end marker not found may start in the last 4 octets
            if cut > 2:
                self.take_data(tx, data[:cut].replace(b"\r\n.", b"\r\n")[2:])
                pending = data[cut - 2 :]
            else:
                pending = data

    def smtp_BDAT(self, arg: str) -> None:
        parts = [part for part in arg.split(" ") if part]  # SP only, as RFC 3030 writes it
        if not (
            1 <= len(parts) <= 2 and parts[0].isascii() and parts[0].isdigit() and len(parts[0]) <= 20
        ) or (len(parts) == 2 and not (parts[1].isascii() and parts[1].upper() == "LAST")):
            self.reply("bad_syntax", usage="BDAT size [LAST]")
            return
        size, last = int(parts[0]), len(parts) == 2
        deadline = self.clock() + self.data_timeout
        tx = self.tx
        if tx is None or not tx.recipients or tx.failed_reply:
            self.skip_chunk(size, deadline)
            self.reply("bdat_aborted" if tx and tx.failed_reply else "need_mail" if not tx else "need_rcpt")
            return
        if tx.incoming is None and self.begin_message(tx) is None:
            self.skip_chunk(size, deadline)
            self.reply("storage_full")
            return
        left = size
        while left:
            chunk = self.channel.read_exact(min(left, READ_CHUNK), deadline)
            if not chunk:
                raise Closed
            left -= len(chunk)
            self.take_data(tx, chunk)
        if tx.check and tx.check.problem == "too_big":
            tx.failed_reply = "too_big"
            self.abort_transaction(keep=True)
            self.reply("too_big", limit=self.max_size)
            return
        if last:
            self.end_message(tx)
        else:
            self.reply("chunk_ok", size=size)

    def skip_chunk(self, size: int, deadline: float) -> None:
        while size > 0:
            chunk = self.channel.read_exact(min(size, READ_CHUNK), deadline)
            if not chunk:
                raise Closed
            size -= len(chunk)

    def begin_message(self, tx: Transaction) -> Transaction | None:
        """Open the spool file and write our Received: header first."""
        try:
            tx.incoming = self.spool.receive()
        except OSError as e:
            log.error("cannot spool: %s", e)
            self.abort_transaction()
            return None
        tx.check = ContentCheck()
        header = self.received_header(tx, tx.incoming.queue_id)
        self.received_header_size = len(header)
        tx.incoming.write(header)
        return tx

    received_header_size = 0

    def take_data(self, tx: Transaction, data: bytes) -> None:
        assert tx.incoming and tx.check
        tx.check.feed(data)
        if tx.incoming.size - self.received_header_size + len(data) > self.max_size:
            tx.check.problem = tx.check.problem or "too_big"
        if not tx.check.problem:
            try:
                tx.incoming.write(data)
            except OSError as e:  # disk full, file too big: keep reading to the end, then 452
                log.error("%s: cannot write to the spool: %s", tx.incoming.queue_id, e)
                tx.check.problem = "storage_full"

    def end_message(self, tx: Transaction) -> None:
        """The data is complete: refuse it, or fsync, commit, and only then 250."""
        assert tx.incoming and tx.check
        tx.check.finish()
        incoming = tx.incoming
        problem = tx.check.problem
        self.summary.size += incoming.size
        if problem:
            self.abort_transaction()
            self.reply(problem, limit=self.max_size)
            return
        try:
            envelope = incoming.finish(
                tx.sender,
                tx.recipients,
                helo=self.helo or "",
                esmtp=self.esmtp,
                smtputf8=tx.smtputf8,
                body=tx.params.get("BODY", "").upper(),
                remote_addr=self.client.addr,
                remote_port=self.client.port,
                remote_host=self.client.host,
                tls=self.summary.tls,
            )
        except OSError as e:
            log.error("cannot spool %s: %s", incoming.queue_id, e)
            self.abort_transaction()
            self.reply("storage_full")
            return
        verdict = self.gate.decide_message(incoming, envelope)
        if verdict is not None:
            self.abort_transaction()
            self.reply(verdict.reply, **verdict.fields)
            return
        incoming.commit()
        self.accepted.append(incoming)  # still locked: the caller delivers, then releases
        self.tx = None
        self.summary.queue_ids.append(incoming.queue_id)
        self.reply("queued", queue_id=incoming.queue_id)

    def received_header(self, tx: Transaction, queue_id: str) -> bytes:
        """RFC 5321 4.4 trace header; the HELO argument is already restricted to printables."""
        protocol = ("UTF8SMTP" if tx.smtputf8 else "ESMTP" if self.esmtp else "SMTP") + (
            "S" if self.channel.tls_version else ""
        )
        tls = f" ({self.channel.tls_version}:{self.channel.tls_cipher})" if self.channel.tls_version else ""
        source = f"{self.client.host} [{self.client.addr}]" if self.client.host else f"[{self.client.addr}]"
        if not self.client.addr:
            source = "unknown"
        recipient = f"\r\n\tfor <{tx.recipients[0]['address']}>" if len(tx.recipients) == 1 else ""
        date = time.strftime("%a, %d %b %Y %H:%M:%S %z")
        text = (
            f"Received: from {self.helo} ({source})\r\n\tby {self.hostname} (mailserver)"
            f" with {protocol}{tls} id {queue_id}{recipient};\r\n\t{date}\r\n"
        )
        return text.encode("utf-8", "replace")

    def abort_transaction(self, keep: bool = False) -> None:
        tx = self.tx
        if tx and tx.incoming:
            tx.incoming.abort()
            tx.incoming = None
        if not keep:
            self.tx = None
