"""`mailserver.py send --forward ADDR`: a program handler forwards the message it is handling.

Forwarding from a program handler (Python handlers call `envelope.forward(ADDR)`):

    "$PYTHON" "$MAILSERVER" send --forward ADDR [--queue-id ID] [--handler NAME]

resends the spooled message QUEUE_ID (default `$QUEUE_ID`, which every program gets) as
it was received to ADDR through `inbound.autoreply.forward`: MAIL FROM rewritten by SRS,
an ARC set and a DKIM signature with the `[reply] dkim_*` key, the `[reply] transport`.
The config is `--config`, else `$MAILSERVER_CONFIG` (also set for programs).  Exit
status, so a program may `exec` it as its last step (SPEC §5 reads it the same way):

    0   forwarded (the MAIL FROM used on stdout)
    77  EX_NOPERM    refused for good: a loop, one of our domains, no [forward] settings,
                     or the destination's 5xx (the reason on stderr); the message -> failed/
    75  EX_TEMPFAIL  the transport failed for now: try again later
    66  EX_NOINPUT   no such message in the spool;  78 EX_CONFIG bad config;  64 usage
"""

from __future__ import annotations

import os
import sys

from ..exits import EX_NOPERM, EX_OK, EX_TEMPFAIL
from .send import usage

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def forward_main(args: Any) -> int:
    """`send --forward ADDR`: forward a spooled message as its handler would."""
    from ..outcomes import ForwardRefused, TempFail
    from .reply import envelope_for_send

    queue_id = args.queue_id or os.environ.get("QUEUE_ID", "")
    if not queue_id:
        return usage("--forward needs the message: run it from a handler ($QUEUE_ID) or give --queue-id")
    if args.to or args.body is not None or args.file or args.subject is not None or args.attach:
        return usage("--forward sends the message as it was received: leave out --to, --body, --file...")
    envelope = envelope_for_send(args, queue_id)
    if isinstance(envelope, int):
        return envelope
    try:
        mail_from = envelope.forward(args.forward)
    except ForwardRefused as e:
        print(f"mailserver send: not forwarded: {e}", file=sys.stderr)
        return EX_NOPERM
    except TempFail as e:
        print(f"mailserver send: not forwarded, try again later: {e}", file=sys.stderr)
        return EX_TEMPFAIL
    print(f"forwarded to {args.forward}, MAIL FROM <{mail_from}>")
    return EX_OK
