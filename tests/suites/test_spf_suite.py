"""The OpenSPF RFC 7208 test suite (16 scenarios, 203 tests), run through our SPF check and
resolver against the real DNS server on 127.0.0.1, each scenario's zonedata served as is.

Data: tests/data/spf/rfc7208-tests.yml (licence beside it).  A test passes when our result
is among the suite's allowed results and, where the suite gives a non-default explanation,
the explanation matches it too.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from conftest import TEST_DATA
from conftest_dns import make_check_settings

from inbound.checks import authenticate

SUITE = TEST_DATA / "spf" / "rfc7208-tests.yml"
MESSAGE = b"From: someone@example.net\r\nSubject: spf suite\r\n\r\nbody\r\n"


def load_suite() -> list[Any]:
    cases = []
    with open(SUITE, encoding="utf-8") as f:
        for number, scenario in enumerate(yaml.safe_load_all(f), 1):
            for name, test in scenario["tests"].items():
                cases.append(pytest.param(scenario["zonedata"], test, id=f"{number:02d}-{name}"))
    return cases


CASES = load_suite()


def test_suite_has_all_203_tests() -> None:
    assert len(CASES) == 203


@pytest.mark.parametrize(("zonedata", "case"), CASES)
def test_rfc7208_suite_case_gives_an_allowed_result(dns_server: Any, zonedata: dict, case: dict) -> None:
    dns_server.serve(zonedata)
    settings = make_check_settings(dns_server, dkim=False, dmarc=False, arc=False)
    results = authenticate(
        MESSAGE,
        client_ip=case["host"],
        helo=case["helo"],
        mail_from=case["mailfrom"],
        settings=settings,
        authserv_id="mx.test.example",
    )
    allowed = case["result"] if isinstance(case["result"], list) else [case["result"]]
    assert results.spf is not None
    assert results.spf.result in allowed, results.spf.reason
    explanation = case.get("explanation")
    if explanation and explanation != "DEFAULT":
        assert results.spf.reason == explanation
