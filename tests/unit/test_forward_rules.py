"""The rules of forwarding (inbound/autoreply/forward.py) without a transport: which
messages would loop, and the results handed to arc_sign."""

from __future__ import annotations

import pytest
from conftest import Server

from inbound.autoreply.forward import ADDRESS, arc_ready, header_fields, loop_reason
from inbound.config import Config, load


@pytest.fixture
def config(server: Server) -> Config:
    server.write_config(reply={"dkim_domain": "example.org", "dkim_selector": "fwd"})
    return load(str(server.config))


def fields(*lines: str) -> list[tuple[str, str]]:
    return header_fields(("\r\n".join(lines) + "\r\n\r\nbody\r\n").encode())


def test_header_fields_are_unfolded_and_named_in_lower_case() -> None:
    assert fields("ARC-Seal: i=1; d=a;", "\tb=xyz", "From: a@b") == [
        ("arc-seal", "i=1; d=a; b=xyz"),
        ("from", "a@b"),
    ]


def test_another_hosts_arc_set_is_no_loop(config: Config) -> None:
    seal = "ARC-Seal: i=1; a=rsa-sha256; cv=none; d=hop.example; s=fwd; b=x"
    assert loop_reason(fields(seal, "ARC-Authentication-Results: i=1; hop.example; spf=pass"), config) == ""


def test_our_authserv_id_in_an_arc_set_is_a_loop_in_any_case(config: Config) -> None:
    reason = loop_reason(fields("ARC-Authentication-Results: i=3; MX.Test.Example 1; spf=pass"), config)
    assert "our own ARC set" in reason


def test_our_key_in_an_arc_seal_is_a_loop(config: Config) -> None:
    reason = loop_reason(
        fields("ARC-Seal: i=1; a=rsa-sha256; cv=none; d=Example.org;", " s=fwd; b=x"), config
    )
    assert "our own ARC-Seal" in reason


def test_hops_through_us_and_in_all_are_counted(config: Config) -> None:
    ours = "Received: by mx.test.example (mailserver local) id Q; 1 Jan 2024"
    other = "Received: from a by b.example; 1 Jan 2024"
    assert loop_reason(fields(*[ours] * 3), config) == ""
    assert "4 times" in loop_reason(fields(*[ours] * 4), config)
    assert loop_reason(fields(*[other] * 100), config) == ""
    assert "101 Received fields" in loop_reason(fields(*[other] * 101), config)


@pytest.mark.parametrize(
    ("ours", "given"),
    [
        ("arc=permerror", "arc=fail"),
        ("arc=temperror", "arc=fail"),
        ("arc=pass", "arc=pass"),
        ("arc=none", "arc=none"),
    ],
)
def test_arc_sign_gets_a_chain_result_it_knows(ours: str, given: str) -> None:
    prefix = f"Authentication-Results: mx.test.example; spf=pass smtp.mailfrom=a@b; {ours}\r\n".encode()
    rest = b"From: a@b\r\n\r\nbody\r\n"
    assert arc_ready(prefix + rest, prefix) == prefix.replace(ours.encode(), given.encode()) + rest


@pytest.mark.parametrize("ours", ["mx.test.example; none", "mx.test.example; none (checks failed: OSError)"])
def test_with_no_results_the_aar_still_has_one_rfc_8601_allows(ours: str) -> None:
    prefix = f"Authentication-Results: {ours}\r\n".encode()
    rest = b"From: a@b\r\n\r\nbody\r\n"
    assert arc_ready(prefix + rest, prefix) == b"Authentication-Results: mx.test.example; arc=none\r\n" + rest


@pytest.mark.parametrize("address", ["bob@elsewhere.example", "b.o+b@x.example", "bücher@bücher.example"])
def test_plain_addresses_may_be_forwarded_to(address: str) -> None:
    assert ADDRESS.fullmatch(address)


@pytest.mark.parametrize(
    "address",
    ["-oQ@x.example", "bob", "bob@", "@x.example", "a b@x.example", '"a"@x.example', "a@b@c", "<a@b>"],
)
def test_anything_else_is_no_address_to_forward_to(address: str) -> None:
    assert not ADDRESS.fullmatch(address)
