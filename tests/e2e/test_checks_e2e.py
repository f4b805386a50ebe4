"""The checks on the whole path: SMTP in, a real DNS server on 127.0.0.1, results to handlers."""

from __future__ import annotations

import authres
import dkim
from conftest import TEST_DATA, Server, codes, replies
from conftest_dns import checks_against

DATA = TEST_DATA / "dkim"
EHLO = b"EHLO mail.sender.example\r\n"


def zone(dmarc_policy: str = "reject") -> dict:
    public = (DATA / "test-rsa2048.pub.b64").read_text().strip()
    return {
        "sender.example": [{"TXT": "v=spf1 ip4:192.0.2.10 -all"}],
        "sel._domainkey.sender.example": [{"TXT": f"v=DKIM1; k=rsa; p={public}"}],
        "_dmarc.sender.example": [{"TXT": f"v=DMARC1; p={dmarc_policy}"}],
    }


def signed(body: bytes = b"Hello.\r\n", tamper: bool = False) -> bytes:
    message = (
        b"From: Alice <alice@sender.example>\r\nTo: sink@example.org\r\nSubject: signed\r\n"
        b"Message-ID: <1@sender.example>\r\n\r\n" + body
    )
    signature = dkim.sign(
        message,
        b"sel",
        b"sender.example",
        (DATA / "test-rsa2048.pem").read_bytes(),
        include_headers=[b"from", b"to", b"subject", b"message-id"],
    )
    message = signature + message
    return message.replace(b"Hello.", b"Hellp.") if tamper else message


def checks_on(server: Server, dns_server, **extra: str) -> None:  # type: ignore[no-untyped-def]
    server.write_config(checks=checks_against(dns_server, **extra))


def send(server: Server, message: bytes, remote_addr: str = "192.0.2.10") -> bytes:
    return server.smtp(
        EHLO
        + b"MAIL FROM:<alice@sender.example>\r\nRCPT TO:<sink@example.org>\r\nDATA\r\n"
        + message
        + b".\r\nQUIT\r\n",
        remote_addr=remote_addr,
    )


def results_of(message: bytes) -> dict[str, str]:
    header = message.split(b"\n", 1)[0].decode()
    parsed = authres.AuthenticationResultsHeader.parse(header)
    assert parsed.authserv_id == "mx.test.example"
    return {r.method: r.result for r in parsed.results}


def test_a_signed_message_from_an_authorised_host_passes_everything(server: Server, dns_server) -> None:  # type: ignore[no-untyped-def]
    dns_server.serve(zone())
    checks_on(server, dns_server)
    send(server, signed())
    [(message, env)] = server.got()
    assert results_of(message) == {"spf": "pass", "dkim": "pass", "dmarc": "pass", "arc": "none"}
    assert (env["SPF_RESULT"], env["DKIM_RESULT"], env["DMARC_RESULT"]) == ("pass", "pass", "pass")
    assert "header.d=sender.example" in env["AUTHENTICATION_RESULTS"]


def test_a_forged_message_is_reported_not_refused_by_default(server: Server, dns_server) -> None:  # type: ignore[no-untyped-def]
    dns_server.serve(zone())
    checks_on(server, dns_server)
    out = send(server, signed(tamper=True), remote_addr="203.0.113.66")
    assert codes(out)[-2] == 250
    [(message, env)] = server.got()
    assert results_of(message) == {"spf": "fail", "dkim": "fail", "dmarc": "fail", "arc": "none"}
    assert env["DMARC_RESULT"] == "fail"


def test_dmarc_reject_refuses_a_p_reject_failure_before_the_250(server: Server, dns_server) -> None:  # type: ignore[no-untyped-def]
    dns_server.serve(zone("reject"))
    checks_on(server, dns_server, dmarc_reject="yes")
    out = send(server, signed(tamper=True), remote_addr="203.0.113.66")
    assert replies(out)[-2] == b"550 5.7.1 Message rejected by the DMARC policy of sender.example"
    assert server.got() == [] and server.ids("queue") == [] and server.ids("incoming") == []


def test_dmarc_reject_is_not_bypassed_by_a_second_from_address(server: Server, dns_server) -> None:  # type: ignore[no-untyped-def]
    """Issue 13: `From: victim, me@evil` gave permerror, and only fail was refused."""
    dns_server.serve(zone("reject"))
    checks_on(server, dns_server, dmarc_reject="yes")
    for from_ in (
        b"alice@sender.example, me@evil.example",
        b"Me <me@evil.example>, Alice <alice@sender.example>",
        b"me@evil.example\r\nFrom: alice@sender.example",
    ):
        message = b"From: " + from_ + b"\r\nTo: sink@example.org\r\nSubject: forged\r\n\r\nPay now.\r\n"
        out = send(server, message, remote_addr="203.0.113.66")
        assert replies(out)[-2] == b"550 5.7.1 Message rejected by the DMARC policy of sender.example", from_
    assert server.got() == [] and server.ids("queue") == [] and server.ids("incoming") == []


def test_dmarc_reject_lets_p_none_failures_and_passing_mail_through(server: Server, dns_server) -> None:  # type: ignore[no-untyped-def]
    dns_server.serve(zone("none"))
    checks_on(server, dns_server, dmarc_reject="yes")
    assert codes(send(server, signed(tamper=True), remote_addr="203.0.113.66"))[-2] == 250
    dns_server.serve(zone("reject"))
    assert codes(send(server, signed()))[-2] == 250
    assert len(server.got()) == 2


def test_checks_are_not_run_again_on_retry(server: Server, dns_server) -> None:  # type: ignore[no-untyped-def]
    dns_server.serve(zone())
    checks_on(server, dns_server)
    server.add_program("flaky", "#!/bin/sh\ncat > /dev/null\nexit 75\n")
    server.smtp(
        EHLO
        + b"MAIL FROM:<alice@sender.example>\r\nRCPT TO:<flaky@example.org>\r\nDATA\r\n"
        + signed()
        + b".\r\nQUIT\r\n"
    )
    asked = len(dns_server.queries)
    assert asked > 0
    assert server.run("queue", "--run", "--now").returncode == 0
    assert len(dns_server.queries) == asked
