"""Duplicates: the same message delivered twice (a retry after a lost 250, two MX hosts
adding their own trace fields) is flagged the second time: envelope.duplicate and
DUPLICATE=1; the auto-responders do not answer it again; [handlers] dedupe_days = 0 is off."""

from __future__ import annotations

import shutil

from conftest import ROOT, Server, dialogue

MESSAGE = (
    b"From: Alice <alice@sender.example>\r\nTo: sink@example.org\r\nSubject: twice\r\n"
    b"Message-ID: <twice@sender.example>\r\n\r\nThe same body.\r\n"
)


def via(hop: str) -> bytes:
    """MESSAGE as it arrives through HOP: that relay's trace fields on top."""
    return (
        f"Received: from {hop} by {hop}; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
        f"Authentication-Results: {hop}; spf=pass\r\nARC-Seal: i=1; a=rsa-sha256; d={hop}; s=x; b=AAAA\r\n"
    ).encode() + MESSAGE


def test_the_same_message_twice_is_flagged_the_second_time(server: Server) -> None:
    server.smtp(dialogue(body=via("mx1.example")))
    server.smtp(dialogue(body=via("mx2.example")))  # another path, other trace fields
    server.smtp(dialogue(body=MESSAGE.replace(b"The same body.", b"Another body.")))
    first, second, other = (env.get("DUPLICATE") for _, env in server.got())
    assert (first, second, other) == ("", "1", "")


def test_a_retry_of_the_same_queued_message_is_not_its_own_duplicate(server: Server) -> None:
    server.add_program(
        "once",
        '#!/bin/sh\ncat > /dev/null\n[ -e "$(dirname "$0")/../ok" ] || exit 75\necho "dup=$DUPLICATE"\n',
    )
    server.smtp(dialogue("once@example.org", "sink@example.org", body=MESSAGE))
    (server.root / "ok").touch()
    server.run("queue", "--run", "--now")
    assert "handler once: dup=" in server.log() and "dup=1" not in server.log()


def test_auto_responders_do_not_answer_a_duplicate(server: Server) -> None:
    shutil.copy(ROOT / "handlers" / "8ball.py", server.handlers / "8ball.py")
    question = MESSAGE.replace(b"To: sink@example.org", b"To: 8ball@example.org").replace(
        b"twice", b"Will it work?"
    )
    server.smtp(dialogue("8ball@example.org", body=question))
    server.smtp(dialogue("8ball@example.org", body=question))
    outbox = list((server.root / "outbox").glob("*.eml"))
    assert len(outbox) == 1
    assert "it is a duplicate of a message already handled" in server.log()


def test_dedupe_days_0_is_off(server: Server) -> None:
    server.write_config(handlers={"dir": "handlers", "dedupe_days": "0"})
    server.smtp(dialogue(body=MESSAGE))
    server.smtp(dialogue(body=MESSAGE))
    assert [env.get("DUPLICATE") for _, env in server.got()] == ["", ""]
    assert not (server.spool / "seen").exists()


def test_a_python_handler_sees_envelope_duplicate(server: Server) -> None:
    server.add_python(
        "py", "def handle(envelope):\n    open(envelope.config['out'], 'a').write(str(envelope.duplicate))\n"
    )
    out = server.root / "seen.txt"
    server.write_config(handler__py={"out": str(out)})
    server.smtp(dialogue("py@example.org", body=MESSAGE))
    server.smtp(dialogue("py@example.org", body=MESSAGE))
    assert out.read_text() == "FalseTrue"
