"""The ValiMail ARC validation suite (10 scenarios, 171 tests) through our ARC check, with
each scenario's `txt-records` (the DKIM keys) served by the real DNS server.

Data: tests/data/arc/arc-draft-validation-tests.yml (licence beside it).  The suite's
`cv` is Pass, Fail or None; an empty `cv` means Fail.  dkimpy alone raises on a few of
these (empty or invalid d=/s=); through our wrapper every one is a result.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from conftest import TEST_DATA
from conftest_dns import make_check_settings

from inbound.checks import authenticate

SUITE = TEST_DATA / "arc" / "arc-draft-validation-tests.yml"


def load_suite() -> list[Any]:
    cases = []
    with open(SUITE, encoding="utf-8") as f:
        for number, scenario in enumerate(yaml.safe_load_all(f), 1):
            zone = {name: [{"TXT": value}] for name, value in (scenario.get("txt-records") or {}).items()}
            for name, test in scenario["tests"].items():
                expected = (test.get("cv") or "Fail").strip().lower()
                cases.append(pytest.param(zone, test["message"], expected, id=f"{number:02d}-{name}"))
    return cases


CASES = load_suite()


def test_suite_has_all_171_tests() -> None:
    assert len(CASES) == 171


@pytest.mark.parametrize(("zone", "message", "expected"), CASES)
def test_arc_suite_case_gives_the_expected_chain_validation(
    dns_server: Any, zone: dict, message: str, expected: str
) -> None:
    dns_server.serve(zone)
    settings = make_check_settings(dns_server, spf=False, dkim=False, dmarc=False)
    results = authenticate(
        message.encode("utf-8"),
        client_ip="192.0.2.1",
        helo="client.example",
        mail_from="a@example.org",
        settings=settings,
        authserv_id="mx.test.example",
    )
    assert results.arc is not None
    assert results.arc.result == expected, results.arc.reason
    assert results.environment()["ARC_RESULT"] == expected
