"""`mailserver.py send --reply`: a program handler answers the message it is handling.

Replying from a program handler (Python handlers call `envelope.reply()` instead):

    "$PYTHON" "$MAILSERVER" send --reply [QUEUE_ID] [--body B | --file F] [--subject S]
                                 [--from ADDR] [--attach FILE...] [--handler NAME]

answers the sender of the spooled message QUEUE_ID (default `$QUEUE_ID`, which every
program gets) through `inbound.autoreply`, so with every RFC 3834 rule, the rate limit,
require_auth and the `[reply]` transport, exactly as a Python handler's reply.  The
config is `--config`, else `$MAILSERVER_CONFIG` (also set for programs).  The message,
its envelope and its auth results come from the spool, the recipients from `$RECIPIENTS`
(the ones routed to this handler), the handler's name (for the rate limit) from
--handler, `$HANDLER`, or the route of the first recipient.  Exit status, so a program
may `exec` it as its last step: 0 sent, or not sent by the rules (the reason on stderr);
75 the transport failed, try again later; 66 no such message; 78 bad config; 64 usage.

The Envelope is built by delivery's `handler_envelope()`, as for a Python handler.
"""

from __future__ import annotations

import os
import re
import sys

from ..exits import EX_CONFIG, EX_NOINPUT, EX_OK, EX_TEMPFAIL
from .send import read_input, usage

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def reply_main(args: Any) -> int:
    """`send --reply [QUEUE_ID]`: answer a spooled message as its handler would."""
    from ..outcomes import TempFail

    queue_id = args.reply or os.environ.get("QUEUE_ID", "")
    if not queue_id:
        return usage("--reply needs a QUEUE_ID (handlers get it as $QUEUE_ID)")
    if args.to:
        return usage("--reply answers the message's envelope sender: leave out --to")
    if args.body is None and not args.file:
        return usage("--reply needs --body B or --file F (- for stdin)")
    envelope = envelope_for_send(args, queue_id)
    if isinstance(envelope, int):
        return envelope
    try:
        body = args.body if args.body is not None else read_input(args.file).decode("utf-8", "replace")
        attachments = []
        for path in args.attach or []:
            with open(path, "rb") as f:
                attachments.append((os.path.basename(path), f.read()))
    except OSError as e:
        print(f"mailserver send: {e.filename or args.file}: {e.strerror}", file=sys.stderr)
        return EX_NOINPUT
    from ..autoreply import reply

    try:
        result = reply(envelope, body, subject=args.subject, sender=args.from_, attachments=attachments)
    except TempFail as e:
        print(f"mailserver send: reply not sent, try again later: {e}", file=sys.stderr)
        return EX_TEMPFAIL
    if result.sent:
        print(result.detail)
    else:
        print(f"mailserver send: reply not sent: {result.detail}", file=sys.stderr)
    return EX_OK


def envelope_for_send(args: Any, queue_id: str) -> Any:
    """The config loaded (`--config`, else the default), the log set up, and the Envelope
    of spooled message QUEUE_ID for `send --reply`/`--forward`; or the exit status."""
    from .. import log
    from ..config import ConfigError, default_path, load

    try:
        config = load(getattr(args, "config", None) or default_path())
    except ConfigError as e:
        print(f"mailserver send: {e}", file=sys.stderr)
        return EX_CONFIG
    log.setup(config.server.log, config.server.log_level)
    envelope = spooled_envelope(config, queue_id, args.handler)
    if envelope is None:
        print(f"mailserver send: no message {queue_id!r} in the spool {config.server.spool}", file=sys.stderr)
        return EX_NOINPUT
    return envelope


def spooled_envelope(config: Any, queue_id: str, handler: str | None = None) -> Any:
    """The Envelope of spooled message QUEUE_ID as a handler got it; None when there is none."""
    from ..delivery.deliver import handler_envelope, stored_auth
    from ..spool import Record, Spool, State

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", queue_id):
        return None
    spool = Spool(config.server.spool)
    folder = spool.where(queue_id)
    if folder is None:
        return None
    path = spool.path(folder, queue_id)
    record = Record.load(path) or Record(queue_id, "", [])
    state = State.load(path)
    routes: dict[str, str] = {}
    for recipient in record.recipients:
        routes.setdefault(recipient.address, recipient.route)
    recipients = list(routes)
    from ..delivery.runner import split_recipients

    if os.environ.get("QUEUE_ID") == queue_id and split_recipients(os.environ.get("RECIPIENTS", "")):
        recipients = split_recipients(os.environ["RECIPIENTS"])
    name = handler or os.environ.get("HANDLER") or routes.get(recipients[0] if recipients else "", "")
    return handler_envelope(
        config,
        record,
        handler=name or "program",
        recipients=recipients,
        folder=path,
        state=state,
        auth=stored_auth(state),
    )
