"""Issue 13, item 1: a hostile message (20 DKIM keys, 50 ARC sets, nine SPF includes, all at
the attacker's names) against a DNS server that never answers them or answers with CNAME
chains, through the real path: an inetd-mode session over pipes, checks before the 250
(dmarc_reject), a program handler.  The message's one DNS budget bounds the time and the
queries; what runs out is temperror (ARC: fail), stored and logged, never a hang.
"""

from __future__ import annotations

import json
import time

import hostile_dns
import pytest
from conftest import Server, codes
from conftest_dns import checks_against

from inbound.checks import MAX_CNAME_HOPS, MAX_QUERIES, TIME_LIMIT_FACTOR

DNS_TIMEOUT = 0.5


@pytest.mark.parametrize("kind", ["slow", "chains"])
def test_a_hostile_message_is_checked_within_the_budget(server: Server, dns_server, kind: str) -> None:  # type: ignore[no-untyped-def]
    dns_server.serve(hostile_dns.zone(kind))
    server.write_config(
        checks=checks_against(
            dns_server,
            dmarc_reject="yes",  # so the client waits for the checks before its reply
            dns_timeout=str(DNS_TIMEOUT),
        )
    )
    session = (
        b"EHLO mail.evil.example\r\nMAIL FROM:<boss@evil.example>\r\nRCPT TO:<sink@example.org>\r\n"
        b"DATA\r\n" + hostile_dns.message() + b".\r\nQUIT\r\n"
    )
    started = time.monotonic()
    out = server.smtp(session, remote_addr="192.0.2.10", timeout=60)
    took = time.monotonic() - started
    assert codes(out) == [220, 250, 250, 250, 354, 250, 221]
    limit = TIME_LIMIT_FACTOR * DNS_TIMEOUT
    assert took < limit + 5, f"{took:.1f} s for a budget of {limit:g} s"
    assert len(dns_server.queries) <= MAX_QUERIES
    [(_, env)] = server.got()
    # pyspf follows SPF's CNAMEs itself and calls a chain over 10 a permerror
    assert env["SPF_RESULT"] == ("temperror" if kind == "slow" else "permerror")
    # the first keys end their chains in NXDOMAIN (no key: permerror), then the hops run out
    assert env["DKIM_RESULT"] == ("temperror" if kind == "slow" else "permerror")
    assert "dkim=temperror" in env["AUTHENTICATION_RESULTS"]
    assert env["DMARC_RESULT"] == "temperror"
    assert env["ARC_RESULT"] == "fail"
    spent = f"{MAX_CNAME_HOPS} CNAME hops" if kind == "chains" else f"{limit:g} s"
    assert f"DNS budget spent ({spent})" in server.log()
    [queue_id] = server.ids("failed") or server.ids("done") or server.ids("queue") or [None]
    if queue_id:  # kept (keep_done or retries): the results are stored with the reason
        folder = next(server.spool.glob(f"*/{queue_id}"))
        state = json.loads((folder / "state.json").read_text())
        assert state["auth"]["dns_budget"] == spent


def test_a_client_whose_message_spent_the_budget_is_turned_away_for_a_while(
    server: Server, dns_server
) -> None:  # type: ignore[no-untyped-def]
    dns_server.serve(hostile_dns.zone("chains"))
    server.write_config(
        checks=checks_against(dns_server, dmarc_reject="yes", dns_timeout=str(DNS_TIMEOUT)),
        limits={"rate": "100"},  # the per-client memory is on
    )
    session = (
        b"EHLO mail.evil.example\r\nMAIL FROM:<boss@evil.example>\r\nRCPT TO:<sink@example.org>\r\n"
        b"DATA\r\n" + hostile_dns.message() + b".\r\nQUIT\r\n"
    )
    assert codes(server.smtp(session, remote_addr="192.0.2.10", timeout=60))[-2] == 250  # accepted, once
    again = server.smtp(b"QUIT\r\n", remote_addr="192.0.2.10")
    assert codes(again) == [421]
    assert codes(server.smtp(b"QUIT\r\n", remote_addr="192.0.2.11")) == [220, 221]
