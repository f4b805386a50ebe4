"""Forwarding on the whole path: a signed message in over SMTP (a real DNS server on
127.0.0.1 for the checks), `envelope.forward()` or `send --forward` in a handler, out by the
smtp transport to an aiosmtpd sink; what the sink got verified with dkimpy (DKIM, ARC
chain) and its MAIL FROM decoded by SRS; bounces to that address back to the bounce handler."""

from __future__ import annotations

import email
import json
import time
from pathlib import Path
from typing import Any

import dkim
import pytest
from conftest import TEST_DATA, Server, Sink, codes, dialogue, replies
from conftest_dns import checks_against

from inbound import srs

KEYS = TEST_DATA / "dkim"
PUBLIC = (KEYS / "test-rsa2048.pub.b64").read_text().strip()
SECRET = "forward-secret"
EHLO = b"EHLO mail.sender.example\r\n"
# Our key and the author's are the test key: the sink's checks ask this for both.
DNS_TXT = {
    b"fwd._domainkey.example.org.": f"v=DKIM1; k=rsa; p={PUBLIC}".encode(),
    b"sel._domainkey.sender.example.": f"v=DKIM1; k=rsa; p={PUBLIC}".encode(),
    b"hop._domainkey.hop.example.": f"v=DKIM1; k=rsa; p={PUBLIC}".encode(),
}

FORWARDER = """\
from mailserver import ForwardRefused


def handle(envelope):
    try:
        used = envelope.forward(envelope.config["to"])
    except ForwardRefused as e:
        used = "refused: " + str(e)
    with open(envelope.config["out"], "a") as f:
        f.write(used + "\\n")
"""

BOUNCES = """\
def handle(envelope):
    with open(envelope.config["out"], "a") as f:
        f.write(envelope.sender + " " + envelope.srs_original + "\\n")
"""


def dnsfunc(name: bytes, timeout: int = 5) -> bytes | None:
    return DNS_TXT.get(name if name.endswith(b".") else name + b".")


def author_signed(body: bytes = b"Hello.\r\n", extra: bytes = b"") -> bytes:
    message = (
        extra + b"From: Alice <alice@sender.example>\r\nTo: fwd@example.org\r\nSubject: please forward\r\n"
        b"Message-ID: <fwd-1@sender.example>\r\n\r\n" + body
    )
    key = (KEYS / "test-rsa2048.pem").read_bytes()
    return (
        dkim.sign(message, b"sel", b"sender.example", key, include_headers=[b"from", b"to", b"subject"])
        + message
    )


def zone() -> dict[str, Any]:
    return {
        "sender.example": [{"TXT": "v=spf1 ip4:192.0.2.10 -all"}],
        "sel._domainkey.sender.example": [{"TXT": f"v=DKIM1; k=rsa; p={PUBLIC}"}],
        "_dmarc.sender.example": [{"TXT": "v=DMARC1; p=reject"}],
        "hop._domainkey.hop.example": [{"TXT": f"v=DKIM1; k=rsa; p={PUBLIC}"}],
    }


@pytest.fixture
def forwarding(server: Server, dns_server: Any, smtp_sink: Sink) -> Server:
    """Checks on (DNS on 127.0.0.1), [forward] set, replies by smtp to the sink, signed with
    the test key; a `fwd` handler forwarding to [handler.fwd] to, a `bounces` handler."""
    dns_server.serve(zone())
    server.write_config(
        checks=checks_against(dns_server),
        forward={"srs_domain": "example.org", "srs_secret": SECRET, "bounces": "bounces"},
        reply={"transport": "smtp", "smtp_host": "127.0.0.1", "smtp_port": str(smtp_sink.port),
               "smtp_starttls": "no", "dkim_domain": "example.org", "dkim_selector": "fwd",
               "dkim_key": str(KEYS / "test-rsa2048.pem")},
        handler__fwd={"to": "bob@elsewhere.example", "out": str(server.root / "fwd.out")},
        handler__bounces={"out": str(server.root / "bounces.out")},
    )  # fmt: skip
    server.add_python("fwd", FORWARDER)
    server.add_python("bounces", BOUNCES)
    return server


def send(
    server: Server, message: bytes, rcpt: str = "fwd@example.org", sender: str = "alice@sender.example"
) -> bytes:
    return server.smtp(
        EHLO + f"MAIL FROM:<{sender}>\r\nRCPT TO:<{rcpt}>\r\nDATA\r\n".encode() + message + b".\r\nQUIT\r\n",
        remote_addr="192.0.2.10",
    )


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


def test_a_forward_verifies_with_dkim_and_arc_and_its_srs_sender_decodes_back(
    forwarding: Server, smtp_sink: Sink
) -> None:
    original = author_signed()
    assert codes(send(forwarding, original))[-2] == 250
    [got] = smtp_sink.messages
    assert got.rcpt_tos == ["bob@elsewhere.example"]
    assert got.mail_from.startswith("SRS0=") and got.mail_from.endswith("@example.org")
    assert srs.decode(got.mail_from, SECRET) == "alice@sender.example"
    assert lines(forwarding.root / "fwd.out") == [got.mail_from]
    data = got.data
    assert data.endswith(original)  # as received: the author's signature, headers and body untouched
    assert dkim.verify(data, dnsfunc=dnsfunc)  # ours, d=example.org
    assert dkim.DKIM(data).verify(idx=1, dnsfunc=dnsfunc)  # the author's still holds
    cv, results, reason = dkim.arc_verify(data, dnsfunc=dnsfunc)
    assert cv == dkim.CV_Pass, reason
    assert [r["instance"] for r in results] == [1]
    aar = " ".join(email.message_from_bytes(data)["ARC-Authentication-Results"].split())
    assert aar.startswith("i=1; mx.test.example; spf=pass smtp.mailfrom=alice@sender.example; dkim=pass")
    assert "dmarc=pass" in aar and "arc=none" in aar  # the results we verified


def test_an_arc_chain_that_came_with_the_message_is_extended_with_cv_pass(
    forwarding: Server, smtp_sink: Sink
) -> None:
    hop = b"Authentication-Results: hop.example; spf=pass smtp.mailfrom=alice@sender.example\r\n"
    first = author_signed()
    sealed = b"".join(
        dkim.arc_sign(
            hop + first, b"hop", b"hop.example", (KEYS / "test-rsa2048.pem").read_bytes(), b"hop.example"
        )
    )
    send(forwarding, sealed + hop + first)
    [got] = smtp_sink.messages
    assert b"arc=pass" in got.data.split(b"\r\n\r\n")[0]  # our check of their set...
    cv, results, reason = dkim.arc_verify(got.data, dnsfunc=dnsfunc)
    assert cv == dkim.CV_Pass, reason
    assert [r["instance"] for r in results] == [2, 1]  # ...and our set on top of it
    assert b"ARC-Seal: i=2; cv=pass" in got.data.replace(b"\r\n ", b" ").replace(b"a=rsa-sha256; ", b"")


def test_a_bounce_to_the_srs_address_reaches_the_bounce_handler(forwarding: Server, smtp_sink: Sink) -> None:
    send(forwarding, author_signed())
    srs_address = smtp_sink.messages[0].mail_from
    bounce = b"From: MAILER-DAEMON@elsewhere.example\r\nSubject: Undelivered\r\n\r\nbob does not exist\r\n"
    output = forwarding.smtp(dialogue(srs_address, sender="", body=bounce), remote_addr="192.0.2.99")
    assert codes(output)[3] == 250  # RCPT TO:<SRS0=...@example.org>
    assert lines(forwarding.root / "bounces.out") == [" alice@sender.example"]


def test_a_program_bounce_handler_gets_the_original_sender_in_its_environment(
    forwarding: Server, smtp_sink: Sink
) -> None:
    (forwarding.handlers / "bounces.py").unlink()
    forwarding.add_program("bounces")
    address = srs.encode("carol@sender.example", "example.org", SECRET)
    forwarding.smtp(dialogue(address, sender=""), remote_addr="192.0.2.99")
    [(message, env)] = forwarding.got("bounces")
    assert env["SRS_ORIGINAL"] == "carol@sender.example" and env["SENDER"] == ""
    assert env["RECIPIENT"] == address


@pytest.mark.parametrize(
    "address",
    [
        "SRS0=AAAA=2W=sender.example=alice@example.org",  # a guessed hash
        srs.encode("alice@sender.example", "example.org", "another secret"),
        srs.encode("alice@sender.example", "example.org", SECRET, now=time.time() - 30 * 86400),  # expired
    ],
)
def test_forged_or_expired_srs_addresses_get_550_at_rcpt(forwarding: Server, address: str) -> None:
    output = forwarding.smtp(dialogue(address, sender=""), remote_addr="192.0.2.99")
    assert codes(output)[3] == 550 and b"5.1.1" in replies(output)[3]
    assert lines(forwarding.root / "bounces.out") == []


def test_without_a_bounces_handler_a_bounce_goes_to_failed(forwarding: Server) -> None:
    config = forwarding.config.read_text().replace("bounces = bounces", "bounces =")
    forwarding.config.write_text(config)
    address = srs.encode("alice@sender.example", "example.org", SECRET)
    output = forwarding.smtp(dialogue(address, sender=""), remote_addr="192.0.2.99")
    assert codes(output)[3] == 250
    [queue_id] = forwarding.ids("failed")
    state = json.loads((forwarding.spool / "failed" / queue_id / "state.json").read_text())
    assert state["handlers"]["-failed"]["status"] == "failed"


# -- loops ----------------------------------------------------------------------------------


def test_a_message_we_forwarded_that_comes_back_is_not_forwarded_again(
    forwarding: Server, smtp_sink: Sink
) -> None:
    send(forwarding, author_signed())
    [first] = smtp_sink.messages
    send(forwarding, first.data, sender=first.mail_from)  # bob@elsewhere forwards it back to us
    assert len(smtp_sink.messages) == 1
    [_, refused] = lines(forwarding.root / "fwd.out")
    assert refused == "refused: it carries our own ARC-Seal (d=example.org s=fwd): we forwarded it before"


def test_our_arc_results_alone_mark_a_message_we_forwarded(forwarding: Server, smtp_sink: Sink) -> None:
    # sealed with another key of ours (a key rollover, another host): our authserv-id tells
    ours = (
        b"ARC-Authentication-Results: i=1; MX.test.example;\r\n spf=pass smtp.mailfrom=a@sender.example\r\n"
    )
    send(forwarding, author_signed(extra=ours))
    assert smtp_sink.messages == []
    assert lines(forwarding.root / "fwd.out") == [
        "refused: it carries our own ARC set (authserv-id mx.test.example): we forwarded it before"
    ]


def test_a_message_that_passed_through_us_too_often_is_not_forwarded(
    forwarding: Server, smtp_sink: Sink
) -> None:
    ours = b"".join(
        b"Received: from x by mx.test.example (mailserver) with ESMTP id Q%d;\r\n\t1 Jan 2024 00:00 +0000\r\n"
        % n
        for n in range(3)
    )  # and the fourth is added now
    send(forwarding, author_signed(extra=ours))
    assert smtp_sink.messages == []
    [refused] = lines(forwarding.root / "fwd.out")
    assert refused == "refused: it passed through mx.test.example 4 times (more than 3): a loop"


def test_a_forward_to_one_of_our_own_domains_is_refused(forwarding: Server, smtp_sink: Sink) -> None:
    config = forwarding.config.read_text().replace("to = bob@elsewhere.example", "to = someone@Example.NET")
    forwarding.config.write_text(config)
    send(forwarding, author_signed())
    assert smtp_sink.messages == []
    assert lines(forwarding.root / "fwd.out") == [
        "refused: someone@Example.NET is in one of our own domains: it would come back to us"
    ]


def test_an_uncaught_refusal_moves_the_message_to_failed(forwarding: Server, smtp_sink: Sink) -> None:
    forwarding.add_python("fwd", "def handle(envelope):\n    envelope.forward('x@example.org')\n")
    send(forwarding, author_signed())
    [queue_id] = forwarding.ids("failed")
    state = json.loads((forwarding.spool / "failed" / queue_id / "state.json").read_text())
    assert state["handlers"]["fwd"]["status"] == "failed"
    assert "one of our own domains" in state["handlers"]["fwd"]["last_error"]


def test_without_srs_settings_nothing_is_forwarded(forwarding: Server, smtp_sink: Sink) -> None:
    config = forwarding.config.read_text().replace("srs_domain = example.org", "srs_domain =")
    forwarding.config.write_text(config.replace(f"srs_secret = {SECRET}", "srs_secret ="))
    send(forwarding, author_signed())
    assert smtp_sink.messages == []
    [refused] = lines(forwarding.root / "fwd.out")
    assert refused.endswith("[forward] srs_domain and srs_secret must be set to forward")


def test_without_a_dkim_key_the_forward_goes_unsigned(forwarding: Server, smtp_sink: Sink) -> None:
    config = forwarding.config.read_text().replace("dkim_selector = fwd", "dkim_selector =")
    forwarding.config.write_text(config)
    original = author_signed()
    send(forwarding, original)
    [got] = smtp_sink.messages
    assert got.data.endswith(original) and b"ARC-Seal" not in got.data
    assert got.data.startswith(b"Authentication-Results: mx.test.example;")
    assert "no [reply] dkim_* key: forwarded without ARC and DKIM" in forwarding.log()


# -- program handlers: send --forward -------------------------------------------------------

PROGRAM = """\
#!/bin/sh
exec "$PYTHON" "$MAILSERVER" send --forward "$CONF_TO"
"""


def test_a_program_handler_forwards_with_send_forward(forwarding: Server, smtp_sink: Sink) -> None:
    (forwarding.handlers / "fwd.py").unlink()
    forwarding.add_program("fwd", PROGRAM)
    original = author_signed()
    send(forwarding, original)
    [got] = smtp_sink.messages
    assert srs.decode(got.mail_from, SECRET) == "alice@sender.example"
    assert got.data.endswith(original) and dkim.verify(got.data, dnsfunc=dnsfunc)
    assert dkim.arc_verify(got.data, dnsfunc=dnsfunc)[0] == dkim.CV_Pass
    assert forwarding.ids("queue") == [] and forwarding.ids("failed") == []
    assert f"MAIL FROM <{got.mail_from}>" in forwarding.log()


def test_send_forward_refusing_exits_77_and_the_message_goes_to_failed(
    forwarding: Server, smtp_sink: Sink
) -> None:
    (forwarding.handlers / "fwd.py").unlink()
    forwarding.add_program("fwd", PROGRAM.replace('"$CONF_TO"', "postmaster@example.org"))
    send(forwarding, author_signed())
    assert smtp_sink.messages == []
    [queue_id] = forwarding.ids("failed")
    state = json.loads((forwarding.spool / "failed" / queue_id / "state.json").read_text())
    assert state["handlers"]["fwd"]["status"] == "failed"
    assert "exit 77" in state["handlers"]["fwd"]["last_error"]


def test_send_forward_needs_a_queue_id_and_a_known_message(forwarding: Server) -> None:
    result = forwarding.run("send", "--forward", "bob@elsewhere.example")
    assert result.returncode == 64 and b"QUEUE_ID" in result.stderr
    result = forwarding.run("send", "--forward", "bob@elsewhere.example", "--queue-id", "nope")
    assert result.returncode == 66 and b"no message 'nope'" in result.stderr


def test_sendmail_transport_forwards_with_the_srs_sender_not_the_header_recipients(
    forwarding: Server, tmp_path: Path
) -> None:
    fake = tmp_path / "fake-sendmail"
    fake.write_text(f'#!/bin/sh\necho "$@" > {tmp_path}/argv\ncat > {tmp_path}/stdin\n')
    fake.chmod(0o755)
    config = forwarding.config.read_text().replace(
        "transport = smtp", f"transport = sendmail\nsendmail = {fake} -oi -t"
    )
    forwarding.config.write_text(config)
    send(forwarding, author_signed())
    [used] = lines(forwarding.root / "fwd.out")
    assert (tmp_path / "argv").read_text().split() == ["-oi", "-f", used, "bob@elsewhere.example"]
    assert b"\nHello.\n" in (tmp_path / "stdin").read_bytes()


# -- config -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("forward", "error"),
    [
        ({"srs_domain": "elsewhere.example", "srs_secret": "s"}, "srs_domain: 'elsewhere.example' is not"),
        ({"srs_domain": "example.org", "srs_secret": ""}, "[forward] srs_secret: empty"),
        ({"srs_domain": "", "srs_secret": "s"}, "[forward] srs_domain: empty"),
    ],
)  # fmt: skip
def test_bad_forward_settings_are_one_line_config_errors(
    server: Server, forward: dict[str, str], error: str
) -> None:
    server.write_config(forward=forward)
    result = server.run("check")
    assert result.returncode == 78
    [line] = result.stderr.decode().splitlines()
    assert str(server.config) in line and error in line


def test_check_shows_the_srs_bounce_route_and_names_a_missing_bounces_handler(forwarding: Server) -> None:
    result = forwarding.run("check")
    assert result.returncode == 0, result.stderr
    assert b"SRS0=*@example.org (bounces)" in result.stdout and b"bounces" in result.stdout
    (forwarding.handlers / "bounces.py").unlink()
    result = forwarding.run("check")
    assert result.returncode == 78
    assert b"[forward] bounces: no handler named 'bounces'" in result.stderr
