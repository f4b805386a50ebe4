"""One SMTP session (RFC 5321) over a Channel: verbs in, named replies out, messages to the spool.

One method per verb (`smtp_MAIL`), found by name; each is a run of guard clauses that
end in one named reply from replies.py.  Extensions: PIPELINING, SIZE, 8BITMIME,
SMTPUTF8, ENHANCEDSTATUSCODES, CHUNKING (BDAT), and STARTTLS when a TLS context is given.

Message data goes to the spool as it arrives (constant memory) through a ContentCheck
(data.py).  The final 250 is sent after Transaction.commit(), that is after fsync and
the rename into queue/.  The address grammar is in syntax.py, the transaction's state in
transaction.py, the Received: header in received.py.

The session knows nothing of handlers: a Policy (given by the caller) decides on each
recipient and may veto a finished message before the final reply.  Every unexpected
error inside a verb becomes `451 4.3.0` and a log line; never a traceback on the wire.
"""

from __future__ import annotations

import time

from .. import log
from ..config import canonical_domain
from .channel import Channel, Closed, Timeout
from .data import read_chunk, read_dot_data, skip_chunk
from .received import session_received_header
from .replies import code_of, ehlo_reply, render
from .syntax import (
    HELO_ARG,
    bdat_arguments,
    check_mailbox,
    mail_params_problem,
    parse_params,
    parse_path,
    without_source_route,
)
from .transaction import Client, Summary, Transaction

TYPE_CHECKING = False  # typing and dataclasses cost start-up time: type-checker names only
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from ..spool import Incoming, Spool
    from .transaction import Policy


COMMAND_LINE_LIMIT = 512  # RFC 5321 4.5.3.1.4, CRLF included
ERROR_LIMIT = 10  # protocol errors (5xx but refused recipients) before 421 and close
PROBE_LIMIT = 50  # refused recipients, while none is accepted, before 421 (address probing)
COMMAND_LIMIT = 1000  # commands in one session (NOOP every 299 s must not hold a process forever)
VERBS_ALWAYS_ALLOWED_IN_BDAT = (b"BDAT", b"RSET", b"QUIT", b"NOOP")


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
        policy: Policy,
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
        self.policy = policy
        self.spool = spool
        self.client = client
        self.start_tls = start_tls
        self.clock = clock
        self.helo: str | None = None
        self.esmtp = False
        self.tx: Transaction | None = None
        self.errors = 0
        self.misbehaved = ""  # why the client is to be remembered (too many errors, probing)
        self.refusals = 0  # recipients refused since the last one accepted
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
        if self.tx and self.tx.incoming and verb.upper() not in VERBS_ALWAYS_ALLOWED_IN_BDAT:
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
        except Exception:  # the session's one boundary: 451, a log line, never a traceback
            log.exception("internal error in %s", verb.decode("ascii", "replace"))
            if self.tx and self.tx.incoming:  # mid-message: the data cannot be trusted
                self.abort_transaction()
            self.reply("internal_error")

    def reply(self, name: str, **fields: Any) -> None:
        self.send(render(name, **fields), code_of(name), counted=name != "too_many_errors")

    def send(self, data: bytes, code: int, counted: bool = True) -> None:
        """Write one reply; count errors toward ERROR_LIMIT (refused recipients are not errors)."""
        self.summary.reply = data.decode("utf-8", "replace").strip().rsplit("\r\n", 1)[-1]
        self.channel.write(data)
        if code >= 500 and counted:
            self.errors += 1
            if self.errors >= ERROR_LIMIT:
                self.misbehaved = "too many errors"
                self.reply("too_many_errors", host=self.hostname)
                self.running = False
        if code == 421:
            self.running = False

    def reply_quietly(self, name: str, **fields: Any) -> None:
        try:
            self.reply(name, **fields)
        except (Closed, Timeout):
            pass

    @classmethod
    def verbs(cls) -> list[str]:
        """The verbs this session knows, in the order the class defines them (for HELP)."""
        return [name[5:] for name in vars(cls) if name.startswith("smtp_")]

    # -- greeting and chatter ---------------------------------------------------
    def smtp_EHLO(self, arg: str) -> None:
        if not HELO_ARG.fullmatch(arg):
            self.reply("bad_syntax", usage="EHLO domain")
            return
        self.abort_transaction()
        self.helo, self.esmtp = arg, True
        self.summary.helo = arg
        keywords = ["PIPELINING", f"SIZE {self.max_size}", "8BITMIME", "SMTPUTF8"]
        keywords += ["ENHANCEDSTATUSCODES", "CHUNKING"]
        if self.start_tls and not self.channel.tls_version:
            keywords.append("STARTTLS")
        keywords.append("HELP")
        self.send(ehlo_reply(f"{self.hostname} greets {arg}", keywords), 250)

    def smtp_HELO(self, arg: str) -> None:
        if not HELO_ARG.fullmatch(arg):
            self.reply("bad_syntax", usage="HELO domain")
            return
        self.abort_transaction()
        self.helo, self.esmtp = arg, False
        self.summary.helo = arg
        self.reply("helo", host=self.hostname)

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
        problem = mail_params_problem(params)
        if problem:
            name, field = problem
            self.reply(name, usage=field, param=field)
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
            path = without_source_route(path)
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
            path = f"postmaster@{self.policy.default_domain}"
        checked = check_mailbox(path)
        if isinstance(checked, str):
            self.reply("bad_recipient_syntax", why=checked)
            return
        if not self.tx.smtputf8 and not path.isascii():
            self.reply("non_ascii_address")
            return
        local, domain = checked
        domain = canonical_domain(domain)  # an IDN in either form matches our domains
        address = f"{local}@{domain}"
        if any(r["address"] == address for r in self.tx.recipients):
            self.reply("recipient_ok")  # a duplicate collapses into the first
            return
        if len(self.tx.recipients) >= self.max_recipients:
            self.reply("too_many_recipients")
            return
        decision = self.policy.decide_recipient(address, domain)
        if decision.reply == "recipient_ok":
            self.tx.recipients.append({"address": address, "route": decision.route or ""})
            self.summary.recipients.append(address)
            self.refusals = 0
            self.reply("recipient_ok")
            return
        self.summary.refused.append(f"{address}:{code_of(decision.reply)}")
        # An answer, not a client error: a relay's transaction is never cut short by 421.
        # Probing is bounded instead (PROBE_LIMIT refusals while none is accepted).
        self.send(render(decision.reply, **decision.fields), code_of(decision.reply), counted=False)
        self.refusals += 1
        if self.refusals >= PROBE_LIMIT and not self.tx.recipients:
            self.misbehaved = "too many unknown recipients"
            self.reply("too_many_refused", host=self.hostname)

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
        tx = self.tx
        if not tx.begin(self.spool, self.received_header):
            self.abort_transaction()
            self.finish_reply("storage_full")
            return
        self.reply("start_data")
        read_dot_data(self.channel, self.clock() + self.data_timeout, self.take)
        self.end_message(tx)

    def take(self, data: bytes) -> None:
        assert self.tx
        self.tx.take(data, self.max_size)

    def smtp_BDAT(self, arg: str) -> None:
        parsed = bdat_arguments(arg)
        if parsed is None:
            self.reply("bad_syntax", usage="BDAT size [LAST]")
            return
        size, last = parsed
        deadline = self.clock() + self.data_timeout
        tx = self.tx
        if tx is None or not tx.recipients or tx.failed_reply:
            skip_chunk(self.channel, size, deadline)
            self.reply("bdat_aborted" if tx and tx.failed_reply else "need_mail" if not tx else "need_rcpt")
            return
        if tx.incoming is None and not tx.begin(self.spool, self.received_header):
            skip_chunk(self.channel, size, deadline)
            self.abort_transaction()
            self.finish_reply("storage_full")
            return
        read_chunk(self.channel, size, deadline, self.take)
        if tx.check and tx.check.problem == "too_big":
            tx.failed_reply = "too_big"
            tx.abort()
            self.finish_reply("too_big", limit=self.max_size)
            return
        if last:
            self.end_message(tx)
        else:
            self.reply("chunk_ok", size=size)

    def smtp_RSET(self, arg: str) -> None:
        if arg.strip():
            self.reply("bad_syntax", usage="RSET")
            return
        self.abort_transaction()
        self.reply("reset")

    def smtp_NOOP(self, arg: str) -> None:
        self.reply("ok")

    def smtp_QUIT(self, arg: str) -> None:
        self.reply("bye", host=self.hostname)
        self.running = False

    def smtp_HELP(self, arg: str) -> None:
        offered = {"EXPN": False, "STARTTLS": bool(self.start_tls)}
        listed = [verb for verb in self.verbs() if offered.get(verb, True)]
        self.reply("help", verbs=" ".join(listed))

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

    # -- the end of a message ------------------------------------------------------
    def end_message(self, tx: Transaction) -> None:
        """The data is complete: refuse it, or fsync, commit, and only then 250."""
        assert tx.incoming and tx.check
        tx.check.finish()
        incoming = tx.incoming
        problem = tx.check.problem
        self.summary.size += incoming.size
        if problem:
            self.abort_transaction()
            self.finish_reply(problem, limit=self.max_size)
            return
        try:
            record = tx.finish(
                helo=self.helo or "", esmtp=self.esmtp, client=self.client, tls=self.summary.tls
            )
        except OSError as e:
            log.error("cannot spool %s: %s", incoming.queue_id, e)
            self.abort_transaction()
            self.finish_reply("storage_full")
            return
        verdict = self.policy.decide_message(incoming, record)
        if verdict is not None:
            self.abort_transaction()
            self.finish_reply(verdict.reply, **verdict.fields)
            return
        incoming.commit()
        self.accepted.append(incoming)  # still locked: the caller delivers, then releases
        self.tx = None
        self.summary.queue_ids.append(incoming.queue_id)
        self.finish_reply("queued", queue_id=incoming.queue_id)

    def finish_reply(self, name: str, **fields: Any) -> None:
        """The final reply to a message's data, remembered for the log line."""
        self.summary.outcomes.append(render(name, **fields).decode("utf-8", "replace").strip())
        self.reply(name, **fields)

    def received_header(self, queue_id: str) -> bytes:
        return session_received_header(self, self.tx, queue_id)  # type: ignore[arg-type]

    def abort_transaction(self) -> None:
        if self.tx:
            self.tx.abort()
        self.tx = None
