"""SPF behaviour of our wrapper beyond the RFC 7208 suite: which identity is checked, unknown
clients, time-outs, and RFC 7208 5.5 for PTR names whose lookup fails."""

from __future__ import annotations

import time
from typing import Any

import pytest
from conftest_dns import make_check_settings

from inbound.checks import AuthResults, authenticate

ZONE = {
    "example.com": [{"TXT": "v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 -all"}],
    "helo.example.com": [{"TXT": "v=spf1 a -all"}, {"A": "192.0.2.25"}],
    "header-from.example": [{"TXT": "v=spf1 +all"}],
    "slow.example": ["TIMEOUT"],
}
MESSAGE = b"From: ceo@header-from.example\r\nSubject: hello\r\n\r\nbody\r\n"


def spf_of(
    dns_server: Any, client_ip: str, helo: str, mail_from: str, zone: dict | None = None, **settings: Any
) -> AuthResults:
    dns_server.serve(ZONE if zone is None else zone)
    checks = make_check_settings(dns_server, dkim=False, dmarc=False, arc=False, **settings)
    return authenticate(
        MESSAGE,
        client_ip=client_ip,
        helo=helo,
        mail_from=mail_from,
        settings=checks,
        authserv_id="mx.test.example",
    )


def test_mail_from_domain_is_checked(dns_server: Any) -> None:
    auth = spf_of(dns_server, "192.0.2.7", "whatever.example", "user@example.com")
    assert auth.spf is not None
    assert (auth.spf.result, auth.spf.identity, auth.spf.domain) == ("pass", "mailfrom", "example.com")
    assert "spf=pass smtp.mailfrom=user@example.com" in auth.header_value()


def test_mail_from_outside_the_policy_fails(dns_server: Any) -> None:
    auth = spf_of(dns_server, "198.51.100.1", "whatever.example", "user@example.com")
    assert auth.spf is not None and auth.spf.result == "fail"
    assert auth.environment()["SPF_RESULT"] == "fail"


def test_null_sender_checks_the_helo_identity(dns_server: Any) -> None:
    auth = spf_of(dns_server, "192.0.2.25", "helo.example.com", "")
    assert auth.spf is not None
    assert (auth.spf.result, auth.spf.identity, auth.spf.sender) == ("pass", "helo", "helo.example.com")
    assert "spf=pass smtp.helo=helo.example.com" in auth.header_value()


def test_null_sender_from_another_address_fails_the_helo_policy(dns_server: Any) -> None:
    auth = spf_of(dns_server, "192.0.2.26", "helo.example.com", "")
    assert auth.spf is not None and auth.spf.result == "fail"


def test_header_from_is_never_the_spf_identity(dns_server: Any) -> None:
    # header-from.example publishes +all; the envelope's domain publishes nothing.
    auth = spf_of(dns_server, "203.0.113.5", "client.example", "user@nothing.example")
    assert auth.spf is not None and (auth.spf.result, auth.spf.domain) == ("none", "nothing.example")


def test_ipv6_client_is_checked(dns_server: Any) -> None:
    auth = spf_of(dns_server, "2001:db8::25", "client.example", "user@example.com")
    assert auth.spf is not None and auth.spf.result == "pass"


def test_ipv4_mapped_ipv6_client_is_checked_as_ipv4(dns_server: Any) -> None:
    auth = spf_of(dns_server, "::ffff:192.0.2.7", "client.example", "user@example.com")
    assert auth.spf is not None and auth.spf.result == "pass"


@pytest.mark.parametrize("client_ip", ["", "unknown", "999.1.1.1"])
def test_unknown_client_address_is_none_not_an_exception(dns_server: Any, client_ip: str) -> None:
    auth = spf_of(dns_server, client_ip, "client.example", "user@example.com")
    assert auth.spf is not None and auth.spf.result == "none"
    assert "unknown" in auth.spf.reason


def test_no_sender_and_no_helo_is_none(dns_server: Any) -> None:
    auth = spf_of(dns_server, "192.0.2.7", "", "")
    assert auth.spf is not None and auth.spf.result == "none"
    assert auth.header_value().startswith("mx.test.example; spf=none")


def test_helo_address_literal_is_not_checked(dns_server: Any) -> None:
    auth = spf_of(dns_server, "192.0.2.7", "[192.0.2.7]", "")
    assert auth.spf is not None and auth.spf.result == "none"


def test_dns_timeout_is_respected_and_gives_temperror(dns_server: Any) -> None:
    started = time.monotonic()
    auth = spf_of(dns_server, "192.0.2.7", "client.example", "user@slow.example", dns_timeout=0.4)
    elapsed = time.monotonic() - started
    assert auth.spf is not None and auth.spf.result == "temperror"
    assert elapsed < 2.0


def test_unreachable_dns_server_gives_temperror(dns_server: Any) -> None:
    dns_server.serve(ZONE)
    checks = make_check_settings(
        dns_server, dkim=False, dmarc=False, arc=False, dns_timeout=0.3, dns_servers=(("127.0.0.1", 9),)
    )
    auth = authenticate(
        MESSAGE,
        client_ip="192.0.2.7",
        helo="h",
        mail_from="user@example.com",
        settings=checks,
        authserv_id="mx",
    )
    assert auth.spf is not None and auth.spf.result == "temperror"


def test_ten_dns_mechanisms_are_the_limit(dns_server: Any) -> None:
    zone = {
        "many.example": [{"TXT": "v=spf1 " + " ".join(f"a:h{i}.many.example" for i in range(11)) + " -all"}]
    }
    zone.update({f"h{i}.many.example": [{"A": "198.51.100.1"}] for i in range(11)})
    auth = spf_of(dns_server, "192.0.2.7", "client.example", "user@many.example", zone)
    assert auth.spf is not None and auth.spf.result == "permerror"


def test_more_than_two_void_lookups_is_permerror(dns_server: Any) -> None:
    zone = {"void.example": [{"TXT": "v=spf1 a:n1.void.example a:n2.void.example a:n3.void.example -all"}]}
    auth = spf_of(dns_server, "192.0.2.7", "client.example", "user@void.example", zone)
    assert auth.spf is not None and auth.spf.result == "permerror"


# -- RFC 7208 5.5: a DNS error on one PTR name's addresses skips that name -----------------------
def test_ptr_name_whose_address_lookup_times_out_is_skipped(dns_server: Any) -> None:
    zone = {
        "ptr.example": [{"TXT": "v=spf1 ptr -all"}],
        "7.2.0.192.in-addr.arpa": [{"PTR": "slow.ptr.example"}, {"PTR": "good.ptr.example"}],
        "slow.ptr.example": ["TIMEOUT"],
        "good.ptr.example": [{"A": "192.0.2.7"}],
    }
    auth = spf_of(dns_server, "192.0.2.7", "client.example", "user@ptr.example", zone, dns_timeout=0.3)
    assert auth.spf is not None and auth.spf.result == "pass"


def test_ptr_name_with_a_cname_loop_is_skipped(dns_server: Any) -> None:
    zone = {
        "ptr.example": [{"TXT": "v=spf1 ptr ?all"}],
        "7.2.0.192.in-addr.arpa": [{"PTR": "Loop.ptr.example."}],
        "loop.ptr.example": [{"CNAME": "LOOP.ptr.example."}],
    }
    auth = spf_of(dns_server, "192.0.2.7", "client.example", "user@ptr.example", zone)
    assert auth.spf is not None and auth.spf.result == "neutral"


def test_ptr_name_answered_with_servfail_is_skipped(dns_server: Any) -> None:
    zone = {
        "ptr.example": [{"TXT": "v=spf1 ptr ?all"}],
        "7.2.0.192.in-addr.arpa": [{"PTR": "broken.ptr.example"}],
        "broken.ptr.example": ["SERVFAIL"],
    }
    auth = spf_of(dns_server, "192.0.2.7", "client.example", "user@ptr.example", zone)
    assert auth.spf is not None and auth.spf.result == "neutral"


def test_quoted_local_part_expands_unquoted_in_macros(dns_server: Any) -> None:
    zone = {
        "q.example": [{"TXT": "v=spf1 -all exp=msg.q.example"}],
        "msg.q.example": [{"TXT": "%{l} may not send"}],
    }
    auth = spf_of(dns_server, "192.0.2.7", "client.example", '"John \\"Q\\" Doe"@q.example', zone)
    assert auth.spf is not None and auth.spf.result == "fail"
    assert auth.spf.reason == 'John "Q" Doe may not send'
