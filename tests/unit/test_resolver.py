"""The checks' DNS resolver against the real test DNS server: answers, NXDOMAIN, CNAMEs,
TCP fallback, time-outs, failing servers, bad names."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from inbound.checks.resolver import (
    Budget,
    DNSBudgetExceeded,
    DNSNameError,
    DNSTemporaryError,
    Record,
    Resolver,
)


@pytest.fixture
def silent_server() -> Iterator[tuple[str, int]]:
    """A UDP socket on 127.0.0.1 that never answers (and no TCP listener)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    yield sock.getsockname()
    sock.close()


def resolver(dns_server: Any, timeout: float = 0.5) -> Resolver:
    return Resolver([dns_server.address], timeout)


def test_answer_records_come_with_owner_type_and_value(dns_server: Any) -> None:
    dns_server.serve(
        {"example.com": [{"A": "192.0.2.1"}, {"MX": [10, "MX.example.com."]}, {"TXT": ["v=spf1 ", "-all"]}]}
    )
    r = resolver(dns_server)
    assert r.query("Example.COM", "A").records == [Record("example.com", "A", "192.0.2.1")]
    assert r.resolve("example.com", "MX") == [(10, "mx.example.com")]
    assert r.txt("example.com") == [b"v=spf1 -all"]


def test_nxdomain_and_no_data_are_answers_not_errors(dns_server: Any) -> None:
    dns_server.serve({"example.com": [{"A": "192.0.2.1"}]})
    r = resolver(dns_server)
    missing = r.query("nowhere.example.com", "A")
    assert missing.nxdomain and missing.records == []
    empty = r.query("example.com", "TXT")
    assert not empty.nxdomain and empty.records == []


def test_cname_chain_is_followed(dns_server: Any) -> None:
    dns_server.serve(
        {
            "a.example": [{"CNAME": "b.example"}],
            "b.example": [{"CNAME": "c.example"}],
            "c.example": [{"TXT": "found"}],
        }
    )
    r = resolver(dns_server)
    assert r.txt("a.example") == [b"found"]
    assert [rec.rdtype for rec in r.query("a.example", "TXT").records] == ["CNAME", "CNAME", "TXT"]


def test_cname_loop_is_a_temporary_error(dns_server: Any) -> None:
    dns_server.serve({"a.example": [{"CNAME": "b.example"}], "b.example": [{"CNAME": "A.example"}]})
    with pytest.raises(DNSTemporaryError, match="loop"):
        resolver(dns_server).txt("a.example")


def test_truncated_udp_answer_is_asked_again_over_tcp(dns_server: Any) -> None:
    big = "v=DKIM1; k=rsa; p=" + "A" * 2000
    dns_server.serve({"big.example": [{"TXT": big}]})
    assert resolver(dns_server).txt("big.example") == [big.encode()]
    assert [proto for _, _, proto in dns_server.queries] == ["udp", "tcp"]


def test_lookup_gives_up_after_the_timeout(dns_server: Any) -> None:
    dns_server.serve({"slow.example": ["TIMEOUT"]})
    started = time.monotonic()
    with pytest.raises(DNSTemporaryError, match="timed out"):
        resolver(dns_server, timeout=0.4).query("slow.example", "TXT")
    assert 0.35 < time.monotonic() - started < 1.5


def test_next_server_answers_when_the_first_is_silent(
    dns_server: Any, silent_server: tuple[str, int]
) -> None:
    dns_server.serve({"example.com": [{"A": "192.0.2.1"}]})
    r = Resolver([silent_server, dns_server.address], timeout=1.0)
    assert r.resolve("example.com", "A") == ["192.0.2.1"]


def test_servfail_from_every_server_is_a_temporary_error(dns_server: Any) -> None:
    dns_server.serve({"broken.example": ["SERVFAIL"]})
    started = time.monotonic()
    with pytest.raises(DNSTemporaryError, match="SERVFAIL"):
        resolver(dns_server, timeout=2).query("broken.example", "A")
    assert time.monotonic() - started < 1.0  # asking the same server again would not help


def test_no_server_at_all_is_a_temporary_error() -> None:
    r = Resolver([], 0.2)
    r._servers = []  # as when resolv.conf is missing
    with pytest.raises(DNSTemporaryError):
        r.query("example.com", "A")


@pytest.mark.parametrize("name", ["", ".", "a..b", "x" * 64 + ".example", b"\xff\xfe.example"])
def test_names_that_cannot_be_asked_raise_name_error(dns_server: Any, name: str | bytes) -> None:
    with pytest.raises(DNSNameError):
        resolver(dns_server).query(name, "TXT")


def test_settings_give_servers_and_timeout() -> None:
    class Settings:
        dns_servers = (("127.0.0.1", 5353), ("localhost", 53))
        dns_timeout = 2.5

    r = Resolver.from_settings(Settings())
    assert r.servers[0] == ("127.0.0.1", 5353)
    assert r.servers[1] in (("127.0.0.1", 53), ("::1", 53))  # a name is turned into an address
    assert r.timeout == 2.5


# -- one message's resolver: answers remembered, one budget ---------------------------------
def test_the_same_question_is_asked_once(dns_server: Any) -> None:
    dns_server.serve({"example.com": [{"TXT": "hello"}], "slow.example": ["TIMEOUT"]})
    r = resolver(dns_server, timeout=0.3)
    assert r.txt("example.com") == r.txt("EXAMPLE.com.") == [b"hello"]
    with pytest.raises(DNSTemporaryError):
        r.txt("slow.example")
    started = time.monotonic()
    with pytest.raises(DNSTemporaryError):  # a failure is remembered too: no second wait
        r.txt("slow.example")
    assert time.monotonic() - started < 0.1
    assert sum(1 for name, _, _ in dns_server.queries if name == "example.com") == 1
    assert r.sent == 2


def test_the_budget_caps_the_queries_of_a_message(dns_server: Any) -> None:
    dns_server.serve({f"n{i}.example": [{"TXT": str(i)}] for i in range(5)})
    budget = Budget(60, queries=3, cname_hops=20)
    r = Resolver([dns_server.address], 0.5, budget)
    assert [r.txt(f"n{i}.example") for i in range(3)] == [[b"0"], [b"1"], [b"2"]]
    assert r.txt("n0.example") == [b"0"]  # remembered: costs nothing
    with pytest.raises(DNSBudgetExceeded, match="3 queries"):
        r.txt("n3.example")
    assert budget.spent == "3 queries" and len(dns_server.queries) == 3


def test_the_budget_caps_the_cname_hops_of_a_message(dns_server: Any) -> None:
    dns_server.serve({f"h{i}.example": [{"CNAME": f"h{i + 1}.example"}] for i in range(8)})
    budget = Budget(60, queries=100, cname_hops=5)
    with pytest.raises(DNSBudgetExceeded, match="5 CNAME hops"):
        Resolver([dns_server.address], 0.5, budget).txt("h0.example")
    assert isinstance(DNSBudgetExceeded("x"), DNSTemporaryError)  # a temperror to the checks


def test_the_deadline_is_one_for_all_lookups_of_a_message(dns_server: Any) -> None:
    dns_server.serve({f"slow{i}.example": ["TIMEOUT"] for i in range(5)})
    budget = Budget(0.8, queries=100, cname_hops=20)
    r = Resolver([dns_server.address], 0.5, budget)
    started = time.monotonic()
    for i in range(5):
        with pytest.raises(DNSTemporaryError):
            r.txt(f"slow{i}.example")
    assert 0.75 < time.monotonic() - started < 1.2  # 0.5 + the 0.3 left, then nothing
    assert budget.spent == "0.8 s" and r.sent == 2
