"""Our own DMARC aggregate and TLS-RPT reports for the tests of examples/reports.py, built by
code: the XML of RFC 7489 appendix C, the JSON of RFC 8460 section 4.3, their gzip and zip
forms, the report mail around them (DKIM-signed when asked), and hostile ones (decompression
bombs, XXE, billion laughs, zip path tricks).  The third-party samples are in
tests/data/reports/ (see tests/data/README.md)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import time
import zipfile
import zlib
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP
from xml.etree import ElementTree

DAY = 86400


@dataclass
class Record:
    """One <record>: messages from SOURCE_IP with these results (RFC 7489 appendix C)."""

    source_ip: str
    count: int
    dkim: str = "pass"  # policy_evaluated: aligned DKIM
    spf: str = "pass"  # policy_evaluated: aligned SPF
    disposition: str = "none"
    header_from: str = "example.org"
    envelope_from: str = ""
    dkim_results: list[tuple[str, str, str]] = field(default_factory=list)  # (domain, selector, result)
    spf_results: list[tuple[str, str, str]] = field(default_factory=list)  # (domain, scope, result)
    reasons: list[tuple[str, str]] = field(default_factory=list)  # (type, comment)


def records() -> list[Record]:
    """Four records of a typical day: our own servers, a forwarder, a spoofer, an IPv6 host."""
    return [
        Record(
            "192.0.2.25",
            40,
            dkim_results=[("example.org", "s1", "pass")],
            spf_results=[("example.org", "mfrom", "pass")],
        ),
        Record(
            "198.51.100.7",
            3,
            dkim="pass",
            spf="fail",
            envelope_from="forwarder.example",
            dkim_results=[("example.org", "s1", "pass")],
            spf_results=[("forwarder.example", "mfrom", "pass")],
            reasons=[("forwarded", "a mailing list")],
        ),
        Record(
            "203.0.113.66",
            7,
            dkim="fail",
            spf="fail",
            disposition="reject",
            spf_results=[("spoofer.example", "mfrom", "softfail")],
        ),
        Record(
            "2001:0db8:0000:0000:0000:0000:0000:0025",
            2,
            header_from="news.example.org",
            dkim_results=[("example.org", "s1", "pass"), ("esp.example", "e1", "pass")],
            spf_results=[("news.example.org", "mfrom", "pass")],
        ),
    ]


def dmarc_xml(
    report_id: str = "r-1",
    org_name: str = "Reporter Inc.",
    email: str = "dmarc@reporter.example",
    domain: str = "example.org",
    rows: list[Record] | None = None,
    end: int | None = None,
    namespace: str = "",
) -> bytes:
    """An aggregate report per RFC 7489 appendix C; its period is the day before END (default now)."""
    end = int(time.time()) if end is None else end
    ns = f"{{{namespace}}}" if namespace else ""

    def sub(parent: ElementTree.Element, tag: str, text: str | None = None) -> ElementTree.Element:
        element = ElementTree.SubElement(parent, ns + tag)
        if text is not None:
            element.text = text
        return element

    feedback = ElementTree.Element(ns + "feedback")
    sub(feedback, "version", "1.0")
    metadata = sub(feedback, "report_metadata")
    sub(metadata, "org_name", org_name)
    sub(metadata, "email", email)
    sub(metadata, "report_id", report_id)
    dates = sub(metadata, "date_range")
    sub(dates, "begin", str(end - DAY))
    sub(dates, "end", str(end))
    policy = sub(feedback, "policy_published")
    for tag, value in (
        ("domain", domain),
        ("adkim", "r"),
        ("aspf", "r"),
        ("p", "reject"),
        ("sp", "quarantine"),
        ("pct", "100"),
    ):
        sub(policy, tag, value)
    for record in records() if rows is None else rows:
        add_record(feedback, record, sub)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(feedback)


def add_record(feedback, record: Record, sub) -> None:  # type: ignore[no-untyped-def]
    element = sub(feedback, "record")
    row = sub(element, "row")
    sub(row, "source_ip", record.source_ip)
    sub(row, "count", str(record.count))
    evaluated = sub(row, "policy_evaluated")
    sub(evaluated, "disposition", record.disposition)
    sub(evaluated, "dkim", record.dkim)
    sub(evaluated, "spf", record.spf)
    for kind, comment in record.reasons:
        reason = sub(evaluated, "reason")
        sub(reason, "type", kind)
        sub(reason, "comment", comment)
    identifiers = sub(element, "identifiers")
    sub(identifiers, "header_from", record.header_from)
    if record.envelope_from:
        sub(identifiers, "envelope_from", record.envelope_from)
    auth = sub(element, "auth_results")
    for domain, selector, result in record.dkim_results:
        dkim = sub(auth, "dkim")
        sub(dkim, "domain", domain)
        sub(dkim, "selector", selector)
        sub(dkim, "result", result)
    for domain, scope, result in record.spf_results:
        spf = sub(auth, "spf")
        sub(spf, "domain", domain)
        sub(spf, "scope", scope)
        sub(spf, "result", result)


def tlsrpt_json(report_id: str = "tls-1", end: int | None = None, failures: int = 4) -> bytes:
    """A TLS-RPT report per RFC 8460 section 4.3: one STS policy with failures, one TLSA policy."""
    end = int(time.time()) if end is None else end
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end))
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(end - DAY))
    report = {
        "organization-name": "Sender Co.",
        "date-range": {"start-datetime": start, "end-datetime": stamp},
        "contact-info": "tls-reports@sender.example",
        "report-id": report_id,
        "policies": [
            {
                "policy": {
                    "policy-type": "sts",
                    "policy-string": [
                        "version: STSv1",
                        "mode: enforce",
                        "mx: mx.example.org",
                        "max_age: 86400",
                    ],
                    "policy-domain": "example.org",
                    "mx-host": ["mx.example.org"],
                },
                "summary": {"total-successful-session-count": 100, "total-failure-session-count": failures},
                "failure-details": [
                    {
                        "result-type": "certificate-expired",
                        "sending-mta-ip": "198.51.100.1",
                        "receiving-mx-hostname": "mx.example.org",
                        "receiving-ip": "192.0.2.25",
                        "failed-session-count": failures,
                    }
                ],
            },
            {
                "policy": {"policy-type": "tlsa", "policy-domain": "example.net", "policy-string": []},
                "summary": {"total-successful-session-count": 12, "total-failure-session-count": 0},
            },
        ],
    }
    return json.dumps(report, indent=1).encode()


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def zipped(members: dict[str, bytes], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", method) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def report_message(
    *parts: tuple[str, str, bytes],
    sender: str = "noreply-dmarc@reporter.example",
    subject: str = "Report Domain: example.org Submitter: reporter.example Report-ID: r-1",
) -> bytes:
    """A report mail (CRLF) with each (filename, content type, data) of PARTS attached."""
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = "reports@example.org"
    message["Subject"] = subject
    message["Date"] = "Tue, 03 Sep 2024 06:00:00 +0000"
    message["Message-ID"] = f"<{hashlib.sha256(repr(parts).encode()).hexdigest()[:16]}@reporter.example>"
    message.set_content("This is an aggregate report.\n")
    for filename, content_type, data in parts:
        maintype, _, subtype = content_type.partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
    return message.as_bytes()


def body_message(content_type: str, data: bytes, sender: str = "noreply-dmarc@reporter.example") -> bytes:
    """A report mail whose whole body is the report (no multipart), base64."""
    message = EmailMessage(policy=SMTP)
    message["From"] = sender
    message["To"] = "reports@example.org"
    message["Subject"] = "Report Domain: example.org Submitter: reporter.example"
    maintype, _, subtype = content_type.partition("/")
    message.set_content(data, maintype=maintype, subtype=subtype, filename="report.xml.gz")
    return message.as_bytes()


def dkim_signed(message: bytes, domain: str, selector: str, key: bytes) -> bytes:
    import dkim

    headers = [b"from", b"to", b"subject", b"date", b"message-id", b"mime-version", b"content-type"]
    return dkim.sign(message, selector.encode(), domain.encode(), key, include_headers=headers) + message


# -- hostile reports -------------------------------------------------------------------------------


def zeros_deflated(size: int, wbits: int) -> bytes:
    """SIZE zero octets deflated at level 9, made in 1 MiB steps (never SIZE in memory)."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    block = bytes(1 << 20)
    return b"".join(compressor.compress(block) for _ in range(size >> 20)) + compressor.flush()


def gzip_bomb(size: int) -> bytes:
    """A .xml.gz that starts like a report and expands to SIZE octets."""
    head = gzipped(b"<?xml version='1.0'?><feedback><report_metadata><org_name>")
    return head + zeros_deflated(size, 16 + zlib.MAX_WBITS)  # two gzip members, both valid


def zip_bomb(size: int) -> bytes:
    """A zip whose one member, report.xml, is SIZE zero octets, written in 1 MiB steps."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        with archive.open("report.xml", "w") as member:
            block = bytes(1 << 20)
            for _ in range(size >> 20):
                member.write(block)
    return out.getvalue()


def xxe_xml(path: str) -> bytes:
    """A report whose org_name is an external entity: the content of the file at PATH."""
    report = dmarc_xml().decode()
    return (
        '<?xml version="1.0"?>\n'
        f'<!DOCTYPE feedback [<!ENTITY xxe SYSTEM "file://{path}">]>\n'
        + report.split("\n", 1)[1].replace("<org_name>Reporter Inc.</org_name>", "<org_name>&xxe;</org_name>")
    ).encode()


def billion_laughs_xml(levels: int = 9) -> bytes:
    """The classic: ten lol entities, each ten of the one before (10**LEVELS expansions)."""
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{n} "{"".join(f"&lol{n - 1};" for _ in range(10))}">' for n in range(1, levels + 1)
    ]
    report = dmarc_xml().decode().split("\n", 1)[1]
    body = report.replace("<org_name>Reporter Inc.</org_name>", f"<org_name>&lol{levels};</org_name>")
    return ('<?xml version="1.0"?>\n<!DOCTYPE feedback [' + "".join(entities) + "]>\n" + body).encode()


def external_dtd_xml(url: str) -> bytes:
    report = dmarc_xml().decode().split("\n", 1)[1]
    return f'<?xml version="1.0"?>\n<!DOCTYPE feedback SYSTEM "{url}">\n{report}'.encode()
