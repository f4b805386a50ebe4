"""examples/reports.py: DMARC aggregate and TLS-RPT reports into SQLite, and their summary.

Reports come from our own generator (tests/report_samples.py: RFC 7489 appendix C XML and
RFC 8460 JSON, plain, gzip and zip) and from the samples two PyPI packages ship
(tests/data/reports/).  Decompression bombs and XML attacks run in a subprocess whose peak
RSS is measured.  The last tests mail a DKIM-signed report through the real server, with
the DKIM key served by the DNS test server."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
import zipfile
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
import report_samples as samples
from conftest import ROOT, TEST_DATA, Server, codes, dialogue
from conftest_dns import checks_against

from inbound.checks.results import AuthResults, DKIMResult
from inbound.config import Config, load
from inbound.delivery.router import load_python
from inbound.envelope import Envelope
from inbound.outcomes import Reject, TempFail

HANDLER = ROOT / "examples" / "reports.py"
DATA = TEST_DATA / "reports"
DKIM_KEY = TEST_DATA / "dkim" / "test-rsa2048.pem"
DKIM_PUBLIC = TEST_DATA / "dkim" / "test-rsa2048.pub.b64"
MiB = 1024 * 1024
END = 1725407999  # 2024-09-03T23:59:59Z: the end of the generated reports' period, unless now


@pytest.fixture(scope="module")
def reports() -> Any:
    handler = load_python("reports", str(HANDLER))
    assert not handler.error, handler.error
    return handler.module


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "reports.sqlite"


def passing(
    domain: str = "reporter.example", from_domain: str | None = None, **signature: Any
) -> AuthResults:
    """What the checks find for a report mail DKIM-signed by DOMAIN."""
    sig = DKIMResult("pass", domain=domain, selector="sel", **signature)
    return AuthResults(
        dkim=[sig], dkim_checked=True, from_domain=domain if from_domain is None else from_domain
    )


def envelope(
    raw: bytes,
    database: Path | None,
    auth: AuthResults | None,
    queue_id: str = "QUEUE1",
    server_config: Config | None = None,
) -> Envelope:
    return Envelope(
        queue_id=queue_id,
        sender="noreply-dmarc@reporter.example",
        recipients=["reports@example.org"],
        handler="reports",
        config={"database": str(database)} if database else {},
        server_config=server_config,
        raw=raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"),  # as the spool has it
        auth=auth,
    )


def rows(database: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(database)) as db:
        return db.execute(sql, args).fetchall()


def counts(database: Path) -> dict[str, int]:
    tables = ("dmarc_reports", "dmarc_records", "tlsrpt_reports", "tlsrpt_policies", "tlsrpt_failures")
    return {table: rows(database, f"SELECT COUNT(*) FROM {table}")[0][0] for table in tables}


def nothing_stored(database: Path) -> bool:
    return not database.exists() or not any(counts(database).values())


def attached(filename: str, data: bytes, content_type: str = "application/octet-stream") -> bytes:
    return samples.report_message((filename, content_type, data))


# -- DMARC aggregate reports: our own ----------------------------------------------------------


def test_generated_reports_as_xml_gzip_and_zip_are_stored_with_every_record(
    reports: Any, database: Path
) -> None:
    message = samples.report_message(
        ("reporter.example!example.org!1!2.xml", "application/xml", samples.dmarc_xml("plain", end=END)),
        (
            "reporter.example!example.org!1!2.xml.gz",
            "application/gzip",
            samples.gzipped(samples.dmarc_xml("gz", end=END)),
        ),
        (
            "reporter.example!example.org!1!2.zip",
            "application/zip",
            samples.zipped({"r.xml": samples.dmarc_xml("zip", end=END)}),
        ),
    )
    reports.handle(envelope(message, database, passing()))
    assert rows(
        database,
        "SELECT reporter, report_id, org_name, email, domain, p, sp, pct, adkim, aspf, date_begin, date_end,"
        " queue_id FROM dmarc_reports ORDER BY report_id",
    ) == [
        (
            "reporter.example",
            report_id,
            "Reporter Inc.",
            "dmarc@reporter.example",
            "example.org",
            "reject",
            "quarantine",
            100,
            "r",
            "r",
            "2024-09-02T23:59:59Z",
            "2024-09-03T23:59:59Z",
            "QUEUE1",
        )
        for report_id in ("gz", "plain", "zip")
    ]
    records = rows(
        database,
        "SELECT source_ip, count, disposition, dkim_aligned, spf_aligned, dmarc, header_from, envelope_from,"
        " reasons, dkim_results, spf_results FROM dmarc_records JOIN dmarc_reports p ON report = p.id"
        " WHERE p.report_id = 'zip' ORDER BY dmarc_records.id",
    )
    assert [r[:8] for r in records] == [
        ("192.0.2.25", 40, "none", "pass", "pass", "pass", "example.org", ""),
        ("198.51.100.7", 3, "none", "pass", "fail", "pass", "example.org", "forwarder.example"),
        ("203.0.113.66", 7, "reject", "fail", "fail", "fail", "example.org", ""),
        ("2001:db8::25", 2, "none", "pass", "pass", "pass", "news.example.org", ""),
    ]
    assert json.loads(records[1][8]) == [{"type": "forwarded", "comment": "a mailing list"}]
    assert json.loads(records[3][9]) == [
        {"domain": "example.org", "selector": "s1", "result": "pass", "human_result": ""},
        {"domain": "esp.example", "selector": "e1", "result": "pass", "human_result": ""},
    ]
    assert json.loads(records[2][10]) == [
        {"domain": "spoofer.example", "scope": "mfrom", "result": "softfail", "human_result": ""}
    ]
    assert counts(database)["dmarc_records"] == 12


@pytest.mark.parametrize("namespace", ["http://dmarc.org/dmarc-xml/0.1", "urn:ietf:params:xml:ns:dmarc-2.0"])
def test_a_report_in_a_namespace_is_read_like_one_without(
    reports: Any, database: Path, namespace: str
) -> None:
    reports.handle(envelope(attached("r.xml", samples.dmarc_xml(namespace=namespace)), database, passing()))
    assert counts(database)["dmarc_records"] == 4


def test_a_report_that_is_the_whole_message_body_is_stored(reports: Any, database: Path) -> None:
    body = samples.body_message("application/gzip", samples.gzipped(samples.dmarc_xml("in-body")))
    reports.handle(envelope(body, database, passing()))
    assert rows(database, "SELECT report_id FROM dmarc_reports") == [("in-body",)]


def test_a_report_attached_as_text_is_read_and_the_message_text_is_not(reports: Any, database: Path) -> None:
    message = samples.report_message(("report.xml", "text/xml", samples.dmarc_xml("as-text")))
    html = message.replace(
        b"This is an aggregate report.", b"<html><p>This is an aggregate report.</p></html>"
    )
    reports.handle(envelope(html.replace(b"text/xml", b"text/plain"), database, passing()))
    assert rows(database, "SELECT report_id FROM dmarc_reports") == [("as-text",)]


def test_a_gzip_file_of_several_members_with_trailing_line_ends_is_read_whole(
    reports: Any, database: Path
) -> None:
    xml = samples.dmarc_xml("members")
    data = samples.gzipped(xml[:500]) + samples.gzipped(xml[500:]) + b"\r\n\x00"
    reports.handle(envelope(attached("r.xml.gz", data), database, passing()))
    assert counts(database)["dmarc_records"] == 4


def test_a_report_with_many_records_is_stored_whole(reports: Any, database: Path) -> None:
    many = [samples.Record(f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}", n + 1) for n in range(20000)]
    xml = samples.dmarc_xml("big", rows=many)
    assert len(xml) > 4 * MiB
    reports.handle(envelope(attached("big.xml.gz", samples.gzipped(xml)), database, passing()))
    assert rows(database, "SELECT COUNT(*), SUM(count) FROM dmarc_records") == [(20000, 20000 * 20001 // 2)]


# -- DMARC aggregate reports: the samples of dmarc-report and parsedmarc -------------------------


THIRD_PARTY = [  # file, report id(s), records
    ("dmarc-report/dmarc-sample-3.xml", ["5555555555"], 2),
    ("dmarc-report/dmarc-sample-1.xml.gz", ["1234567890"], 1),
    ("dmarc-report/dmarc-sample-2.xml.zip", ["9876543210"], 1),  # with a __MACOSX/._ member
    ("dmarc-report/multiple_reports.zip", ["1234567890", "5555555555", "9876543210"], 4),
    ("dmarc-report/legacy-namespaced.xml", ["legacy/report:id"], 1),
    ("dmarc-report/rfc9990-sample.xml", ["3v98abbp8ya9n3va8yr8oa3ya"], 2),
    ("parsedmarc/fastmail.xml.gz", ["102675056"], 1),
    ("parsedmarc/infonacot.xml.zip", ["2940"], 1),
    ("parsedmarc/upper-cased-pass.xml", ["aggr_report_example.com_20191202_1638"], 1),
]


@pytest.mark.parametrize(("name", "report_ids", "records"), THIRD_PARTY, ids=[t[0] for t in THIRD_PARTY])
def test_third_party_sample_reports_are_stored(
    reports: Any, database: Path, name: str, report_ids: list[str], records: int
) -> None:
    reports.handle(envelope(attached(Path(name).name, (DATA / name).read_bytes()), database, passing()))
    assert sorted(r[0] for r in rows(database, "SELECT report_id FROM dmarc_reports")) == report_ids
    assert counts(database)["dmarc_records"] == records


def test_third_party_values_are_normalised(reports: Any, database: Path) -> None:
    for name in ("dmarc-report/rfc9990-sample.xml", "parsedmarc/upper-cased-pass.xml"):
        reports.handle(envelope(attached(Path(name).name, (DATA / name).read_bytes()), database, passing()))
    assert rows(
        database,
        "SELECT source_ip, count, disposition, dkim_aligned, spf_aligned, dmarc, header_from, dkim_results"
        " FROM dmarc_records ORDER BY id",
    ) == [
        (
            "2001:db8::1",
            123,
            "pass",
            "pass",
            "fail",
            "pass",
            "mail.example.com",
            json.dumps(
                [
                    {
                        "domain": "example.com",
                        "selector": "abc123",
                        "result": "pass",
                        "human_result": "Signature verified.",
                    },
                    {
                        "domain": "third-party.example",
                        "selector": "mail",
                        "result": "neutral",
                        "human_result": "",
                    },
                ]
            ),
        ),
        ("192.0.2.123", 1, "none", "fail", "fail", "fail", "example.com", "[]"),
        (
            "23.104.41.189",
            1,
            "none",
            "pass",
            "pass",
            "pass",
            "example.com",
            json.dumps(
                [
                    {
                        "domain": "example.com",
                        "selector": "",
                        "result": "pass",
                        "human_result": "verify result: all signatures verified",
                    }
                ]
            ),
        ),
    ]


def test_real_report_mails_are_stored_under_their_signing_domain(reports: Any, database: Path) -> None:
    """Google's zip attachment, Mimecast's gzip body with a CRLF after it: whole messages."""
    google = (DATA / "parsedmarc" / "google-zip-attachment.eml").read_bytes()
    mimecast = (DATA / "parsedmarc" / "mimecast-gzip-body.eml").read_bytes()
    reports.handle(envelope(google, database, passing("google.com")))
    reports.handle(envelope(mimecast, database, passing("au-1.mimecastreport.com"), queue_id="QUEUE2"))
    assert rows(
        database,
        "SELECT reporter, org_name, email, report_id, domain, date_begin FROM dmarc_reports ORDER BY id",
    ) == [
        (
            "google.com",
            "google.com",
            "noreply-dmarc-support@google.com",
            "949348866075514174",
            "borschow.com",
            "2019-02-12T00:00:00Z",
        ),
        (
            "mimecastreport.com",
            "Mimecast",
            "no-reply@au-1.mimecastreport.com",
            "157a5fe30ec76f4bc0d8bccfc96c118a167a1280fee7c7465af5115e73082e5e",
            "ab.id.au",
            "2023-08-30T00:00:00Z",
        ),
    ]


# -- TLS-RPT ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["application/tlsrpt+json", "application/tlsrpt+gzip"])
def test_the_rfc8460_example_report_is_stored_with_its_policy_and_failures(
    reports: Any, database: Path, form: str
) -> None:
    data = (DATA / "parsedmarc" / "rfc8460.json").read_bytes()  # RFC 8460 section 4.4, verbatim
    if form.endswith("gzip"):
        data = samples.gzipped(data)
    name = "company-x.example!company-y.example!1459468800!1459555199!001.json" + (
        ".gz" if "gzip" in form else ""
    )
    reports.handle(
        envelope(samples.report_message((name, form, data)), database, passing("company-x.example"))
    )
    assert rows(
        database,
        "SELECT reporter, report_id, org_name, contact_info, date_begin, date_end FROM tlsrpt_reports",
    ) == [
        (
            "company-x.example",
            "5065427c-23d3-47ca-b6e0-946ea0e8c4be",
            "Company-X",
            "sts-reporting@company-x.example",
            "2016-04-01T00:00:00Z",
            "2016-04-01T23:59:59Z",
        )
    ]
    [(policy_type, domain, mx_host, policy_string, successful, failed)] = rows(
        database,
        "SELECT policy_type, policy_domain, mx_host, policy_string, successful, failed FROM tlsrpt_policies",
    )
    assert (policy_type, domain, mx_host, successful, failed) == (
        "sts",
        "company-y.example",
        "*.mail.company-y.example",
        5326,
        303,
    )
    assert json.loads(policy_string) == [
        "version: STSv1",
        "mode: testing",
        "mx: *.mail.company-y.example",
        "max_age: 86400",
    ]
    assert rows(
        database,
        "SELECT result_type, sending_mta_ip, receiving_mx_hostname, receiving_ip, failed_sessions,"
        " additional_information, failure_reason_code FROM tlsrpt_failures ORDER BY id",
    ) == [
        ("certificate-expired", "2001:db8:abcd:0012::1", "mx1.mail.company-y.example", "", 100, "", ""),
        (
            "starttls-not-supported",
            "2001:db8:abcd:0013::1",
            "mx2.mail.company-y.example",
            "203.0.113.56",
            200,
            "https://reports.company-x.example/report_info?id=5065427c-23d3#StarttlsNotSupported",
            "",
        ),
        (
            "validation-failure",
            "198.51.100.62",
            "mx-backup.mail.company-y.example",
            "203.0.113.58",
            3,
            "",
            "X509_V_ERR_PROXY_PATH_LENGTH_EXCEEDED",
        ),
    ]


def test_real_tls_report_mails_are_stored(reports: Any, database: Path) -> None:
    google = (DATA / "parsedmarc" / "google-tlsrpt-gzip.eml").read_bytes()  # application/tlsrpt+gzip
    reports.handle(envelope(google, database, passing("google.com")))
    reports.handle(
        envelope(
            attached("mail.ru.json", (DATA / "parsedmarc" / "mail.ru.json").read_bytes()),
            database,
            passing("mail.ru"),
            queue_id="Q2",
        )
    )
    assert rows(
        database,
        "SELECT p.reporter, p.report_id, t.policy_type, t.policy_domain, t.successful, t.failed"
        " FROM tlsrpt_policies t JOIN tlsrpt_reports p ON t.report = p.id ORDER BY t.id",
    ) == [
        (
            "google.com",
            "2024-09-03T00:00:00Z_cardinalhealth.ca",
            "no-policy-found",
            "cardinalhealth.ca",
            48,
            0,
        ),
        ("mail.ru", "b28254de-7b2e-be36-bb5c-4c3b92da8b25@mail.ru", "sts", "example.com", 0, 1),
    ]
    assert rows(
        database, "SELECT result_type, failure_reason_code, failed_sessions FROM tlsrpt_failures"
    ) == [
        ("sts-policy-fetch-error", "bad https response code: 404", 1),
        ("sts-policy-fetch-error", "bad https response code: 500", 1),
    ]


# -- once only, all or nothing ------------------------------------------------------------------------


def both_kinds() -> bytes:
    return samples.report_message(
        ("r.xml.gz", "application/gzip", samples.gzipped(samples.dmarc_xml("once"))),
        ("t.json.gz", "application/tlsrpt+gzip", samples.gzipped(samples.tlsrpt_json("once"))),
    )


ONE_OF_EACH = {
    "dmarc_reports": 1,
    "dmarc_records": 4,
    "tlsrpt_reports": 1,
    "tlsrpt_policies": 2,
    "tlsrpt_failures": 1,
}


def test_a_retried_message_is_stored_once(reports: Any, database: Path) -> None:
    message = envelope(both_kinds(), database, passing())
    reports.handle(message)
    reports.handle(message)
    assert counts(database) == ONE_OF_EACH


def test_the_same_report_in_another_message_is_not_counted_twice(reports: Any, database: Path) -> None:
    reports.handle(envelope(both_kinds(), database, passing(), queue_id="FIRST"))
    reports.handle(envelope(both_kinds(), database, passing(), queue_id="SECOND"))  # a second MX, a resend
    assert counts(database) == ONE_OF_EACH
    assert rows(database, "SELECT queue_id FROM dmarc_reports") == [("FIRST",)]


def test_a_report_id_claimed_by_another_reporter_is_kept_apart(reports: Any, database: Path) -> None:
    """The key is the DKIM-authenticated reporter, not the org_name a report claims."""
    real = samples.dmarc_xml(
        "949348866075514174", org_name="google.com", rows=[samples.Record("192.0.2.1", 1)]
    )
    forged = samples.dmarc_xml(
        "949348866075514174", org_name="google.com", rows=[samples.Record("192.0.2.66", 99)]
    )
    reports.handle(envelope(attached("a.xml", forged), database, passing("attacker.example"), queue_id="A"))
    reports.handle(envelope(attached("g.xml", real), database, passing("google.com"), queue_id="G"))
    assert rows(
        database,
        "SELECT p.reporter, p.org_name, r.source_ip, r.count FROM dmarc_records r JOIN dmarc_reports p"
        " ON r.report = p.id ORDER BY p.reporter",
    ) == [("attacker.example", "google.com", "192.0.2.66", 99), ("google.com", "google.com", "192.0.2.1", 1)]


def test_one_malformed_report_keeps_the_whole_message_out(reports: Any, database: Path) -> None:
    broken = (DATA / "dmarc-report" / "dmarc-invalid-3.xml").read_bytes()
    message = samples.report_message(
        ("good.xml", "application/xml", samples.dmarc_xml("good")),
        ("t.json", "application/tlsrpt+json", samples.tlsrpt_json()),
        ("bad.xml", "application/xml", broken),
    )
    with pytest.raises(Reject, match=r"bad\.xml: <pct> is not a number"):
        reports.handle(envelope(message, database, passing()))
    assert nothing_stored(database)


# -- refused as malformed ---------------------------------------------------------------------------


def record_xml(row: str) -> bytes:
    return samples.dmarc_xml().replace(
        b"<row><source_ip>192.0.2.25</source_ip><count>40</count>", row.encode(), 1
    )


MALFORMED = {
    "dmarc-report/dmarc-invalid-1.xml": "mismatched tag",
    "dmarc-report/dmarc-invalid-2.xml": "has no <date_range>",
    "dmarc-report/dmarc-invalid-3.xml": "is not a number",
    "dmarc-report/dmarc-invalid-4.xml": "no DMARC aggregate or TLS-RPT report",  # text: no report at all
    "parsedmarc/invalid-utf-8.xml": "not well-formed",
}

GENERATED_MALFORMED = {
    "no report id": (samples.dmarc_xml(report_id=""), "<report_id> is empty"),
    "not an IP": (
        record_xml("<row><source_ip>mail.example</source_ip><count>40</count>"),
        "not an IP address",
    ),
    "negative count": (record_xml("<row><source_ip>192.0.2.25</source_ip><count>-4</count>"), "out of range"),
    "huge date": (samples.dmarc_xml(end=10**15), "<date_range> is out of range"),
    "html": (b"<html><body>Hello</body></html>", "root is <html>, not <feedback>"),
    "records first": (
        samples.dmarc_xml().replace(b"<version>1.0</version>", b"<record/>"),
        "must come before the records",
    ),
    "JSON policies not a list": (
        json.dumps({**json.loads(samples.tlsrpt_json()), "policies": {}}).encode(),
        '"policies" is missing or not a list',
    ),
    "JSON without dates": (b'{"report-id": "x", "policies": []}', '"date-range" is missing'),
    "JSON count text": (
        samples.tlsrpt_json().replace(
            b'"total-failure-session-count": 4', b'"total-failure-session-count": "4"'
        ),
        '"total-failure-session-count" is not a count',
    ),
    "JSON bad date": (
        samples.tlsrpt_json().replace(b'"start-datetime": "', b'"start-datetime": "yesterday'),
        "RFC 3339",
    ),
    "JSON nesting": (b'{"a":' + b"[" * 100000 + b"]" * 100000 + b"}", "RecursionError"),
    "truncated gzip": (samples.gzipped(samples.dmarc_xml())[:-200], "ends early"),
    "gzip with junk after": (samples.gzipped(samples.dmarc_xml()) + b"<garbage>", "data after the end"),
    "broken gzip": (b"\x1f\x8b\x08\x00" + bytes(100), "broken gzip data"),
    "zip without end record": (samples.zipped({"r.xml": samples.dmarc_xml()})[:-22], "no end record"),
}


@pytest.mark.parametrize(("name", "why"), MALFORMED.items(), ids=list(MALFORMED))
def test_malformed_third_party_samples_are_rejected(
    reports: Any, database: Path, name: str, why: str
) -> None:
    with pytest.raises(Reject, match=why):
        reports.handle(envelope(attached(Path(name).name, (DATA / name).read_bytes()), database, passing()))
    assert nothing_stored(database)


@pytest.mark.parametrize(("data", "why"), GENERATED_MALFORMED.values(), ids=list(GENERATED_MALFORMED))
def test_malformed_reports_are_rejected(reports: Any, database: Path, data: bytes, why: str) -> None:
    with pytest.raises(Reject, match=why):
        reports.handle(envelope(attached("report", data), database, passing()))
    assert nothing_stored(database)


def test_a_message_without_a_report_is_rejected(reports: Any, database: Path) -> None:
    plain = (
        b"From: someone@reporter.example\r\nTo: reports@example.org\r\nSubject: hi\r\n\r\nWhat is DMARC?\r\n"
    )
    with pytest.raises(Reject, match="no DMARC aggregate or TLS-RPT report in the message"):
        reports.handle(envelope(plain, database, passing()))
    assert not database.exists()


def test_a_report_inside_an_attached_message_is_not_read(reports: Any, database: Path) -> None:
    """The DKIM signature vouches for the outer message only."""
    inner = attached("r.xml", samples.dmarc_xml())
    outer = samples.report_message(("forwarded.eml", "message/rfc822", inner))
    with pytest.raises(Reject, match="no DMARC"):
        reports.handle(envelope(outer, database, passing()))


# -- whom it believes -----------------------------------------------------------------------------

UNTRUSTED = {
    "checks off": None,
    "dkim off": AuthResults(dkim_checked=False, from_domain="reporter.example"),
    "unsigned": AuthResults(dkim=[], dkim_checked=True, from_domain="reporter.example"),
    "signature fails": AuthResults(
        dkim=[DKIMResult("fail", domain="reporter.example")],
        dkim_checked=True,
        from_domain="reporter.example",
    ),
    "temperror": AuthResults(
        dkim=[DKIMResult("temperror", domain="reporter.example")],
        dkim_checked=True,
        from_domain="reporter.example",
    ),
    "signed by another domain": passing("other.example", from_domain="reporter.example"),
    "signed by the public suffix": passing("example", from_domain="reporter.example"),
    "signed with l=": passing("reporter.example", length=120),
    "no single From domain": passing("reporter.example", from_domain=""),
}


@pytest.mark.parametrize("auth", UNTRUSTED.values(), ids=list(UNTRUSTED))
def test_a_report_whose_dkim_does_not_pass_aligned_is_ignored_and_logged(
    reports: Any, database: Path, auth: AuthResults | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    logged: list[str] = []
    monkeypatch.setattr(reports.log, "warning", lambda message, *args: logged.append(message % args))
    assert reports.handle(envelope(both_kinds(), database, auth)) is None  # done: not retried, not failed/
    assert not database.exists()
    assert len(logged) == 1 and logged[0].startswith(
        "reports: ignored QUEUE1 from <noreply-dmarc@reporter.example>: "
    )


def test_a_signature_of_the_organisational_domain_aligns_with_a_subdomain_sender(
    reports: Any, database: Path
) -> None:
    reports.handle(
        envelope(both_kinds(), database, passing("reporter.example", from_domain="dmarc.mx.reporter.example"))
    )
    assert rows(
        database, "SELECT reporter FROM dmarc_reports UNION ALL SELECT reporter FROM tlsrpt_reports"
    ) == [
        ("reporter.example",),
        ("reporter.example",),
    ]


def test_one_aligned_passing_signature_among_others_is_enough(reports: Any, database: Path) -> None:
    auth = AuthResults(
        dkim=[
            DKIMResult("fail", domain="reporter.example"),
            DKIMResult("pass", domain="esp.example"),
            DKIMResult("pass", domain="reporter.example"),
        ],
        dkim_checked=True,
        from_domain="reporter.example",
    )
    reports.handle(envelope(both_kinds(), database, auth))
    assert counts(database) == ONE_OF_EACH


# -- decompression bombs and XML attacks, measured --------------------------------------------------

BOMB_SIZE = 256 * MiB  # what a naive gunzip or ZipFile.read would hold in memory
RSS_BOUND = 64 * MiB  # the growth of the peak RSS we allow while refusing one

MEASURE = """
import json, resource, sys
root, message, database = sys.argv[1:4]
sys.path[:0] = [root]
from inbound.checks.results import AuthResults, DKIMResult
from inbound.delivery.router import load_python
from inbound.envelope import Envelope
from inbound.outcomes import Reject

handler = load_python("reports", root + "/examples/reports.py").module
signature = DKIMResult("pass", domain="reporter.example")
auth = AuthResults(dkim=[signature], dkim_checked=True, from_domain="reporter.example")
envelope = Envelope(queue_id="BOMB", sender="r@reporter.example", recipients=["reports@example.org"],
                    config={"database": database}, raw=open(message, "rb").read(), auth=auth)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    handler.handle(envelope)
    outcome = "stored"
except Reject as e:
    outcome = "Reject: " + str(e)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"outcome": outcome, "growth": (after - before) * 1024}))
"""


@pytest.fixture(scope="module")
def bombs() -> dict[str, bytes]:
    return {"gzip": samples.gzip_bomb(BOMB_SIZE), "zip": samples.zip_bomb(BOMB_SIZE)}


@pytest.fixture(scope="module")
def hostile(
    bombs: dict[str, bytes], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[bytes, str]]:
    """Each hostile report as a message, and what its refusal says."""
    secret = tmp_path_factory.mktemp("secret") / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT\n")
    return {
        "gzip bomb": (attached("r.xml.gz", bombs["gzip"]), "more than 20 MiB of reports once expanded"),
        "zip bomb": (attached("r.zip", bombs["zip"]), "more than 20 MiB of reports once expanded"),
        "XXE": (attached("r.xml", samples.xxe_xml(str(secret))), "DTDForbidden"),
        "billion laughs": (attached("r.xml", samples.billion_laughs_xml()), "DTDForbidden"),
    }


def measured(script: str, *args: str) -> dict[str, Any]:
    """What SCRIPT (a subprocess with the checkout on sys.path) printed as JSON."""
    result = subprocess.run(
        [sys.executable, "-c", script, str(ROOT), *args], capture_output=True, timeout=120, check=True
    )
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("attack", ["gzip bomb", "zip bomb", "XXE", "billion laughs"])
def test_hostile_reports_are_refused_without_memory_blow_up(
    hostile: dict[str, tuple[bytes, str]], tmp_path: Path, attack: str
) -> None:
    message, why = hostile[attack]
    assert len(message) < 1 * MiB
    (tmp_path / "message.eml").write_bytes(message)
    database = tmp_path / "reports.sqlite"
    outcome = measured(MEASURE, str(tmp_path / "message.eml"), str(database))
    assert outcome["outcome"].startswith("Reject: ") and why in outcome["outcome"], outcome
    assert outcome["growth"] < RSS_BOUND, f"peak RSS grew by {outcome['growth'] / MiB:.1f} MiB"
    assert nothing_stored(database)
    if database.exists():
        assert b"TOP-SECRET" not in database.read_bytes()


NAIVE = """
import gzip, io, json, resource, sys, zipfile
kind, path = sys.argv[2:4]
data = open(path, "rb").read()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
size = len(gzip.decompress(data) if kind == "gzip" else zipfile.ZipFile(io.BytesIO(data)).read("report.xml"))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"size": size, "growth": (after - before) * 1024}))
"""


@pytest.mark.parametrize("kind", ["gzip", "zip"])
def test_the_measurement_sees_a_naive_decompression_blow_up(
    bombs: dict[str, bytes], tmp_path: Path, kind: str
) -> None:
    """The control: the bombs above are real, and the RSS measurement would catch them."""
    (tmp_path / "bomb").write_bytes(bombs[kind])
    outcome = measured(NAIVE, kind, str(tmp_path / "bomb"))
    assert outcome["size"] >= BOMB_SIZE and outcome["growth"] > 3 * RSS_BOUND


def test_an_external_dtd_is_refused_without_being_fetched(reports: Any, database: Path) -> None:
    message = attached("r.xml", samples.external_dtd_xml("http://127.0.0.1:9/dmarc.dtd"))
    with pytest.raises(Reject, match="DTDForbidden"):
        reports.handle(envelope(message, database, passing()))


def test_a_part_that_expands_more_than_the_ratio_allows_is_refused(reports: Any, database: Path) -> None:
    bomb = samples.gzip_bomb(16 * MiB)  # 16 KiB expanding 1000 times: refused after 200 times
    with pytest.raises(Reject, match="expands more than 200 times"):
        reports.handle(envelope(attached("r.xml.gz", bomb), database, passing()))


def test_the_size_bound_counts_every_report_of_the_message_together(
    reports: Any, database: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reports, "MAX_REPORT_BYTES", 1 * MiB)
    many = [samples.Record(f"192.0.2.{n % 250}", n) for n in range(2500)]
    half = samples.dmarc_xml("half", rows=many)
    assert 0.5 * MiB < len(half) < 1 * MiB
    reports.handle(envelope(attached("r.xml", half), database, passing()))  # one is fine
    two = samples.report_message(
        ("a.xml.gz", "application/gzip", samples.gzipped(half)), ("b.xml", "application/xml", half)
    )
    with pytest.raises(Reject, match="more than 1 MiB of reports"):
        reports.handle(envelope(two, database, passing(), queue_id="Q2"))


# -- zip archives ---------------------------------------------------------------------------------


def patched(data: bytes, signature: bytes, offset: int, value: bytes) -> bytes:
    """DATA with VALUE written at OFFSET into every header that starts with SIGNATURE."""
    out = bytearray(data)
    at = out.find(signature)
    while at >= 0:
        out[at + offset : at + offset + len(value)] = value
        at = out.find(signature, at + 1)
    return bytes(out)


def xml_zip(name: str = "r.xml", method: int = zipfile.ZIP_DEFLATED) -> bytes:
    return samples.zipped({name: samples.dmarc_xml()}, method)


CENTRAL, LOCAL = b"PK\x01\x02", b"PK\x03\x04"
ZIP_TRICKS = {
    "too many members": (samples.zipped({f"r{n}.xml": b"<x/>" for n in range(11)}), "11 zip members"),
    "parent folder": (xml_zip("../../etc/cron.d/r.xml"), "is a path trick"),
    "absolute path": (xml_zip("/etc/r.xml"), "is a path trick"),
    "backslash": (xml_zip("..\\r.xml"), "is a path trick"),
    "drive letter": (xml_zip("C:r.xml"), "is a path trick"),
    "bzip2": (xml_zip(method=zipfile.ZIP_BZIP2), "compression method 12"),
    "encrypted": (
        patched(patched(xml_zip(), CENTRAL, 8, b"\x01"), LOCAL, 6, b"\x01"),
        "encrypted zip member",
    ),
    "smaller than its header says": (
        patched(xml_zip(), CENTRAL, 24, (100).to_bytes(4, "little")),
        "Bad CRC-32",
    ),
}


@pytest.mark.parametrize(("data", "why"), ZIP_TRICKS.values(), ids=list(ZIP_TRICKS))
def test_zip_tricks_are_refused(reports: Any, database: Path, data: bytes, why: str) -> None:
    with pytest.raises(Reject, match=why):
        reports.handle(envelope(attached("r.zip", data), database, passing()))
    assert nothing_stored(database)


def test_a_zip_member_is_read_for_what_it_holds_not_what_its_header_claims(
    reports: Any, database: Path
) -> None:
    claims_two_gib = patched(xml_zip(), CENTRAL, 24, (2**31 - 1).to_bytes(4, "little"))
    reports.handle(envelope(attached("r.zip", claims_two_gib), database, passing()))
    assert counts(database)["dmarc_records"] == 4


def test_a_zip_of_directories_and_macos_metadata_holds_no_report(reports: Any, database: Path) -> None:
    data = samples.zipped(
        {"reports/": b"", "__MACOSX/._r.xml": b"\x00\x05\x16\x07", "reports/._r.xml": b"junk"}
    )
    with pytest.raises(Reject, match="no DMARC"):
        reports.handle(envelope(attached("r.zip", data), database, passing()))


# -- the database ------------------------------------------------------------------------------------


@pytest.fixture
def config(server: Server) -> Config:
    return load(str(server.config))


def test_the_database_defaults_to_the_spool(reports: Any, config: Config) -> None:
    reports.handle(envelope(both_kinds(), None, passing(), server_config=config))
    assert counts(Path(config.server.spool) / "reports.sqlite") == ONE_OF_EACH


def test_a_relative_database_is_relative_to_the_config_file(
    reports: Any, server: Server, config: Config
) -> None:
    reports.handle(envelope(both_kinds(), Path("data/reports.sqlite"), passing(), server_config=config))
    assert counts(server.root / "data" / "reports.sqlite") == ONE_OF_EACH


def test_a_locked_database_is_a_temporary_failure(reports: Any, database: Path) -> None:
    reports.connect(str(database)).close()
    with closing(sqlite3.connect(database)) as holder:
        holder.execute("BEGIN EXCLUSIVE")
        message = envelope(both_kinds(), database, passing())
        message.config["timeout"] = "0.2"
        with pytest.raises(TempFail, match="locked"):
            reports.handle(message)
        holder.rollback()
    reports.handle(message)  # the retry stores it
    assert counts(database) == ONE_OF_EACH


def test_an_unwritable_database_is_a_temporary_failure(reports: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(TempFail, match="reports.sqlite"):
        reports.handle(envelope(both_kinds(), blocker / "reports.sqlite", passing()))


def test_the_schema_is_the_documented_one(reports: Any, database: Path) -> None:
    reports.connect(str(database)).close()
    tables = [
        r[0] for r in rows(database, "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
    ]
    assert tables == [
        "dmarc_records",
        "dmarc_reports",
        "tlsrpt_failures",
        "tlsrpt_policies",
        "tlsrpt_reports",
    ]
    for table in tables:
        assert f"CREATE TABLE {table} (" in reports.__doc__, table
        for column in [r[1] for r in rows(database, f"PRAGMA table_info({table})")]:
            assert f"\n        {column} " in reports.__doc__, (table, column)


def test_loading_the_handler_imports_nothing_heavy() -> None:
    """Every connection loads the handlers: the parsers come in only when a report does."""
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from inbound.delivery.router import load_python
        assert not load_python("reports", {str(HANDLER)!r}).error
        heavy = ("sqlite3", "defusedxml", "zipfile", "gzip", "zlib", "json", "xml", "ipaddress", "argparse")
        print(" ".join(m for m in heavy if m in sys.modules))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


# -- the summary ---------------------------------------------------------------------------------------


def summary_database(reports: Any, database: Path) -> None:
    """Two reporters on example.org today, and one month-old report."""
    now = int(time.time())
    reports.handle(envelope(both_kinds(), database, passing(), queue_id="Q1"))
    other = samples.dmarc_xml(
        "other-1",
        rows=[
            samples.Record("203.0.113.66", 5, dkim="fail", spf="fail", disposition="reject"),
            samples.Record("192.0.2.25", 10, spf="fail"),
        ],
        end=now - 3600,
    )
    reports.handle(envelope(attached("o.xml", other), database, passing("other.example"), queue_id="Q2"))
    old = samples.dmarc_xml(
        "old-1", rows=[samples.Record("198.51.100.99", 1000, dkim="fail", spf="fail")], end=now - 30 * 86400
    )
    reports.handle(envelope(attached("old.xml", old), database, passing("other.example"), queue_id="Q3"))
    reports.handle(
        envelope(
            attached("t.json", samples.tlsrpt_json("tls-old", end=now - 30 * 86400, failures=50)),
            database,
            passing(),
            queue_id="Q4",
        )
    )


EXPECTED_SUMMARY = """\
DMARC: 3 reports from 2 reporters in all (aligned SPF, aligned DKIM, DMARC; messages)
source IP      domain            messages  SPF pass/fail  DKIM pass/fail  DMARC pass/fail
198.51.100.99  example.org           1000  0/1000         0/1000          0/1000
203.0.113.66   example.org             12  0/12           0/12            0/12
192.0.2.25     example.org             50  40/10          50/0            50/0
198.51.100.7   example.org              3  0/3            3/0             3/0
2001:db8::25   news.example.org         2  2/0            2/0             2/0

TLS-RPT: 2 reports from 1 reporter in all (sessions)
policy domain  type  successful  failed  failures (sessions)
example.org    sts          200      54  certificate-expired 54
example.net    tlsa          24       0
"""

EXPECTED_LAST_WEEK = """\
DMARC: 2 reports from 2 reporters in the last 7 days (aligned SPF, aligned DKIM, DMARC; messages)
source IP     domain            messages  SPF pass/fail  DKIM pass/fail  DMARC pass/fail
203.0.113.66  example.org             12  0/12           0/12            0/12
192.0.2.25    example.org             50  40/10          50/0            50/0
198.51.100.7  example.org              3  0/3            3/0             3/0
2001:db8::25  news.example.org         2  2/0            2/0             2/0

TLS-RPT: 1 report from 1 reporter in the last 7 days (sessions)
policy domain  type  successful  failed  failures (sessions)
example.org    sts          100       4  certificate-expired 4
example.net    tlsa          12       0
"""


def run_summary(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HANDLER), "summary", *args], capture_output=True, text=True, timeout=60, cwd="/"
    )


def test_the_summary_counts_pass_and_fail_per_source_ip_and_domain(reports: Any, database: Path) -> None:
    summary_database(reports, database)
    assert reports.summary(str(database)) == EXPECTED_SUMMARY


def test_the_summary_runs_as_a_script(reports: Any, database: Path) -> None:
    summary_database(reports, database)
    result = run_summary("--database", str(database))
    assert (result.returncode, result.stderr, result.stdout) == (0, "", EXPECTED_SUMMARY)
    result = run_summary("--database", str(database), "--days", "7")
    assert (result.returncode, result.stderr, result.stdout) == (0, "", EXPECTED_LAST_WEEK)


def test_the_readme_shows_what_the_summary_prints() -> None:
    assert EXPECTED_LAST_WEEK in (ROOT / "README.md").read_text()


def test_the_summary_of_an_empty_database_says_so(reports: Any, database: Path) -> None:
    reports.connect(str(database)).close()
    assert reports.summary(str(database), 7) == (
        "DMARC: 0 reports from 0 reporters in the last 7 days\n\n"
        "TLS-RPT: 0 reports from 0 reporters in the last 7 days\n"
    )


def test_the_summary_of_a_missing_database_is_an_error(tmp_path: Path) -> None:
    result = run_summary("--database", str(tmp_path / "nothing.sqlite"))
    assert result.returncode == 66 and "no such database" in result.stderr
    assert not (tmp_path / "nothing.sqlite").exists()


# -- through the real server ------------------------------------------------------------------------


def reports_server(server: Server, dns_server: Any) -> Path:  # type: ignore[no-untyped-def]
    """The reports handler in SERVER's handlers folder, DKIM checked against DNS_SERVER."""
    dns_server.serve(
        {"sel._domainkey.reporter.example": [{"TXT": f"v=DKIM1; k=rsa; p={DKIM_PUBLIC.read_text().strip()}"}]}
    )
    server.write_config(
        checks=checks_against(dns_server, arc="no"),
        handler__reports={"database": "reports.sqlite"},
    )
    shutil.copy(HANDLER, server.handlers / "reports.py")
    return server.root / "reports.sqlite"


def mail(server: Server, message: bytes) -> bytes:
    return server.smtp(dialogue("reports@example.org", sender="noreply-dmarc@reporter.example", body=message))


def test_a_dkim_signed_report_mailed_over_smtp_is_stored(server: Server, dns_server: Any) -> None:
    database = reports_server(server, dns_server)
    signed = samples.dkim_signed(both_kinds(), "reporter.example", "sel", DKIM_KEY.read_bytes())
    assert codes(mail(server, signed))[-2] == 250
    assert counts(database) == ONE_OF_EACH
    assert rows(database, "SELECT reporter, report_id FROM dmarc_reports") == [("reporter.example", "once")]
    assert "reports: stored DMARC report 'once' of reporter.example on example.org: 4 records" in server.log()
    assert server.ids("failed") == [] and server.ids("queue") == []


def test_a_forged_report_mailed_over_smtp_is_not_stored(server: Server, dns_server: Any) -> None:
    database = reports_server(server, dns_server)
    signed = samples.dkim_signed(both_kinds(), "reporter.example", "sel", DKIM_KEY.read_bytes())
    forged = signed.replace(b"This is an aggregate report.", b"This is an aggregate rep0rt.")
    assert codes(mail(server, forged))[-2] == 250
    assert not database.exists()
    assert "reports: ignored" in server.log() and "reporter.example=fail" in server.log()
    assert server.ids("failed") == [] and server.ids("queue") == []


def test_a_malformed_signed_report_over_smtp_goes_to_failed(server: Server, dns_server: Any) -> None:
    database = reports_server(server, dns_server)
    broken = attached("r.xml", (DATA / "dmarc-report" / "dmarc-invalid-2.xml").read_bytes())
    assert (
        codes(mail(server, samples.dkim_signed(broken, "reporter.example", "sel", DKIM_KEY.read_bytes())))[-2]
        == 250
    )
    assert len(server.ids("failed")) == 1
    assert nothing_stored(database)
    assert os.path.exists(server.spool / "failed" / server.ids("failed")[0])
