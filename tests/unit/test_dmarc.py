"""DMARC (RFC 7489): policy discovery over the real DNS server, alignment, p/sp/pct, the
From field's problems, and DNS failures."""

from __future__ import annotations

from typing import Any

import dkim
import pytest
from conftest_dns import make_check_settings
from test_dkim import HEADERS, rsa_key

from inbound.checks import AuthResults, DKIMResult, SPFResult, authenticate
from inbound.checks.dmarc import check_dmarc
from inbound.checks.orgdomain import organizational_domain
from inbound.checks.resolver import Resolver

REJECT = "v=DMARC1; p=reject; rua=mailto:dmarc@example.com"


def spf(result: str, domain: str) -> SPFResult:
    return SPFResult(result, "mailfrom", f"bounce@{domain}", domain)


def sig(result: str, domain: str) -> DKIMResult:
    return DKIMResult(result, domain=domain, selector="s1", b="AAAAAAAA")


# id, zone, From domain, SPF, DKIM, expected (result, policy, disposition, record domain)
# fmt: off
CASES = [
    ("no-record-is-none", {}, "example.com", spf("pass", "example.com"), [], ("none", "", "none", "")),
    ("relaxed-spf-alignment-passes", {"_dmarc.example.com": [{"TXT": REJECT}]}, "example.com",
     spf("pass", "bounce.example.com"), [], ("pass", "reject", "none", "example.com")),
    ("relaxed-dkim-alignment-passes", {"_dmarc.example.com": [{"TXT": REJECT}]}, "example.com",
     spf("fail", "example.com"), [sig("pass", "mail.example.com")],
     ("pass", "reject", "none", "example.com")),
    ("unaligned-passes-fail-with-reject", {"_dmarc.example.com": [{"TXT": REJECT}]}, "example.com",
     spf("pass", "other.net"), [sig("pass", "other.net")], ("fail", "reject", "reject", "example.com")),
    ("aligned-but-failing-dkim-is-fail", {"_dmarc.example.com": [{"TXT": REJECT}]}, "example.com",
     spf("softfail", "example.com"), [sig("fail", "example.com")],
     ("fail", "reject", "reject", "example.com")),
    ("quarantine-policy", {"_dmarc.example.com": [{"TXT": "v=DMARC1; p=quarantine"}]}, "example.com",
     None, [], ("fail", "quarantine", "quarantine", "example.com")),
    ("none-policy-still-reports-fail", {"_dmarc.example.com": [{"TXT": "v=DMARC1; p=none"}]}, "example.com",
     None, [], ("fail", "none", "none", "example.com")),
    ("strict-aspf-refuses-subdomain", {"_dmarc.example.com": [{"TXT": "v=DMARC1; p=reject; aspf=s"}]},
     "example.com", spf("pass", "bounce.example.com"), [], ("fail", "reject", "reject", "example.com")),
    ("strict-aspf-accepts-exact-domain", {"_dmarc.example.com": [{"TXT": "v=DMARC1; p=reject; aspf=s"}]},
     "example.com", spf("pass", "EXAMPLE.com"), [], ("pass", "reject", "none", "example.com")),
    ("strict-adkim-refuses-subdomain", {"_dmarc.example.com": [{"TXT": "v=DMARC1; p=reject; adkim=s"}]},
     "example.com", None, [sig("pass", "mail.example.com")], ("fail", "reject", "reject", "example.com")),
    ("subdomain-uses-org-record-and-sp",
     {"_dmarc.example.com": [{"TXT": "v=DMARC1; p=reject; sp=quarantine"}]}, "news.example.com",
     None, [], ("fail", "quarantine", "quarantine", "example.com")),
    ("subdomain-without-sp-uses-p", {"_dmarc.example.com": [{"TXT": REJECT}]}, "a.b.example.com",
     None, [sig("pass", "example.com")], ("pass", "reject", "none", "example.com")),
    ("subdomain-own-record-wins",
     {"_dmarc.example.com": [{"TXT": REJECT}], "_dmarc.news.example.com": [{"TXT": "v=DMARC1; p=none"}]},
     "news.example.com", None, [], ("fail", "none", "none", "news.example.com")),
    ("multi-label-suffix-org-domain",
     {"_dmarc.example.co.uk": [{"TXT": REJECT}]}, "mail.example.co.uk",
     None, [sig("pass", "example.co.uk")], ("pass", "reject", "none", "example.co.uk")),
    ("multi-label-suffix-other-registrant-not-aligned",
     {"_dmarc.example.co.uk": [{"TXT": REJECT}]}, "example.co.uk",
     spf("pass", "other.co.uk"), [sig("pass", "other.co.uk")], ("fail", "reject", "reject", "example.co.uk")),
    ("public-suffix-record-never-used", {"_dmarc.co.uk": [{"TXT": REJECT}]}, "shop.example.co.uk",
     None, [], ("none", "", "none", "")),
    ("pct-zero-downgrades-reject-to-quarantine",
     {"_dmarc.example.com": [{"TXT": "v=DMARC1; p=reject; pct=0"}]}, "example.com",
     None, [], ("fail", "reject", "quarantine", "example.com")),
    ("policy-values-are-case-insensitive", {"_dmarc.example.com": [{"TXT": "v=DMARC1; p=Reject"}]},
     "example.com", None, [], ("fail", "reject", "reject", "example.com")),
    ("two-records-mean-no-policy",
     {"_dmarc.example.com": [{"TXT": REJECT}, {"TXT": "v=DMARC1; p=none"}]}, "example.com",
     None, [], ("none", "", "none", "")),
    ("invalid-p-without-rua-means-no-policy", {"_dmarc.example.com": [{"TXT": "v=DMARC1; p=bounce"}]},
     "example.com", None, [], ("none", "", "none", "")),
    ("invalid-p-with-rua-acts-as-p-none",
     {"_dmarc.example.com": [{"TXT": "v=DMARC1; p=bounce; rua=mailto:r@example.com"}]}, "example.com",
     None, [], ("fail", "none", "none", "example.com")),
    ("version-not-first-is-no-record", {"_dmarc.example.com": [{"TXT": "p=reject; v=DMARC1"}]},
     "example.com", None, [], ("none", "", "none", "")),
    ("other-txt-records-are-ignored",
     {"_dmarc.example.com": [{"TXT": "v=spf1 -all"}, {"TXT": "v=DMARC1; p=quarantine"}]}, "example.com",
     None, [], ("fail", "quarantine", "quarantine", "example.com")),
    ("record-through-cname", {"_dmarc.example.com": [{"CNAME": "dmarc.provider.net"}],
                              "dmarc.provider.net": [{"TXT": REJECT}]},
     "example.com", None, [], ("fail", "reject", "reject", "example.com")),
    ("servfail-is-temperror", {"_dmarc.example.com": ["SERVFAIL"]}, "example.com",
     None, [], ("temperror", "", "none", "")),
    ("timeout-is-temperror", {"_dmarc.example.com": ["TIMEOUT"]}, "example.com",
     None, [], ("temperror", "", "none", "")),
    ("aligned-spf-temperror-is-temperror", {"_dmarc.example.com": [{"TXT": REJECT}]}, "example.com",
     spf("temperror", "example.com"), [], ("temperror", "reject", "none", "example.com")),
    ("aligned-dkim-temperror-is-temperror", {"_dmarc.example.com": [{"TXT": REJECT}]}, "example.com",
     None, [sig("temperror", "example.com")], ("temperror", "reject", "none", "example.com")),
    ("unaligned-temperror-does-not-matter", {"_dmarc.example.com": [{"TXT": REJECT}]}, "example.com",
     spf("temperror", "other.net"), [], ("fail", "reject", "reject", "example.com")),
]
# fmt: on


@pytest.mark.parametrize(
    ("zone", "from_domain", "spf_result", "dkim_results", "expected"),
    [pytest.param(*case[1:], id=case[0]) for case in CASES],
)
def test_dmarc_table(
    dns_server: Any,
    zone: dict,
    from_domain: str,
    spf_result: SPFResult | None,
    dkim_results: list[DKIMResult],
    expected: tuple[str, str, str, str],
) -> None:
    dns_server.serve(zone)
    resolver = Resolver([dns_server.address], 0.3)
    result = check_dmarc(from_domain, "", spf_result, dkim_results, resolver, sample=lambda: 0.5)
    assert (result.result, result.policy, result.disposition, result.record_domain) == expected, result.reason
    assert result.from_domain == from_domain


def test_table_has_at_least_fifteen_cases() -> None:
    assert len(CASES) >= 15


def test_pct_samples_which_failing_messages_get_the_policy(dns_server: Any) -> None:
    dns_server.serve({"_dmarc.example.com": [{"TXT": "v=DMARC1; p=reject; pct=30"}]})
    resolver = Resolver([dns_server.address], 0.3)
    picked = check_dmarc("example.com", "", None, [], resolver, sample=lambda: 0.29)
    spared = check_dmarc("example.com", "", None, [], resolver, sample=lambda: 0.30)
    assert (picked.disposition, spared.disposition) == ("reject", "quarantine")


def test_organizational_domain_uses_the_public_suffix_list() -> None:
    assert organizational_domain("a.b.example.co.uk") == "example.co.uk"
    assert organizational_domain("Mail.Example.COM.") == "example.com"
    assert organizational_domain("co.uk") == "co.uk"


# -- the From field, through authenticate() ---------------------------------------------------
def dmarc_of(dns_server: Any, headers: bytes, zone: dict | None = None) -> AuthResults:
    dns_server.serve(zone or {"_dmarc.example.com": [{"TXT": REJECT}]})
    settings = make_check_settings(dns_server, spf=False, dkim=False, arc=False)
    return authenticate(
        headers + b"\r\nbody\r\n",
        client_ip="192.0.2.1",
        helo="h.example",
        mail_from="",
        settings=settings,
        authserv_id="mx.test.example",
    )


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        (b"Subject: no from\r\n", "no From"),
        (b"From: undisclosed-recipients:;\r\n", "without a domain"),
        (b"From: just-a-local-part\r\n", "without a domain"),
        (b"From: a@[192.0.2.1]\r\n", "without a domain"),
        (b"From: =?utf-8?q?a@example.com?=\r\n", "without a domain"),
    ],
    ids=["missing", "empty-group", "no-domain", "address-literal", "encoded-word"],
)
def test_from_field_without_one_domain_is_permerror(dns_server: Any, headers: bytes, why: str) -> None:
    auth = dmarc_of(dns_server, headers)
    assert auth.dmarc is not None
    assert auth.dmarc.result == "permerror"
    assert why in auth.dmarc.reason
    assert not auth.dmarc_rejects()
    assert "dmarc=permerror" in auth.header_value()


@pytest.mark.parametrize(
    "headers",
    [
        b"From: victim@example.com, me@example.net\r\n",  # issue 13: permerror, not refused
        b"From: me@example.net, Victim <victim@example.com>\r\n",
        b"From: me@example.net\r\nFrom: victim@example.com\r\n",
        b"From: me@example.net, victim@example.com, just-a-local-part\r\n",
        b"From: victim@example.com@example.net\r\n",
        b"From: <me@example.net> victim@example.com\r\n",
        b"From: (\") victim@example.com\r\n",
        b"From: g: me@example.net, victim@example.com;\r\n",
    ],
    ids=["two-domains", "victim-second", "two-fields", "with-a-broken-one", "two-ats", "no-comma",
         "quote-in-comment", "group"],
)  # fmt: skip
def test_every_from_domain_is_evaluated_and_a_reject_policy_anywhere_rejects(
    dns_server: Any, headers: bytes
) -> None:
    """RFC 7489 6.6.1: with several From domains each is evaluated; the strictest failure wins."""
    auth = dmarc_of(dns_server, headers)
    assert auth.dmarc is not None
    assert (auth.dmarc.result, auth.dmarc.disposition, auth.dmarc.from_domain) == (
        "fail",
        "reject",
        "example.com",
    )
    assert auth.dmarc_rejects()
    assert "dmarc=fail" in auth.header_value()


def test_several_from_domains_pass_only_when_each_passes(dns_server: Any) -> None:
    zone = {"_dmarc.example.com": [{"TXT": "v=DMARC1; p=none"}], "_dmarc.example.net": [{"TXT": REJECT}]}
    auth = dmarc_of(dns_server, b"From: a@example.com, b@example.net\r\n", zone)
    assert auth.dmarc is not None and (auth.dmarc.result, auth.dmarc.from_domain) == ("fail", "example.net")
    zone = {"_dmarc.example.com": ["SERVFAIL"]}
    auth = dmarc_of(dns_server, b"From: a@example.com, b@example.net\r\n", zone)
    assert auth.dmarc is not None and auth.dmarc.result == "temperror" and not auth.dmarc_rejects()
    auth = dmarc_of(dns_server, b"From: a@example.org, b@example.net\r\n", {})
    assert auth.dmarc is not None and auth.dmarc.result == "none"
    assert auth.from_domain == ""  # no single From domain for alignment


def test_more_from_domains_than_we_evaluate_is_a_reject_failure(dns_server: Any) -> None:
    many = b", ".join(b"a@d%d.example" % n for n in range(11))
    auth = dmarc_of(dns_server, b"From: " + many + b"\r\n", {})
    assert auth.dmarc is not None and auth.dmarc_rejects()
    assert "more than the 10" in auth.dmarc.reason
    assert len(dns_server.queries) == 0  # nothing looked up


def test_several_from_addresses_in_one_domain_are_evaluated(dns_server: Any) -> None:
    auth = dmarc_of(dns_server, b"From: a@example.com, B <b@Example.COM>\r\n")
    assert auth.dmarc is not None and (auth.dmarc.result, auth.dmarc.from_domain) == ("fail", "example.com")


def test_display_name_that_looks_like_an_address_is_not_the_domain(dns_server: Any) -> None:
    auth = dmarc_of(dns_server, b'From: "ceo@example.net" <x@example.com>\r\n')
    assert auth.dmarc is not None and auth.dmarc.from_domain == "example.com"


def test_folded_from_field_is_read(dns_server: Any) -> None:
    auth = dmarc_of(dns_server, b"From: A Long Name\r\n <a@example.com>\r\n")
    assert auth.dmarc is not None and auth.dmarc.from_domain == "example.com"


# -- the whole path: SPF and DKIM feed DMARC -----------------------------------------------------
def signed_message(from_domain: str, signing_domain: str) -> bytes:
    private, _ = rsa_key(2048)
    message = (
        f"From: Alice <alice@{from_domain}>\r\nTo: bot@example.org\r\nSubject: hi\r\n"
        f"Date: Tue, 01 Apr 2025 10:00:00 +0000\r\nMessage-ID: <2@{from_domain}>\r\n\r\nhello\r\n"
    ).encode()
    return dkim.sign(message, b"s1", signing_domain.encode(), private, include_headers=HEADERS) + message


def full_zone(policy: str = REJECT) -> dict:
    _, key = rsa_key(2048)
    return {
        "example.com": [{"TXT": "v=spf1 ip4:192.0.2.0/24 -all"}],
        "_dmarc.example.com": [{"TXT": policy}],
        "s1._domainkey.example.com": [{"TXT": key}],
        "s1._domainkey.mailer.example": [{"TXT": key}],
    }


def run(dns_server: Any, message: bytes, client_ip: str, mail_from: str) -> AuthResults:
    dns_server.serve(full_zone())
    return authenticate(
        message,
        client_ip=client_ip,
        helo="client.example",
        mail_from=mail_from,
        settings=make_check_settings(dns_server),
        authserv_id="mx.test.example",
    )


def test_aligned_dkim_passes_dmarc_even_when_spf_fails(dns_server: Any) -> None:
    auth = run(dns_server, signed_message("example.com", "example.com"), "198.51.100.7", "alice@example.com")
    assert auth.spf is not None and auth.spf.result == "fail"
    assert auth.dmarc is not None and auth.dmarc.result == "pass" and auth.dmarc.dkim_aligned
    assert not auth.dmarc_rejects()
    assert auth.aligned_pass


def test_aligned_spf_passes_dmarc_with_an_unaligned_signature(dns_server: Any) -> None:
    auth = run(dns_server, signed_message("example.com", "mailer.example"), "192.0.2.9", "bounce@example.com")
    assert [s.result for s in auth.dkim] == ["pass"]
    assert auth.dmarc is not None and auth.dmarc.result == "pass" and auth.dmarc.spf_aligned
    assert not auth.dmarc.dkim_aligned


def test_spoofed_from_fails_dmarc_and_the_reject_policy_applies(dns_server: Any) -> None:
    auth = run(
        dns_server, signed_message("example.com", "mailer.example"), "198.51.100.7", "x@mailer.example"
    )
    assert auth.dmarc is not None and auth.dmarc.result == "fail"
    assert auth.dmarc_rejects()
    assert not auth.dkim_aligned_pass()
    assert "dmarc=fail (p=reject dis=reject) header.from=example.com" in auth.header_value()
