"""The SMTP session in-process: bytes in, replies out, with exact reply codes."""

from __future__ import annotations

import os
import threading
import time

import pytest
from conftest import EHLO, MAIL, RCPT, Server, codes, replies, talk

from inbound.config import load
from inbound.inetd import build_session
from inbound.policy import Decision
from inbound.smtp.channel import Channel
from inbound.smtp.data import ContentCheck
from inbound.smtp.session import Client, Session


def transaction(body: bytes = b"Subject: test\r\n\r\nhello\r\n") -> bytes:
    return EHLO + MAIL + RCPT + b"DATA\r\n" + body + b".\r\nQUIT\r\n"


# -- greeting, EHLO, chatter -------------------------------------------------


def test_greeting_names_the_configured_hostname(server: Server) -> None:
    out, _ = talk(server, b"QUIT\r\n")
    assert out.startswith(b"220 mx.test.example ESMTP")
    assert codes(out) == [220, 221]


def test_ehlo_advertises_every_extension_in_one_reply(server: Server) -> None:
    out, _ = talk(server, EHLO)
    lines = out.split(b"\r\n")
    assert lines[1] == b"250-mx.test.example greets client.example"
    keywords = {line[4:].split(b" ")[0] for line in lines[1:] if line}
    assert {b"PIPELINING", b"SIZE", b"8BITMIME", b"SMTPUTF8", b"ENHANCEDSTATUSCODES", b"CHUNKING"} <= keywords
    assert b"250-SIZE 26214400" in lines
    assert b"STARTTLS" not in keywords  # not over pipes


def test_helo_gets_a_plain_250(server: Server) -> None:
    out, _ = talk(server, b"HELO client.example\r\n")
    assert replies(out)[1] == b"250 mx.test.example"


@pytest.mark.parametrize(
    "command, code, enhanced",
    [
        (b"NOOP\r\n", 250, b"2.0.0"),
        (b"NOOP anything\r\n", 250, b"2.0.0"),
        (b"RSET\r\n", 250, b"2.0.0"),
        (b"HELP\r\n", 214, b"2.0.0"),
        (b"VRFY sink@example.org\r\n", 252, b"2.0.0"),
        (b"VRFY\r\n", 501, b"5.5.4"),
        (b"EXPN staff\r\n", 502, b"5.5.1"),
        (b"FOO bar\r\n", 500, b"5.5.2"),
        (b"STARTTLS\r\n", 502, b"5.5.1"),
        (b"EHLO\r\n", 501, b"5.5.4"),
        (b"HELO\r\n", 501, b"5.5.4"),
        (b"RSET now\r\n", 501, b"5.5.4"),
        (b"QUIT\r\n", 221, b"2.0.0"),
    ],
)
def test_each_verb_gets_its_reply_with_an_enhanced_code(
    server: Server, command: bytes, code: int, enhanced: bytes
) -> None:
    out, _ = talk(server, EHLO + command)
    last = replies(out)[2]
    assert int(last[:3]) == code
    assert last[4:9] == enhanced


def test_verbs_are_case_insensitive_and_bare_lf_commands_work(server: Server) -> None:
    out, _ = talk(server, b"ehlo me\nmail from:<a@b.example>\nrcpt to:<sink@example.org>\nquit\n")
    assert codes(out) == [220, 250, 250, 250, 221]


# -- order and syntax ------------------------------------------------------------


@pytest.mark.parametrize(
    "data, expected",
    [
        (MAIL, [220, 503]),  # MAIL before EHLO
        (EHLO + RCPT, [220, 250, 503]),  # RCPT before MAIL
        (EHLO + b"DATA\r\n", [220, 250, 503]),  # DATA before MAIL
        (EHLO + MAIL + b"DATA\r\n", [220, 250, 250, 503]),  # DATA before RCPT
        (EHLO + MAIL + MAIL, [220, 250, 250, 503]),  # nested MAIL
        (EHLO + b"BDAT 3 LAST\r\nabc", [220, 250, 503]),  # BDAT before MAIL, chunk skipped
        (EHLO + b"MAIL FROM:alice@x.example\r\n", [220, 250, 501]),  # no angle brackets
        (EHLO + b"MAIL TO:<a@b.example>\r\n", [220, 250, 501]),
        (EHLO + b"MAIL FROM:<not an address>\r\n", [220, 250, 501]),
        (EHLO + b"MAIL FROM:<a@b.example>x\r\n", [220, 250, 501]),
        (EHLO + MAIL + b"RCPT TO:<@@example.org>\r\n", [220, 250, 250, 501]),
        (EHLO + b"MAIL FROM:<a@b.example> FOO=bar\r\n", [220, 250, 555]),
        (EHLO + MAIL + b"RCPT TO:<sink@example.org> NOTIFY=NEVER\r\n", [220, 250, 250, 555]),
        (EHLO + b"MAIL FROM:<a@b.example> BODY=9BIT\r\n", [220, 250, 501]),
        (EHLO + b"MAIL FROM:<a@b.example> SIZE=lots\r\n", [220, 250, 501]),
        (EHLO + MAIL + RCPT + b"DATA now\r\n", [220, 250, 250, 250, 501]),
        (EHLO + b"BDAT x\r\n", [220, 250, 501]),
    ],
)
def test_wrong_order_and_bad_syntax_get_503_501_555(server: Server, data: bytes, expected: list[int]) -> None:
    out, _ = talk(server, data)
    assert codes(out) == expected


def test_null_reverse_path_is_accepted(server: Server) -> None:
    out, session = talk(server, EHLO + b"MAIL FROM:<>\r\n" + RCPT + b"DATA\r\n\r\nbounce\r\n.\r\n")
    assert codes(out) == [220, 250, 250, 250, 354, 250]
    assert session.summary.senders == ["<>"]


def test_source_route_is_accepted_and_ignored(server: Server) -> None:
    out, session = talk(server, EHLO + b"MAIL FROM:<@relay.example:alice@sender.example>\r\n")
    assert codes(out)[-1] == 250
    assert session.summary.senders == ["alice@sender.example"]


def test_mail_from_with_a_space_after_the_colon_is_accepted(server: Server) -> None:
    out, _ = talk(server, EHLO + b"MAIL FROM: <a@b.example>\r\n")
    assert codes(out)[-1] == 250


def test_quoted_local_part_with_angle_bracket_is_parsed(server: Server) -> None:
    out, session = talk(server, EHLO + b'MAIL FROM:<"odd>name"@b.example> SIZE=10\r\n')
    assert codes(out)[-1] == 250
    assert session.summary.senders == ['"odd>name"@b.example']


# -- recipients --------------------------------------------------------------------


def test_foreign_domain_is_refused_as_relay(server: Server) -> None:
    out, _ = talk(server, EHLO + MAIL + b"RCPT TO:<someone@elsewhere.example>\r\n")
    assert replies(out)[-1].startswith(b"550 5.7.1")


def test_address_literal_is_not_our_domain(server: Server) -> None:
    out, _ = talk(server, EHLO + MAIL + b"RCPT TO:<sink@[192.0.2.1]>\r\n")
    assert replies(out)[-1].startswith(b"550 5.7.1")


def test_unknown_local_address_gets_550_5_1_1(server: Server) -> None:
    out, _ = talk(server, EHLO + MAIL + b"RCPT TO:<nobody@example.org>\r\n")
    assert replies(out)[-1].startswith(b"550 5.1.1")


def test_local_domains_are_case_insensitive_and_extensions_route_to_the_base(server: Server) -> None:
    out, session = talk(server, EHLO + MAIL + b"RCPT TO:<sink+tag@EXAMPLE.Org>\r\n")
    assert replies(out)[-1].startswith(b"250 2.1.5")
    assert session.summary.recipients == ["sink+tag@example.org"]


@pytest.mark.parametrize(
    "address", [b"<postmaster@example.org>", b"<POSTMASTER@example.net>", b"<postmaster>"]
)
def test_postmaster_is_always_accepted(server: Server, address: bytes) -> None:
    out, _ = talk(server, EHLO + MAIL + b"RCPT TO:" + address + b"\r\n")
    assert replies(out)[-1].startswith(b"250 2.1.5")


def test_too_many_recipients_get_452(server: Server) -> None:
    server.write_config(server={"max_recipients": "2"})
    rcpts = b"".join(b"RCPT TO:<sink+%d@example.org>\r\n" % i for i in range(3))
    out, _ = talk(server, EHLO + MAIL + rcpts)
    assert codes(out) == [220, 250, 250, 250, 250, 452]
    assert replies(out)[-1].startswith(b"452 4.5.3")


def test_duplicate_recipients_collapse(server: Server) -> None:
    out, session = talk(server, EHLO + MAIL + RCPT + RCPT + b"RCPT TO:<sink@EXAMPLE.ORG>\r\n")
    assert codes(out) == [220, 250, 250, 250, 250, 250]
    assert session.summary.recipients == ["sink@example.org"]


def test_non_ascii_address_needs_smtputf8(server: Server) -> None:
    out, _ = talk(server, EHLO + "MAIL FROM:<jösé@bücher.example>\r\n".encode())
    assert replies(out)[-1].startswith(b"553 5.6.7")
    out, session = talk(
        server,
        EHLO + "MAIL FROM:<jösé@bücher.example> SMTPUTF8\r\n".encode() + RCPT + b"DATA\r\n\r\nx\r\n.\r\n",
    )
    assert codes(out) == [220, 250, 250, 250, 354, 250]
    queue_id = session.summary.queue_ids[0]
    message = (server.spool / "queue" / queue_id / "message").read_bytes()
    assert b"with UTF8SMTP id" in message


def test_invalid_utf8_in_a_command_is_a_syntax_error(server: Server) -> None:
    out, _ = talk(server, EHLO + b"MAIL FROM:<\xff@b.example>\r\n")
    assert codes(out)[-1] == 501


# -- DATA: spooling, Received, size ----------------------------------------------------------


def test_accepted_message_is_in_queue_with_received_header_before_250(server: Server) -> None:
    out, session = talk(server, transaction())
    assert codes(out) == [220, 250, 250, 250, 354, 250, 221]
    queue_id = session.summary.queue_ids[0]
    assert replies(out)[5] == b"250 2.0.0 OK queued as " + queue_id.encode()
    message = (server.spool / "queue" / queue_id / "message").read_bytes()
    assert message.startswith(b"Received: from client.example ([192.0.2.1])\r\n\tby mx.test.example")
    assert f"with ESMTP id {queue_id}".encode() in message
    assert b"for <sink@example.org>" in message
    assert message.endswith(b"Subject: test\r\n\r\nhello\r\n")
    assert server.ids("incoming") == []


def test_helo_sessions_are_recorded_as_smtp(server: Server) -> None:
    out, session = talk(server, transaction().replace(EHLO, b"HELO client.example\r\n"))
    message = (server.spool / "queue" / session.summary.queue_ids[0] / "message").read_bytes()
    assert b" with SMTP id " in message


def test_unknown_client_is_not_assumed_to_be_localhost(server: Server) -> None:
    out, session = talk(server, transaction(), client=Client())
    message = (server.spool / "queue" / session.summary.queue_ids[0] / "message").read_bytes()
    assert message.startswith(b"Received: from client.example (unknown)")


def test_dot_unstuffing_is_exact(server: Server) -> None:
    body = b"Subject: dots\r\n\r\n..leading\r\n...two\r\n.\r\n"
    out, session = talk(server, EHLO + MAIL + RCPT + b"DATA\r\n" + body)
    message = (server.spool / "queue" / session.summary.queue_ids[0] / "message").read_bytes()
    assert message.endswith(b"\r\n\r\n.leading\r\n..two\r\n")


def test_empty_message_is_accepted(server: Server) -> None:
    out, _ = talk(server, EHLO + MAIL + RCPT + b"DATA\r\n.\r\n")
    assert codes(out) == [220, 250, 250, 250, 354, 250]


def test_declared_size_over_the_limit_is_refused_at_mail(server: Server) -> None:
    server.write_config(server={"max_message_size": "1000"})
    out, _ = talk(server, EHLO + b"MAIL FROM:<a@b.example> SIZE=1001\r\n")
    assert replies(out)[-1].startswith(b"552 5.3.4")
    out, _ = talk(server, EHLO + b"MAIL FROM:<a@b.example> SIZE=1000 BODY=8BITMIME\r\n")
    assert codes(out)[-1] == 250


def test_data_over_the_limit_gets_552_and_nothing_is_kept(server: Server) -> None:
    server.write_config(server={"max_message_size": "1000"})
    body = b"Subject: big\r\n\r\n" + b"x" * 70 + b"\r\n"
    out, _ = talk(server, EHLO + MAIL + RCPT + b"DATA\r\n" + body * 20 + b".\r\nNOOP\r\n")
    assert codes(out) == [220, 250, 250, 250, 354, 552, 250]
    assert replies(out)[5].startswith(b"552 5.3.4")
    assert server.ids("queue") == [] and server.ids("incoming") == []


def test_eight_bit_data_is_kept_byte_exact(server: Server) -> None:
    body = "Subject: caf\u00e9\r\n\r\n\u00fcber \u2603\r\n".encode()
    out, session = talk(
        server, EHLO + b"MAIL FROM:<a@b.example> BODY=8BITMIME\r\n" + RCPT + b"DATA\r\n" + body + b".\r\n"
    )
    message = (server.spool / "queue" / session.summary.queue_ids[0] / "message").read_bytes()
    assert message.endswith(body)


def test_several_messages_in_one_session_each_get_a_queue_id(server: Server) -> None:
    one = MAIL + RCPT + b"DATA\r\n\r\none\r\n.\r\n"
    out, session = talk(server, EHLO + one + one + b"QUIT\r\n")
    assert codes(out) == [220, 250, 250, 250, 354, 250, 250, 250, 354, 250, 221]
    assert len(set(session.summary.queue_ids)) == 2


def test_rset_aborts_the_transaction(server: Server) -> None:
    out, _ = talk(server, EHLO + MAIL + RCPT + b"RSET\r\nDATA\r\n")
    assert codes(out) == [220, 250, 250, 250, 250, 503]


def test_pipelined_commands_get_replies_in_order(server: Server) -> None:
    """Everything in one write (RFC 2920): replies come back in order, one per command."""
    out, _ = talk(
        server, EHLO + MAIL + RCPT + b"RCPT TO:<x@elsewhere.example>\r\nDATA\r\n\r\nhi\r\n.\r\nQUIT\r\n"
    )
    assert codes(out) == [220, 250, 250, 250, 550, 354, 250, 221]


# -- smuggling and hostile content ------------------------------------------------------------


@pytest.mark.parametrize(
    "body, reply",
    [
        (b"Subject: x\r\n\r\nbare\nlf\r\n", b"550 5.5.2"),
        (b"Subject: x\r\n\r\nbare\rcr\r\n", b"550 5.5.2"),
        (b"Subject: x\r\n\r\nnul\x00byte\r\n", b"550 5.6.0"),
        (b"Subject: x\r\n\r\n" + b"y" * 999 + b"\r\n", b"550 5.6.0"),
        (b"Subject: x\r\n\r\n" + b"y" * 100_000 + b"\r\n", b"550 5.6.0"),
    ],
)
def test_hostile_content_gets_the_message_refused(server: Server, body: bytes, reply: bytes) -> None:
    out, _ = talk(server, EHLO + MAIL + RCPT + b"DATA\r\n" + body + b".\r\nNOOP\r\n")
    assert replies(out)[5].startswith(reply)
    assert codes(out)[-1] == 250  # the session goes on
    assert server.ids("queue") == [] and server.ids("incoming") == []


def test_a_line_of_exactly_1000_octets_is_allowed(server: Server) -> None:
    out, _ = talk(server, EHLO + MAIL + RCPT + b"DATA\r\n" + b"y" * 998 + b"\r\n.\r\n")
    assert codes(out)[-1] == 250


SMUGGLED = b"MAIL FROM:<evil@attacker.example>\r\nRCPT TO:<sink@example.org>\r\nDATA\r\n\r\nsmuggled\r\n"


@pytest.mark.parametrize(
    "fake_end", [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\n", b"\r\n.\r", b"\r\n\x00.\r\n"]
)
def test_smuggled_end_of_data_does_not_end_data(server: Server, fake_end: bytes) -> None:
    """Only CRLF.CRLF ends DATA: what follows a fake end is part of the (refused) message."""
    data = EHLO + MAIL + RCPT + b"DATA\r\nSubject: x\r\n\r\nbody" + fake_end + SMUGGLED + b"\r\n.\r\nQUIT\r\n"
    out, session = talk(server, data)
    assert codes(out) == [220, 250, 250, 250, 354, 550, 221]
    assert session.summary.senders == ["alice@sender.example"]  # the smuggled MAIL never ran
    assert server.ids("queue") == []


def test_nul_in_a_command_gets_500(server: Server) -> None:
    out, _ = talk(server, EHLO + b"NOOP\x00\r\n")
    assert replies(out)[-1].startswith(b"500 5.5.2")


def test_command_line_over_512_octets_gets_500_and_the_session_goes_on(server: Server) -> None:
    out, _ = talk(server, EHLO + b"NOOP " + b"x" * 600 + b"\r\nNOOP\r\n")
    assert codes(out) == [220, 250, 500, 250]
    assert replies(out)[2].startswith(b"500 5.5.2")


def test_too_many_errors_close_the_connection_with_421(server: Server) -> None:
    out, _ = talk(server, b"BOGUS\r\n" * 30)
    assert codes(out) == [220] + [500] * 10 + [421]
    assert replies(out)[-1].startswith(b"421 4.7.0")


@pytest.mark.parametrize("configured", ["xn--bcher-kva.example", "bücher.example"])
def test_an_internationalised_domain_matches_in_either_form(server: Server, configured: str) -> None:
    server.write_config(server={"domains": configured})
    config_domains = load(str(server.config)).server.domains
    assert config_domains == ("xn--bcher-kva.example",)
    mail = b"MAIL FROM:<alice@sender.example> SMTPUTF8\r\n"
    rcpts = "RCPT TO:<sink@bücher.example>\r\nRCPT TO:<sink@XN--BCHER-KVA.example>\r\n".encode()
    out, session = talk(server, EHLO + mail + rcpts + b"QUIT\r\n")
    assert codes(out) == [220, 250, 250, 250, 250, 221]  # the second is the same address
    assert session.summary.recipients == ["sink@xn--bcher-kva.example"]


def test_refused_recipients_are_not_errors_and_never_cut_a_transaction_short(server: Server) -> None:
    unknown = b"".join(b"RCPT TO:<nobody%d@example.org>\r\n" % n for n in range(60))
    data = EHLO + MAIL + RCPT + unknown + b"DATA\r\nSubject: x\r\n\r\nhi\r\n.\r\nQUIT\r\n"
    out, session = talk(server, data)
    assert codes(out) == [220, 250, 250, 250] + [550] * 60 + [354, 250, 221]
    assert len(session.summary.queue_ids) == 1


def test_probing_for_addresses_is_bounded_when_no_recipient_is_accepted(server: Server) -> None:
    unknown = b"".join(b"RCPT TO:<nobody%d@example.org>\r\n" % n for n in range(80))
    out, _ = talk(server, EHLO + MAIL + unknown)
    assert codes(out) == [220, 250, 250] + [550] * 50 + [421]
    assert replies(out)[-1].startswith(b"421 4.7.0") and b"unknown recipients" in replies(out)[-1]


def test_ten_refused_recipients_and_a_few_errors_do_not_add_up_to_421(server: Server) -> None:
    unknown = b"".join(b"RCPT TO:<nobody%d@example.org>\r\n" % n for n in range(10))
    out, _ = talk(server, EHLO + MAIL + unknown + b"BOGUS\r\n" * 3 + RCPT + b"QUIT\r\n")
    assert codes(out) == [220, 250, 250] + [550] * 10 + [500] * 3 + [250, 221]


# -- BDAT (CHUNKING) -----------------------------------------------------------------------


def test_bdat_chunks_make_one_message(server: Server) -> None:
    one, two = b"Subject: chunks\r\n\r\nfirst ", b"second\r\n"
    data = (
        EHLO
        + MAIL
        + RCPT
        + b"BDAT %d\r\n" % len(one)
        + one
        + b"BDAT %d LAST\r\n" % len(two)
        + two
        + b"QUIT\r\n"
    )
    out, session = talk(server, data)
    assert codes(out) == [220, 250, 250, 250, 250, 250, 221]
    message = (server.spool / "queue" / session.summary.queue_ids[0] / "message").read_bytes()
    assert message.endswith(b"Subject: chunks\r\n\r\nfirst second\r\n")


def test_bdat_data_is_not_dot_unstuffed(server: Server) -> None:
    body = b"Subject: x\r\n\r\n..two dots\r\n.\r\n"
    out, session = talk(server, EHLO + MAIL + RCPT + b"BDAT %d LAST\r\n" % len(body) + body)
    message = (server.spool / "queue" / session.summary.queue_ids[0] / "message").read_bytes()
    assert message.endswith(body)


def test_bdat_over_the_size_limit_gets_552_and_later_chunks_503(server: Server) -> None:
    server.write_config(server={"max_message_size": "100"})
    chunk = (b"x" * 70 + b"\r\n") * 2
    data = EHLO + MAIL + RCPT + b"BDAT 144\r\n" + chunk + b"BDAT 3 LAST\r\nab\n" + b"RSET\r\nNOOP\r\n"
    out, _ = talk(server, data)
    assert codes(out) == [220, 250, 250, 250, 552, 503, 250, 250]
    assert server.ids("queue") == []


def test_bdat_with_bare_lf_is_refused_at_last(server: Server) -> None:
    body = b"Subject: x\r\n\r\nbare\nlf\r\n"
    out, _ = talk(server, EHLO + MAIL + RCPT + b"BDAT %d LAST\r\n" % len(body) + body + b"NOOP\r\n")
    assert codes(out) == [220, 250, 250, 250, 550, 250]


def test_data_during_bdat_is_a_sequence_error(server: Server) -> None:
    out, _ = talk(server, EHLO + MAIL + RCPT + b"BDAT 2\r\nab" + b"DATA\r\n")
    assert codes(out)[-1] == 503


# -- timeouts (wall clock) -----------------------------------------------------------------


def session_over_pipe(server: Server, **limits: float) -> tuple[Session, int, int]:
    config = load(str(server.config))
    rfd, client_w = os.pipe()
    out_r, out_w = os.pipe()
    channel = Channel(rfd, out_w)
    session, _ = build_session(config, channel, Client("192.0.2.1"))
    session.command_timeout = limits.get("command_timeout", session.command_timeout)
    session.data_timeout = limits.get("data_timeout", session.data_timeout)
    return session, client_w, out_r


def test_a_client_dripping_bytes_is_cut_off_at_the_command_timeout(server: Server) -> None:
    session, client_w, out_r = session_over_pipe(server, command_timeout=1.0)
    stop = threading.Event()

    def drip() -> None:
        for byte in b"NOOP and on and on and on and on":
            if stop.wait(0.2):
                return
            os.write(client_w, bytes([byte]))

    threading.Thread(target=drip, daemon=True).start()
    started = time.monotonic()
    session.run()
    elapsed = time.monotonic() - started
    stop.set()
    out = os.read(out_r, 65536)
    assert replies(out)[-1].startswith(b"421 4.4.2")
    assert elapsed < 2.5


def test_data_timeout_is_a_wall_clock_bound_on_the_whole_message(server: Server) -> None:
    session, client_w, out_r = session_over_pipe(server, data_timeout=1.0)
    os.write(client_w, EHLO + MAIL + RCPT + b"DATA\r\n")
    stop = threading.Event()

    def drip() -> None:
        while not stop.wait(0.1):
            os.write(client_w, b"x\r\n")

    threading.Thread(target=drip, daemon=True).start()
    started = time.monotonic()
    session.run()
    stop.set()
    out = os.read(out_r, 65536)
    assert codes(out) == [220, 250, 250, 250, 354, 421]
    assert time.monotonic() - started < 2.5
    assert server.ids("incoming") == []


def test_client_closing_mid_data_leaves_nothing_behind(server: Server) -> None:
    out, session = talk(server, EHLO + MAIL + RCPT + b"DATA\r\nSubject: cut\r\n\r\npartial")
    assert codes(out) == [220, 250, 250, 250, 354]
    assert server.ids("incoming") == [] and server.ids("queue") == []


# -- the exception boundary ---------------------------------------------------------------


class ExplodingPolicy:
    default_domain = "example.org"

    def decide_recipient(self, address: str, domain: str) -> Decision:
        raise RuntimeError("boom")

    def decide_message(self, incoming, envelope):  # type: ignore[no-untyped-def]
        return None


def test_an_internal_error_becomes_451_and_the_session_goes_on(server: Server) -> None:
    data, _ = talk(server, EHLO + MAIL + RCPT + b"NOOP\r\n", policy=ExplodingPolicy())
    assert codes(data) == [220, 250, 250, 451, 250]
    assert replies(data)[3].startswith(b"451 4.3.0")
    assert b"Traceback" not in data


def test_unwritable_spool_gets_452_not_a_traceback(server: Server) -> None:
    server.spool.mkdir(exist_ok=True)
    (server.spool / "incoming").write_text("not a folder")
    out, _ = talk(server, EHLO + MAIL + RCPT + b"DATA\r\n")
    assert codes(out) == [220, 250, 250, 250, 452]
    assert replies(out)[-1].startswith(b"452 4.3.1")


# -- the content check on its own ---------------------------------------------------------


@pytest.mark.parametrize(
    "pieces, problem",
    [
        ([b"a\r", b"\nb\r\n"], None),  # CRLF split across chunks
        ([b"a\r", b"b\r\n"], "bare_cr"),
        ([b"a\n"], "bare_lf"),
        ([b"a\r\n", b"\n"], "bare_lf"),
        ([b"x" * 600, b"x" * 400 + b"\r\n"], "text_line_too_long"),
        ([b"x" * 600, b"x" * 398 + b"\r\n"], None),
        ([b"tail without end"], "bare_lf"),
    ],
)
def test_content_check_sees_across_chunk_boundaries(pieces: list[bytes], problem: str | None) -> None:
    check = ContentCheck()
    for piece in pieces:
        check.feed(piece)
    check.finish()
    assert check.problem == problem


@pytest.mark.parametrize("step", [1, 2, 3, 5, 7])
def test_dot_unstuffing_and_end_detection_survive_any_read_boundary(server: Server, step: int) -> None:
    """The same bytes cut into reads of STEP octets give the same message and the same refusal."""
    body = b"Subject: x\r\n\r\n.\r\n..a\r\nb.\r\n.\r\n"
    stuffed = body.replace(b"\r\n.", b"\r\n..")
    session, client_w, out_r = session_over_pipe(server)
    data = EHLO + MAIL + RCPT + b"DATA\r\n" + b"..lead\r\n" + stuffed + b".\r\n" + b"NOOP\r\nQUIT\r\n"

    def write() -> None:
        for i in range(0, len(data), step):
            os.write(client_w, data[i : i + step])
        os.close(client_w)

    threading.Thread(target=write, daemon=True).start()
    session.run()
    out = os.read(out_r, 65536)
    assert codes(out) == [220, 250, 250, 250, 354, 250, 250, 221]
    message = (server.spool / "queue" / session.summary.queue_ids[0] / "message").read_bytes()
    assert message.endswith(b"\r\n.lead\r\n" + body)


def test_after_a_failed_bdat_the_transaction_takes_nothing_until_rset(server: Server) -> None:
    server.write_config(server={"max_message_size": "10"})
    data = EHLO + MAIL + RCPT + b"BDAT 20\r\n" + b"x" * 18 + b"\r\n" + RCPT + b"DATA\r\nRSET\r\n" + MAIL
    out, _ = talk(server, data)
    assert codes(out) == [220, 250, 250, 250, 552, 503, 503, 250, 250]


def test_a_spool_write_error_mid_data_reads_to_the_end_then_452(server: Server, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A failing disk must not turn the rest of the message into commands (smuggling)."""
    from inbound.spool import Incoming

    original = Incoming.write

    def failing_write(self: Incoming, data: bytes) -> None:
        if self.size > 0:  # our Received header goes through; the data does not
            raise OSError(28, "No space left on device")
        original(self, data)

    monkeypatch.setattr(Incoming, "write", failing_write)
    body = b"Subject: x\r\n\r\n" + b"NOOP\r\n" * 200 + b"RSET\r\nMAIL FROM:<ceo@bank.example>\r\n"
    out, session = talk(server, EHLO + MAIL + RCPT + b"DATA\r\n" + body + b".\r\nQUIT\r\n")
    assert codes(out) == [220, 250, 250, 250, 354, 452, 221]
    assert session.summary.senders == ["alice@sender.example"]
    assert server.ids("queue") == [] and server.ids("incoming") == []


def test_a_client_that_never_reads_cannot_hold_the_process(server: Server) -> None:
    import socket

    config = load(str(server.config))
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    channel = Channel(ours.fileno(), ours.fileno(), write_timeout=1.0)
    session, _ = build_session(config, channel, Client("192.0.2.1"))
    theirs.sendall(b"HELP\r\n" * 20000)  # ~1.4 MB of replies nobody reads
    theirs.shutdown(socket.SHUT_WR)
    started = time.monotonic()
    session.run()
    assert time.monotonic() - started < 10
    ours.close()
    theirs.close()


@pytest.mark.parametrize("command", ["MAIL FROM:<a@b.example> SIZE=\u00b2\r\n", "BDAT \u00b2 LAST\r\n"])
def test_non_ascii_digits_are_syntax_errors(server: Server, command: str) -> None:
    out, _ = talk(server, EHLO + (MAIL if command.startswith("BDAT") else b"") + command.encode())
    assert codes(out)[-1] == 501


def test_an_internal_error_in_rcpt_keeps_the_transaction(server: Server) -> None:
    data, _ = talk(server, EHLO + MAIL + RCPT + b"DATA\r\n", policy=ExplodingPolicy())
    assert codes(data) == [220, 250, 250, 451, 503]
    assert replies(data)[-1] == b"503 5.5.1 Send RCPT first"


@pytest.mark.parametrize(
    "command",
    [
        b"BDAT 4\x1fLAST\r\nabcd",
        "BDAT 4\u0085LAST\r\nabcd".encode(),
        "BDAT 4 la\u017ft\r\nabcd".encode(),
        "MAIL FROM:<a@b.example> \u017fize=5\r\n".encode(),
        b"MAIL FROM:<a@b.example> SIZE=1\x1fBODY=8BITMIME\r\n",
    ],
)
def test_only_ascii_space_separates_and_only_ascii_letters_match_keywords(
    server: Server, command: bytes
) -> None:
    """Lenient splitting (control or Unicode whitespace, 'ſ'.upper() == 'S') would let another
    parser in front of us read a different command than we do."""
    bdat = command.startswith(b"BDAT")
    out, _ = talk(server, (EHLO + MAIL + RCPT if bdat else EHLO) + command)
    reply = replies(out)[4 if bdat else 2]
    assert reply.startswith(b"501 5.5.4") or reply.startswith(b"555 5.5.4"), reply
    assert b"queued" not in out
    assert server.ids("queue") == []


def full_disk_delivery(
    server: Server, monkeypatch: pytest.MonkeyPatch, durable_only: bool = False
) -> tuple[str, object, list[str]]:
    """A message accepted, then a disk on which state.json cannot be written (DURABLE_ONLY:
    not fsync'ed; the checks' results, which need not be, still can): its queue id, the
    delivery's Result (None: it failed), and the log lines naming the message."""
    import errno

    from inbound import log
    from inbound.config import load as load_config
    from inbound.delivery.queue import Queue
    from inbound.delivery.router import Router
    from inbound.spool import Spool, State

    out, session = talk(server, transaction())
    [queue_id] = session.summary.queue_ids
    lines: list[str] = []
    monkeypatch.setattr(log, "_write", lambda level, message, args: lines.append(message % args))

    real_save = State.save

    def full(self: State, folder: str, durable: bool = True) -> None:
        if durable_only and not durable:
            return real_save(self, folder, durable)
        raise OSError(errno.ENOSPC, "No space left on device", f"{folder}/state.json")

    monkeypatch.setattr(State, "save", full)
    config = load_config(str(server.config))
    result = Queue(config, Router(config), Spool(config.server.spool)).deliver_safely(queue_id)
    return queue_id, result, [text for text in lines if queue_id in text]


@pytest.mark.parametrize("case", ["deferred", "kept in done/"])
def test_a_full_disk_after_the_250_is_one_clear_log_line(
    server: Server, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """An outcome that must be written (a deferral; every handler done, kept in done/) and
    cannot be: one line says why, and the message stays in queue/."""
    if case == "deferred":
        server.add_program("sink", "#!/bin/sh\ncat >/dev/null\nexit 75\n")
    else:
        server.write_config(handlers={"keep_done": "1"})
    queue_id, result, lines = full_disk_delivery(server, monkeypatch)
    assert result is None
    [line] = [text for text in lines if "status=" not in text]  # the handler's own line aside
    assert "No space left on device" in line and "left in queue/" in line
    assert not any("Traceback" in text for text in lines)
    assert server.ids("queue") == [queue_id]


def test_every_handler_done_needs_no_fsynced_outcome_before_the_message_is_removed(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """keep_done = 0: the removal of the message is the record that its handlers are done."""
    queue_id, result, lines = full_disk_delivery(server, monkeypatch, durable_only=True)
    assert result is not None and result.folder == "deleted", lines  # type: ignore[attr-defined]
    assert server.ids("queue") == [] and server.ids("done") == []


def test_a_program_handler_finds_the_checks_results_in_state_json(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`send --reply` from a program handler reads them there (require_auth)."""
    import inbound.checks as checks
    from inbound.config import load as load_config
    from inbound.delivery.queue import Queue
    from inbound.delivery.router import Router
    from inbound.spool import Spool

    server.write_config(checks={"spf": "yes"}, reply={"require_auth": "yes"})
    server.add_program(
        "sink",
        """#!/bin/sh
        cp "$(dirname "$0")/../spool/queue/$QUEUE_ID/state.json" "$(dirname "$0")/../seen.json"
        exec "$PYTHON" "$MAILSERVER" send --reply --body "hello"
        """,
    )
    mail = b"From: alice@sender.example\r\nTo: sink@example.org\r\nSubject: hi\r\n\r\nhello\r\n"
    out, session = talk(server, transaction(mail))
    [queue_id] = session.summary.queue_ids
    passed = checks.AuthResults(spf=checks.SPFResult("pass", domain="sender.example"))
    monkeypatch.setattr(checks, "authenticate", lambda *args, **kwargs: passed)
    config = load_config(str(server.config))
    assert Queue(config, Router(config), Spool(config.server.spool)).deliver_safely(queue_id) is not None
    assert '"spf"' in (server.root / "seen.json").read_text()
    assert list((server.root / "outbox").glob("*.eml")), server.log()


def test_a_failed_removal_does_not_run_a_succeeded_handler_again(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last outcome is not written when the removal is to record it; if the removal
    fails, it is written after all, and `queue --run` only removes the message."""
    import errno

    from inbound.config import load as load_config
    from inbound.delivery.queue import Queue
    from inbound.delivery.router import Router
    from inbound.spool import Spool

    server.add_program("sink", '#!/bin/sh\ncat >/dev/null\necho run >> "$(dirname "$0")/../runs"\n')
    out, session = talk(server, transaction())
    [queue_id] = session.summary.queue_ids
    real_move = Spool.move
    failures: list[str] = []

    def move(self: Spool, qid: str, src: str, dst: str) -> None:
        if dst == "incoming" and not failures:
            failures.append(qid)
            raise OSError(errno.EIO, "Input/output error", self.path(src, qid))
        real_move(self, qid, src, dst)

    monkeypatch.setattr(Spool, "move", move)
    config = load_config(str(server.config))
    queue = Queue(config, Router(config), Spool(config.server.spool))
    assert queue.deliver_safely(queue_id) is None and failures == [queue_id]
    assert server.ids("queue") == [queue_id]
    [result] = queue.run_queue(now_too=True)
    assert result.folder == "deleted"
    assert (server.root / "runs").read_text().count("run") == 1
    assert server.ids("queue") == [] and server.ids("incoming") == []
