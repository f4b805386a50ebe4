"""What the checks hand on: the Authentication-Results value (RFC 8601, parsed back with
`authres`), the environment, storage in the spool, the policy helpers, removal of forged
Authentication-Results, and authenticate() never raising."""

from __future__ import annotations

import json
from typing import Any

import authres
import pytest
from conftest_dns import make_check_settings

from inbound.checks import ARCResult, AuthResults, DKIMResult, DMARCResult, SPFResult, authenticate
from inbound.checks.authres import remove_our_authres

FULL = AuthResults(
    spf=SPFResult("pass", "mailfrom", "bounce+x=y@example.com", "example.com"),
    dkim=[
        DKIMResult("pass", domain="example.com", selector="s1", b="ab/cd+ef", algorithm="rsa-sha256"),
        DKIMResult(
            "fail", domain="list.example.net", selector="2024", b="QUJD", reason='body hash "mismatch"'
        ),
    ],
    dmarc=DMARCResult(
        "pass",
        "example.com",
        policy="reject",
        disposition="none",
        record_domain="example.com",
        dkim_aligned=True,
    ),
    arc=ARCResult("pass", 2),
    dkim_checked=True,
    from_domain="example.com",
)


def parse(value: str) -> list[tuple[str, str, dict[str, str]]]:
    header = authres.AuthenticationResultsHeader.parse_value(value)
    return [
        (r.method, r.result, {f"{p.type}.{p.name}": p.value for p in r.properties}) for r in header.results
    ]


def test_header_value_parses_with_authres_and_carries_every_result() -> None:
    value = FULL.header_value("mx.test.example")
    header = authres.AuthenticationResultsHeader.parse_value(value)
    assert header.authserv_id == "mx.test.example"
    assert parse(value) == [
        ("spf", "pass", {"smtp.mailfrom": "bounce+x=y@example.com"}),
        ("dkim", "pass", {"header.d": "example.com", "header.s": "s1", "header.b": "ab/cd+ef"}),
        ("dkim", "fail", {"header.d": "list.example.net", "header.s": "2024", "header.b": "QUJD"}),
        ("dmarc", "pass", {"header.from": "example.com"}),
        ("arc", "pass", {}),
    ]
    assert authres.parse("Authentication-Results: " + value).authserv_id == "mx.test.example"


def test_header_value_quotes_what_the_grammar_needs() -> None:
    value = FULL.header_value("mx.test.example")
    assert 'header.b="ab/cd+ef"' in value
    assert authres.AuthenticationResultsHeader.parse_value(value).results[2].reason == "body hash 'mismatch'"


@pytest.mark.parametrize(
    "sender",
    ['"john smith"@example.com', "user@example.com;dkim=pass", "a(b)@example.com", 'a"b\\c@x.example'],
)
def test_odd_senders_are_quoted_and_parse_back(sender: str) -> None:
    auth = AuthResults(spf=SPFResult("fail", "mailfrom", sender, "example.com"))
    [(method, result, properties)] = parse(auth.header_value("mx"))
    assert (method, result) == ("spf", "fail")
    # authres gives a quoted-string's content back with its quoted-pairs as they were
    assert properties["smtp.mailfrom"].replace("\\\\", "\\").replace('\\"', '"') == sender


def test_internationalised_sender_is_reported_in_ascii() -> None:
    auth = AuthResults(spf=SPFResult("fail", "mailfrom", "user@exämple.com", "exämple.com"))
    assert parse(auth.header_value("mx")) == [("spf", "fail", {"smtp.mailfrom": "user@xn--exmple-cua.com"})]
    auth = AuthResults(spf=SPFResult("fail", "mailfrom", "üser@exämple.com", "exämple.com"))
    assert parse(auth.header_value("mx")) == [("spf", "fail", {"smtp.mailfrom": "xn--exmple-cua.com"})]


def test_null_sender_reports_smtp_helo() -> None:
    auth = AuthResults(spf=SPFResult("pass", "helo", "mail.example.com", "mail.example.com"))
    assert auth.header_value("mx") == "mx; spf=pass smtp.helo=mail.example.com"


def test_nothing_checked_is_none() -> None:
    assert AuthResults().header_value("mx.test.example") == "mx.test.example; none"
    assert authres.AuthenticationResultsHeader.parse_value("mx.test.example; none").results == []


def test_dmarc_header_shows_policy_and_disposition() -> None:
    auth = AuthResults(dmarc=DMARCResult("fail", "example.com", policy="reject", disposition="quarantine"))
    value = auth.header_value("mx")
    assert value == "mx; dmarc=fail (p=reject dis=quarantine) header.from=example.com"
    assert parse(value) == [("dmarc", "fail", {"header.from": "example.com"})]


def test_environment_has_the_four_results() -> None:
    assert FULL.environment() == {
        "SPF_RESULT": "pass",
        "DKIM_RESULT": "pass",
        "DMARC_RESULT": "pass",
        "ARC_RESULT": "pass",
    }


def test_environment_is_none_for_checks_that_were_off() -> None:
    assert AuthResults().environment() == {
        "SPF_RESULT": "none",
        "DKIM_RESULT": "none",
        "DMARC_RESULT": "none",
        "ARC_RESULT": "none",
    }


def test_dkim_result_is_the_first_when_none_passed() -> None:
    auth = AuthResults(dkim=[DKIMResult("permerror"), DKIMResult("fail")], dkim_checked=True)
    assert auth.environment()["DKIM_RESULT"] == "permerror"


def test_results_survive_json_storage() -> None:
    stored = json.loads(json.dumps(FULL.to_dict()))
    again = AuthResults.from_dict(stored)
    assert again == FULL
    assert again.header_value("mx") == FULL.header_value("mx")


def test_stored_results_with_unknown_or_missing_keys_still_load() -> None:
    again = AuthResults.from_dict({"spf": {"result": "pass", "future": 1}, "dkim": [{"result": "none"}]})
    assert again.spf == SPFResult("pass")
    assert again.dkim == [DKIMResult("none")] and again.dkim_checked
    assert again.dmarc is None and again.arc is None


def test_dmarc_rejects_only_a_failure_under_reject() -> None:
    def with_dmarc(result: str, disposition: str) -> AuthResults:
        return AuthResults(dmarc=DMARCResult(result, "example.com", policy="reject", disposition=disposition))

    assert with_dmarc("fail", "reject").dmarc_rejects()
    assert not with_dmarc("fail", "quarantine").dmarc_rejects()
    assert not with_dmarc("pass", "none").dmarc_rejects()
    assert not with_dmarc("temperror", "none").dmarc_rejects()
    assert not AuthResults().dmarc_rejects()


def test_aligned_pass_needs_spf_pass_or_an_aligned_dkim_pass() -> None:
    def auth(spf: str, dkim_domain: str, dkim: str = "pass") -> AuthResults:
        return AuthResults(
            spf=SPFResult(spf, "mailfrom", "a@x.example", "x.example"),
            dkim=[DKIMResult(dkim, domain=dkim_domain)],
            from_domain="example.co.uk",
        )

    assert auth("pass", "other.example").aligned_pass
    assert auth("fail", "mail.example.co.uk").aligned_pass
    assert not auth("fail", "other.co.uk").aligned_pass
    assert not auth("softfail", "example.co.uk", "fail").aligned_pass
    assert auth("fail", "other.example").dkim_aligned_pass("other.example")


# -- remove_our_authres ---------------------------------------------------------------------------
FORGED = (
    b"Return-Path: <a@example.com>\r\n"
    b"Authentication-Results: MX.Test.Example; spf=pass smtp.mailfrom=a@example.com\r\n"
    b"Authentication-Results: other.example; dkim=pass header.d=example.com\r\n"
    b"authentication-results : (comment) mx.test.example;\r\n"
    b"\tdkim=pass header.d=bank.example\r\n"
    b'Authentication-Results: "mx.test.example" 1; none\r\n'
    b"Authentication-Results: mx.test.example.evil; none\r\n"
    b"Subject: hi  \r\n"
    b"\r\n"
    b"Authentication-Results: mx.test.example; spf=pass\r\n"
    b"body  \r\n"
)


def test_our_authres_fields_are_removed_and_everything_else_kept_byte_exact() -> None:
    cleaned = remove_our_authres(FORGED, "mx.test.example")
    assert cleaned == (
        b"Return-Path: <a@example.com>\r\n"
        b"Authentication-Results: other.example; dkim=pass header.d=example.com\r\n"
        b"Authentication-Results: mx.test.example.evil; none\r\n"
        b"Subject: hi  \r\n"
        b"\r\n"
        b"Authentication-Results: mx.test.example; spf=pass\r\n"
        b"body  \r\n"
    )


def test_removal_works_with_bare_lf_line_endings() -> None:
    message = FORGED.replace(b"\r\n", b"\n")
    expected = remove_our_authres(FORGED, "mx.test.example").replace(b"\r\n", b"\n")
    assert remove_our_authres(message, "MX.TEST.EXAMPLE") == expected


def test_message_without_our_fields_is_returned_unchanged() -> None:
    message = b"Subject: x\r\nAuthentication-Results: other; none\r\n\r\nbody"
    assert remove_our_authres(message, "mx.test.example") is message
    assert remove_our_authres(b"", "mx") == b""
    assert remove_our_authres(b"no header block at all", "mx") == b"no header block at all"


# -- authenticate() never raises -------------------------------------------------------------------
@pytest.mark.parametrize(
    "message",
    [
        b"",
        b"\r\n\r\n",
        b"garbage without colon\r\n\r\n",
        b"\xff\xfe\x00: \x00\r\n\r\n\xff",
        b"From: <@>\r\nDKIM-Signature: v=1; a=rsa-sha256; d=\xff; s=\xfe; h=from; bh=AAAA; b=AAAA\r\n\r\nx",
        b"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=; s=; b=AAAA\r\nFrom: a@example.com\r\n\r\nx",
    ],
    ids=["empty", "empty-headers", "garbage", "binary", "bad-dkim", "bad-arc"],
)
def test_authenticate_never_raises_on_bad_messages(dns_server: Any, message: bytes) -> None:
    auth = authenticate(
        message,
        client_ip="192.0.2.1",
        helo="h\x00",
        mail_from="a@b@c",
        settings=make_check_settings(dns_server),
        authserv_id="mx.test.example",
    )
    authres.AuthenticationResultsHeader.parse_value(auth.header_value())
    assert set(auth.environment().values()) <= {
        "pass",
        "fail",
        "softfail",
        "neutral",
        "none",
        "temperror",
        "permerror",
        "policy",
    }


def test_authenticate_with_unreachable_dns_reports_temporary_results(dns_server: Any) -> None:
    settings = make_check_settings(dns_server, dns_servers=(("127.0.0.1", 9),), dns_timeout=0.3)
    message = (
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=s; h=from; bh=AAAA; b=AAAA\r\n"
        b"From: a@example.com\r\n\r\nbody\r\n"
    )
    auth = authenticate(
        message,
        client_ip="192.0.2.1",
        helo="h.example",
        mail_from="a@example.com",
        settings=settings,
        authserv_id="mx",
    )
    assert auth.environment() == {
        "SPF_RESULT": "temperror",
        "DKIM_RESULT": "temperror",
        "DMARC_RESULT": "temperror",
        "ARC_RESULT": "none",
    }
    assert auth.temporary


def test_checks_that_are_off_are_not_run(dns_server: Any) -> None:
    settings = make_check_settings(dns_server, spf=False, dkim=False, dmarc=False, arc=False)
    auth = authenticate(
        b"From: a@example.com\r\n\r\n",
        client_ip="192.0.2.1",
        helo="h",
        mail_from="a@example.com",
        settings=settings,
        authserv_id="mx.test.example",
    )
    assert auth.header_value() == "mx.test.example; none"
    assert dns_server.queries == []


def test_only_the_checks_that_are_on_appear(dns_server: Any) -> None:
    settings = make_check_settings(dns_server, spf=False, dmarc=False)
    auth = authenticate(
        b"From: a@example.com\r\n\r\n",
        client_ip="192.0.2.1",
        helo="h",
        mail_from="a@example.com",
        settings=settings,
        authserv_id="mx.test.example",
    )
    assert auth.header_value() == "mx.test.example; dkim=none; arc=none"
