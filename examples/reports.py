"""reports: keep DMARC aggregate and SMTP TLS (TLS-RPT) reports in SQLite, and summarise them.

Point the `rua=` of your DMARC record (`_dmarc.example.org TXT "v=DMARC1; p=...;
rua=mailto:reports@example.org"`) and of your TLS-RPT record (`_smtp._tls.example.org TXT
"v=TLSRPTv1; rua=mailto:reports@example.org"`) at this handler: copy this file into
handlers/ (mail to reports@ reaches it; add a `[routes]` line for other addresses).

[handler.reports] settings:

    database = /var/lib/mailserver/reports.sqlite   ; default <spool>/reports.sqlite; relative
                                                    ; paths are relative to the config file
    timeout  = 30                                   ; seconds to wait while the database is busy

What it reads.  Every MIME part of the message (an attachment or the body itself) but the
message's own text (text/plain or text/html without a file name) and what is inside an
attached message (the signature does not vouch for that).  A part is a report by its content, not
its name: after at most one layer of gzip (`.xml.gz`, `application/tlsrpt+gzip`, also several
gzip members or trailing line ends) or zip (`.zip`, its members), XML whose root is
`<feedback>` is a DMARC aggregate report (RFC 7489 appendix C, with or without a namespace,
also RFC 9990's), a JSON object is a TLS-RPT report (RFC 8460 section 4.3).  One message may
carry several reports (a zip with several members, several attachments).

Whom it believes.  Only a report whose message has a passing DKIM signature aligned with its
From domain (relaxed: the same organisational domain, as DMARC aligns) and without `l=` is
stored.  RFC 8460 section 5.3 says so for TLS reports (a signature by the reporting domain,
no `l=`; reports without one MUST be ignored); RFC 7489 section 7.2.1.1 wants DMARC report
mail to pass DMARC, and a DKIM signature is the part of that which survives forwarding.
The reporter recorded is that From domain's organisational domain (`reporter`): it is the
name the signature vouches for.  `org_name` and `email` are what the report says about itself,
stored as claimed: they are free text anyone can write (`Google, Inc.`).  A report without
such a signature (or with the DKIM check off: `[checks] dkim = no`) is ignored: a log line
says why, nothing is stored and the message counts as handled.  Known gap: the checks
verify every signature as email, so a TLS report signed with a key whose DNS record says
`s=tlsrpt` (RFC 8460 recommends it) fails DKIM and is ignored; keys without `s=`
pass.

Once only.  A report is stored once per (reporter, report id): a message delivered twice, or
retried after a failure, adds nothing the second time.  The reports of one message are
stored in one transaction: all of them or none.

Safe against hostile input:
* XML is parsed with defusedxml and no DTD is allowed at all, so external entities (XXE),
  entity expansion (billion laughs) and external DTDs are refused before anything expands;
  records are parsed one at a time (iterparse) and dropped once stored.
* Decompression reads the gzip or zip stream in 64 KiB steps and stops as soon as the
  output passes MAX_REPORT_BYTES (20 MiB for the whole message) or MAX_RATIO (200) times
  the compressed size (outputs below RATIO_FLOOR, 2 MiB, are never refused for their
  ratio).  A TLS-RPT report may be at most MAX_JSON_BYTES (5 MiB) of JSON.
* Zip: the end record is read first, and an archive with more than MAX_ZIP_MEMBERS (10)
  entries, a central directory over 16 KiB, zip64, encryption, a method other than stored
  or deflated, or a member name with a path trick (absolute, `..`, backslash, drive
  letter) is refused.  Sizes are counted from the decompressed stream, never taken from
  the headers: a member is read for what it holds whatever size its header claims, and
  one holding more than its header says is cut there and fails its CRC check (refused).
  Directories, `__MACOSX/` and `._*` members are skipped.

Outcomes:
* stored, already stored, or ignored (no aligned DKIM pass): done (a log line each);
* malformed or unsafe (not XML/JSON, a required field missing or out of range, a bomb,
  a DTD), or no report at all in the message: Reject, so the message goes to failed/ to be
  looked at (`mailserver.py queue --list --failed`), and nothing of it is stored;
* the database is locked past `timeout`, cannot be created or written: TempFail, the queue
  tries again later.

Schema (created on first use; WAL journal, so the summary never blocks the server; dates
are UTC, ISO 8601, `2024-09-03T00:00:00Z`):

    CREATE TABLE dmarc_reports (
        id           INTEGER PRIMARY KEY,
        reporter     TEXT NOT NULL,   -- organisational domain of the DKIM-authenticated From
        report_id    TEXT NOT NULL,   -- the reporter's id; UNIQUE (reporter, report_id)
        org_name     TEXT NOT NULL,   -- as the report claims
        email        TEXT NOT NULL,   -- as the report claims
        domain       TEXT NOT NULL,   -- policy_published: the domain reported on
        p            TEXT NOT NULL,   -- its policy as published: p, sp, pct, adkim, aspf
        sp           TEXT NOT NULL,
        pct          INTEGER,
        adkim        TEXT NOT NULL,
        aspf         TEXT NOT NULL,
        date_begin   TEXT NOT NULL,   -- the period reported on
        date_end     TEXT NOT NULL,
        errors       TEXT NOT NULL,   -- JSON list of the report's <error> texts
        queue_id     TEXT NOT NULL,   -- the message that brought it
        stored_at    TEXT NOT NULL
    );
    CREATE TABLE dmarc_records (
        id            INTEGER PRIMARY KEY,
        report        INTEGER NOT NULL REFERENCES dmarc_reports(id) ON DELETE CASCADE,
        source_ip     TEXT NOT NULL,   -- normalised (2001:db8::1)
        count         INTEGER NOT NULL,   -- messages from source_ip with these results
        disposition   TEXT NOT NULL,   -- what the receiver applied: none, quarantine, reject
        dkim_aligned  TEXT NOT NULL,   -- policy_evaluated: pass = DKIM passed aligned with header_from
        spf_aligned   TEXT NOT NULL,   -- policy_evaluated: pass = SPF passed aligned with header_from
        dmarc         TEXT NOT NULL,   -- pass when dkim_aligned or spf_aligned is pass, else fail
        reasons       TEXT NOT NULL,   -- JSON [{"type": ..., "comment": ...}]: policy overrides
        header_from   TEXT NOT NULL,
        envelope_from TEXT NOT NULL,
        envelope_to   TEXT NOT NULL,
        dkim_results  TEXT NOT NULL,   -- JSON [{"domain", "selector", "result", "human_result"}]
        spf_results   TEXT NOT NULL    -- JSON [{"domain", "scope", "result", "human_result"}]
    );
    CREATE TABLE tlsrpt_reports (
        id           INTEGER PRIMARY KEY,
        reporter     TEXT NOT NULL,   -- as for DMARC; UNIQUE (reporter, report_id)
        report_id    TEXT NOT NULL,
        org_name     TEXT NOT NULL,   -- organization-name, as claimed
        contact_info TEXT NOT NULL,
        date_begin   TEXT NOT NULL,
        date_end     TEXT NOT NULL,
        queue_id     TEXT NOT NULL,
        stored_at    TEXT NOT NULL
    );
    CREATE TABLE tlsrpt_policies (
        id            INTEGER PRIMARY KEY,
        report        INTEGER NOT NULL REFERENCES tlsrpt_reports(id) ON DELETE CASCADE,
        policy_type   TEXT NOT NULL,   -- sts, tlsa or no-policy-found
        policy_domain TEXT NOT NULL,
        mx_host       TEXT NOT NULL,   -- comma separated when the report gives a list
        policy_string TEXT NOT NULL,   -- JSON list of strings
        successful    INTEGER NOT NULL,   -- total-successful-session-count
        failed        INTEGER NOT NULL    -- total-failure-session-count
    );
    CREATE TABLE tlsrpt_failures (
        id                     INTEGER PRIMARY KEY,
        policy                 INTEGER NOT NULL REFERENCES tlsrpt_policies(id) ON DELETE CASCADE,
        result_type            TEXT NOT NULL,   -- certificate-expired, starttls-not-supported...
        sending_mta_ip         TEXT NOT NULL,
        receiving_mx_hostname  TEXT NOT NULL,
        receiving_mx_helo      TEXT NOT NULL,
        receiving_ip           TEXT NOT NULL,
        failed_sessions        INTEGER NOT NULL,   -- failed-session-count
        additional_information TEXT NOT NULL,
        failure_reason_code    TEXT NOT NULL
    );

The summary, from the command line (the venv's python, or any python3 of the same version):

    python3 examples/reports.py summary --database FILE [--days N]

prints, for the reports whose period ended within the last N days (default: all), one line
per source IP and header From domain with the messages reported and the pass/fail counts of
aligned SPF, aligned DKIM and DMARC, worst first; then one line per TLS policy (domain and
type) with its successful and failed sessions and the failures by result type.  Anyone who
can DKIM-sign mail can send a report, so a line is what reporters claim: the `reporter`
column says who.
"""

import os
import sys

if __name__ == "__main__":  # run as a script (the summary): mailserver.py is in the folder above
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mailserver import Reject, TempFail, log  # noqa: E402

# Everything else is imported where it is used: every connection loads the handlers.
MiB = 1024 * 1024
MAX_REPORT_BYTES = 20 * MiB  # decompressed, all reports of one message together
MAX_JSON_BYTES = 5 * MiB  # one TLS-RPT report (parsed whole; real ones are a few KiB)
MAX_RATIO = 200  # decompressed / compressed size; real reports compress 10 to 100 times
RATIO_FLOOR = 2 * MiB  # outputs this small are never refused for their ratio
MAX_ZIP_MEMBERS = 10
MAX_CENTRAL_DIRECTORY = 16 * 1024
CHUNK = 64 * 1024
GZIP_MAGIC = b"\x1f\x8b"
ZIP_MAGIC = b"PK\x03\x04"
TEXT_TYPES = ("text/plain", "text/html")  # the message's own text, unless attached as a file

SCHEMA = """
CREATE TABLE IF NOT EXISTS dmarc_reports (
    id           INTEGER PRIMARY KEY,
    reporter     TEXT NOT NULL,
    report_id    TEXT NOT NULL,
    org_name     TEXT NOT NULL,
    email        TEXT NOT NULL,
    domain       TEXT NOT NULL,
    p            TEXT NOT NULL,
    sp           TEXT NOT NULL,
    pct          INTEGER,
    adkim        TEXT NOT NULL,
    aspf         TEXT NOT NULL,
    date_begin   TEXT NOT NULL,
    date_end     TEXT NOT NULL,
    errors       TEXT NOT NULL,
    queue_id     TEXT NOT NULL,
    stored_at    TEXT NOT NULL,
    UNIQUE (reporter, report_id)
);
CREATE TABLE IF NOT EXISTS dmarc_records (
    id            INTEGER PRIMARY KEY,
    report        INTEGER NOT NULL REFERENCES dmarc_reports(id) ON DELETE CASCADE,
    source_ip     TEXT NOT NULL,
    count         INTEGER NOT NULL,
    disposition   TEXT NOT NULL,
    dkim_aligned  TEXT NOT NULL,
    spf_aligned   TEXT NOT NULL,
    dmarc         TEXT NOT NULL,
    reasons       TEXT NOT NULL,
    header_from   TEXT NOT NULL,
    envelope_from TEXT NOT NULL,
    envelope_to   TEXT NOT NULL,
    dkim_results  TEXT NOT NULL,
    spf_results   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS dmarc_records_report ON dmarc_records(report);
CREATE INDEX IF NOT EXISTS dmarc_reports_date_end ON dmarc_reports(date_end);
CREATE TABLE IF NOT EXISTS tlsrpt_reports (
    id           INTEGER PRIMARY KEY,
    reporter     TEXT NOT NULL,
    report_id    TEXT NOT NULL,
    org_name     TEXT NOT NULL,
    contact_info TEXT NOT NULL,
    date_begin   TEXT NOT NULL,
    date_end     TEXT NOT NULL,
    queue_id     TEXT NOT NULL,
    stored_at    TEXT NOT NULL,
    UNIQUE (reporter, report_id)
);
CREATE TABLE IF NOT EXISTS tlsrpt_policies (
    id            INTEGER PRIMARY KEY,
    report        INTEGER NOT NULL REFERENCES tlsrpt_reports(id) ON DELETE CASCADE,
    policy_type   TEXT NOT NULL,
    policy_domain TEXT NOT NULL,
    mx_host       TEXT NOT NULL,
    policy_string TEXT NOT NULL,
    successful    INTEGER NOT NULL,
    failed        INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tlsrpt_failures (
    id                     INTEGER PRIMARY KEY,
    policy                 INTEGER NOT NULL REFERENCES tlsrpt_policies(id) ON DELETE CASCADE,
    result_type            TEXT NOT NULL,
    sending_mta_ip         TEXT NOT NULL,
    receiving_mx_hostname  TEXT NOT NULL,
    receiving_mx_helo      TEXT NOT NULL,
    receiving_ip           TEXT NOT NULL,
    failed_sessions        INTEGER NOT NULL,
    additional_information TEXT NOT NULL,
    failure_reason_code    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS tlsrpt_policies_report ON tlsrpt_policies(report);
CREATE INDEX IF NOT EXISTS tlsrpt_failures_policy ON tlsrpt_failures(policy);
"""


class ReportError(Exception):
    """The report is malformed or unsafe: refused for good."""


# -- the handler -----------------------------------------------------------------------------


def handle(envelope) -> None:
    import sqlite3

    reporter, why = authenticated_reporter(envelope.auth)
    if not reporter:
        log.warning("reports: ignored %s from <%s>: %s", envelope.queue_id, envelope.sender, why)
        return
    path = database_path(envelope)
    try:
        documents = find_reports(envelope.message)
        if not documents:
            raise Reject("no DMARC aggregate or TLS-RPT report in the message")
        timeout = float(envelope.config.get("timeout", "30") or 30)
        outcomes = store_all(path, timeout, reporter, envelope.queue_id, documents)
    except ReportError as e:
        raise Reject(f"malformed or unsafe report: {e}")
    except (OSError, sqlite3.Error) as e:  # locked, busy, unwritable, not a database
        raise TempFail(f"{path}: {e}")
    for outcome in outcomes:
        log.info("reports: %s (%s, from <%s>)", outcome, envelope.queue_id, envelope.sender)


def authenticated_reporter(auth) -> tuple[str, str]:
    """(the organisational domain of the From address, "") when a DKIM signature aligned with
    it passed; else ("", why not)."""
    if auth is None or not auth.dkim_checked:
        return "", "DKIM was not checked ([checks] dkim = no): the reporter is unknown"
    if not auth.from_domain:
        return "", "no single From domain"
    from inbound.checks.orgdomain import aligned, organizational_domain

    for sig in auth.dkim:
        if (
            sig.result == "pass"
            and sig.length is None
            and aligned(sig.domain, auth.from_domain, strict=False)
        ):
            return organizational_domain(auth.from_domain), ""
    results = ", ".join(f"{sig.domain or '?'}={sig.result}" for sig in auth.dkim) or "none"
    return "", f"no passing DKIM signature (without l=) aligned with {auth.from_domain} (dkim: {results})"


def database_path(envelope) -> str:
    path = envelope.config.get("database", "").strip() or os.path.join(envelope.spool, "reports.sqlite")
    if not os.path.isabs(path) and envelope.server_config is not None:
        path = os.path.join(os.path.dirname(envelope.server_config.path), path)
    return os.path.normpath(path)


def connect(path: str, timeout: float = 30.0):
    """The database, its schema created; autocommit, transactions are explicit (store)."""
    import sqlite3

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA foreign_keys=ON")
        db.executescript(SCHEMA)
    except BaseException:
        db.close()
        raise
    return db


# -- finding the reports in a message ----------------------------------------------------------


class Budget:
    """What decompression may still produce for one message: MAX_REPORT_BYTES in all, and at
    most MAX_RATIO times the compressed input of each part (RATIO_FLOOR at least)."""

    def __init__(self) -> None:
        self.left = MAX_REPORT_BYTES

    def spend(self, octets: int, what: str) -> None:
        self.left -= octets
        if self.left < 0:
            raise ReportError(f"{what}: more than {MAX_REPORT_BYTES // MiB} MiB of reports once expanded")

    def meter(self, compressed_size: int, what: str) -> "Meter":
        return Meter(self, max(RATIO_FLOOR, MAX_RATIO * compressed_size), what)


class Meter:
    """Counts the output of one compressed part as it grows; refuses it past its bound."""

    def __init__(self, budget: Budget, ratio_limit: int, what: str) -> None:
        self.budget = budget
        self.ratio_limit = ratio_limit
        self.what = what
        self.produced = 0

    def count(self, octets: int) -> None:
        self.budget.spend(octets, self.what)
        self.produced += octets
        if self.produced > self.ratio_limit:
            raise ReportError(f"{self.what}: expands more than {MAX_RATIO} times (a decompression bomb?)")


def find_reports(message) -> list[tuple[str, str, bytes]]:
    """(kind, name, document) of each report in MESSAGE: kind "dmarc" (XML) or "tlsrpt" (JSON)."""
    budget = Budget()
    found = []
    for name, data in report_parts(message):
        for member, document in unpack(name, data, budget):
            kind = kind_of(document)
            if kind:
                found.append((kind, member, document))
            else:
                log.debug("reports: %s is neither XML nor JSON: skipped", member)
    return found


def report_parts(message):
    """(name, decoded bytes) of each leaf MIME part that may hold a report: not the message's
    own text (text/plain or text/html without a file name), not inside an attached message."""
    stack = [message]
    while stack:
        part = stack.pop()
        if part.is_multipart():
            if part.get_content_maintype() == "multipart":
                children = part.get_payload()
                stack.extend(reversed(children if isinstance(children, list) else []))
            continue
        content_type, filename = part.get_content_type(), part.get_filename()
        if (content_type in TEXT_TYPES and not filename) or part.get_content_maintype() == "message":
            continue
        try:
            data = part.get_payload(decode=True)
        except Exception:  # a broken transfer encoding: nothing to read
            data = None
        if isinstance(data, bytes) and data:
            yield filename or content_type, data


def unpack(name: str, data: bytes, budget: Budget) -> list[tuple[str, bytes]]:
    """The documents in one part: its gunzipped content, its zip members, or itself."""
    if data.startswith(GZIP_MAGIC):
        return [(name, gunzip(data, budget.meter(len(data), name)))]
    if data.startswith(ZIP_MAGIC):
        return unzip(name, data, budget.meter(len(data), name))
    budget.spend(len(data), name)
    return [(name, data)]


def kind_of(document: bytes) -> str:
    start = document[:64].lstrip(b"\xef\xbb\xbf \t\r\n")
    return "dmarc" if start.startswith(b"<") else "tlsrpt" if start.startswith(b"{") else ""


def gunzip(data: bytes, meter: Meter) -> bytes:
    """The content of a gzip file, inflated in CHUNK steps under METER.  Several members are
    joined (RFC 1952); whitespace or NULs after the last one are ignored."""
    import zlib

    out = bytearray()
    rest = data
    try:
        while True:
            inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
            rest = inflate_member(inflater, rest, out, meter)
            if not rest.strip(b" \t\r\n\x00"):
                return bytes(out)
            if not rest.startswith(GZIP_MAGIC):
                raise ReportError(f"{meter.what}: data after the end of the gzip stream")
    except zlib.error as e:
        raise ReportError(f"{meter.what}: broken gzip data: {e}")


def inflate_member(inflater, data: bytes, out: bytearray, meter: Meter) -> bytes:
    """Inflate one gzip member of DATA into OUT; what follows the member."""
    position = 0
    pending = b""
    while not inflater.eof:
        if not pending and position < len(data):
            pending = data[position : position + CHUNK]
            position += CHUNK
        chunk = inflater.decompress(pending, CHUNK)  # never more than CHUNK octets at once
        if not chunk and not pending and position >= len(data):
            raise ReportError(f"{meter.what}: the gzip data ends early")
        meter.count(len(chunk))
        out += chunk
        pending = inflater.unconsumed_tail
    return inflater.unused_data + data[position:]


def unzip(name: str, data: bytes, meter: Meter) -> list[tuple[str, bytes]]:
    """The members of a zip archive (skipping directories and macOS metadata), read in CHUNK
    steps under METER, all members together."""
    import io
    import zipfile
    import zlib

    check_end_record(name, data)
    documents = []
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = archive.infolist()
        if len(members) > MAX_ZIP_MEMBERS:
            raise ReportError(f"{name}: more than {MAX_ZIP_MEMBERS} zip members")
        for info in members:
            if not wanted_member(name, info):
                continue
            out = bytearray()
            with archive.open(info) as member:
                while chunk := member.read(CHUNK):
                    meter.count(len(chunk))
                    out += chunk
            documents.append((f"{name}/{info.filename}", bytes(out)))
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError, ValueError) as e:
        raise ReportError(f"{name}: broken zip archive: {e}")
    return documents


def check_end_record(name: str, data: bytes) -> None:
    """Refuse an archive whose end record announces too many entries, a big central directory
    or zip64, before zipfile reads the central directory into memory."""
    import struct

    at = data.rfind(b"PK\x05\x06", max(0, len(data) - 22 - 0xFFFF))  # where zipfile looks too
    if at < 0 or len(data) - at < 22:
        raise ReportError(f"{name}: not a zip archive (no end record)")
    _, disk, directory_disk, _, entries, directory_size, _, _ = struct.unpack("<4s4H2LH", data[at : at + 22])
    if disk or directory_disk or data[max(0, at - 20) : at].startswith(b"PK\x06\x07"):
        raise ReportError(f"{name}: multi-disk and zip64 archives are refused")
    if entries > MAX_ZIP_MEMBERS or directory_size > MAX_CENTRAL_DIRECTORY:
        raise ReportError(f"{name}: {entries} zip members in {directory_size} octets: too many")


def wanted_member(name: str, info) -> bool:
    """A member to read: not a directory nor macOS metadata; refused when its name is a path
    trick, it is encrypted, or compressed other than stored or deflated."""
    import zipfile

    member = info.filename
    parts = member.split("/")
    if (
        member.startswith("/")
        or "\\" in member
        or "\x00" in member
        or ".." in parts
        or (len(member) > 1 and member[1] == ":")
    ):
        raise ReportError(f"{name}: zip member name {member!r} is a path trick")
    if info.is_dir() or parts[0] == "__MACOSX" or parts[-1].startswith("._"):
        return False
    if info.flag_bits & 0x1:
        raise ReportError(f"{name}: encrypted zip member {member!r}")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ReportError(f"{name}: zip member {member!r} uses compression method {info.compress_type}")
    return True


# -- DMARC aggregate reports (RFC 7489 appendix C) ----------------------------------------------


def parse_dmarc(document: bytes):
    """The report's row (a dict for dmarc_reports), then one dict per record: a generator that
    parses as it goes, so a big report never sits in memory as a tree."""
    import io

    from defusedxml import ElementTree

    events = ElementTree.iterparse(io.BytesIO(document), events=("start", "end"), forbid_dtd=True)
    depth = 0
    root = None
    sections: dict[str, object] = {}
    report = None
    try:
        for event, element in events:
            if event == "start":
                depth += 1
                if root is None:
                    root = element
                    if local(element.tag) != "feedback":
                        raise ReportError(f"XML root is <{local(element.tag)}>, not <feedback>")
                continue
            depth -= 1
            if depth != 1:  # the end of a deeper element, or of the root
                continue
            tag = local(element.tag)
            if tag in ("report_metadata", "policy_published"):
                sections[tag] = element
            elif tag == "record":
                if report is None:
                    report = dmarc_report(sections)
                    yield report
                yield dmarc_record(element)
            assert root is not None
            root.clear()  # done with this child: keep memory flat
    except (SyntaxError, ValueError) as e:  # ParseError; defusedxml's DTD/entity refusals
        raise ReportError(f"XML: {type(e).__name__}: {e}")
    if root is None:
        raise ReportError("no XML document")
    if report is None:  # a report without records
        yield dmarc_report(sections)


def dmarc_report(sections: dict) -> dict:
    metadata, policy = sections.get("report_metadata"), sections.get("policy_published")
    if metadata is None or policy is None:
        raise ReportError("<report_metadata> and <policy_published> must come before the records")
    date_range = child(metadata, "date_range")
    pct = text(policy, "pct")
    return {
        "report_id": text(metadata, "report_id", required=True),
        "org_name": text(metadata, "org_name"),
        "email": text(metadata, "email"),
        "domain": text(policy, "domain", required=True).lower(),
        "p": text(policy, "p").lower(),
        "sp": text(policy, "sp").lower(),
        "pct": integer(pct, "pct") if pct else None,
        "adkim": text(policy, "adkim").lower(),
        "aspf": text(policy, "aspf").lower(),
        "date_begin": from_timestamp(text(date_range, "begin", required=True)),
        "date_end": from_timestamp(text(date_range, "end", required=True)),
        "errors": dumps([e.text.strip() for e in children(metadata, "error") if e.text]),
    }


def dmarc_record(record) -> dict:
    row = child(record, "row")
    evaluated = child(row, "policy_evaluated")
    identifiers = child(record, "identifiers")
    auth = child(record, "auth_results", required=False)
    dkim, spf = text(evaluated, "dkim", required=True).lower(), text(evaluated, "spf", required=True).lower()
    return {
        "source_ip": ip_address(text(row, "source_ip", required=True)),
        "count": integer(text(row, "count", required=True), "count"),
        "disposition": text(evaluated, "disposition", required=True).lower(),
        "dkim_aligned": dkim,
        "spf_aligned": spf,
        "dmarc": "pass" if "pass" in (dkim, spf) else "fail",
        "reasons": dumps([fields(r, "type", "comment") for r in children(evaluated, "reason")]),
        "header_from": text(identifiers, "header_from", required=True).lower(),
        "envelope_from": text(identifiers, "envelope_from").lower(),
        "envelope_to": text(identifiers, "envelope_to").lower(),
        "dkim_results": dumps(auth_results(auth, "dkim", "domain", "selector", "result", "human_result")),
        "spf_results": dumps(auth_results(auth, "spf", "domain", "scope", "result", "human_result")),
    }


def auth_results(auth, method: str, *names: str) -> list[dict[str, str]]:
    if auth is None:
        return []
    results = [fields(entry, *names) for entry in children(auth, method)]
    for result in results:
        result["result"] = result["result"].lower()
    return results


def local(tag: str) -> str:
    """An element name without its namespace: {urn:ietf:params:xml:ns:dmarc-2.0}feedback -> feedback."""
    return tag.rpartition("}")[2]


def children(element, name: str) -> list:
    return [c for c in element if local(c.tag) == name]


def child(element, name: str, required: bool = True):
    found = children(element, name) if element is not None else []
    if not found and required:
        where = local(element.tag) if element is not None else "report"
        raise ReportError(f"<{where}> has no <{name}>")
    return found[0] if found else None


def text(element, name: str, required: bool = False) -> str:
    found = child(element, name, required=required)
    value = (found.text or "").strip() if found is not None else ""
    if required and not value:
        raise ReportError(f"<{name}> is empty")
    return value


def fields(element, *names: str) -> dict[str, str]:
    return {name: text(element, name) for name in names}


# -- TLS-RPT reports (RFC 8460 section 4) -------------------------------------------------------


def parse_tlsrpt(document: bytes) -> tuple[dict, list[tuple[dict, list[dict]]]]:
    """The report's row, and each policy's row with its failure rows."""
    import json

    if len(document) > MAX_JSON_BYTES:
        raise ReportError(f"a TLS-RPT report over {MAX_JSON_BYTES // MiB} MiB")
    try:
        report = json.loads(document)
    except (ValueError, RecursionError) as e:
        raise ReportError(f"JSON: {type(e).__name__}: {e}")
    if not isinstance(report, dict):
        raise ReportError("a TLS-RPT report is a JSON object")
    dates = member(report, "date-range", dict)
    row = {
        "report_id": string(report, "report-id", required=True),
        "org_name": string(report, "organization-name"),
        "contact_info": string(report, "contact-info"),
        "date_begin": from_rfc3339(string(dates, "start-datetime", required=True)),
        "date_end": from_rfc3339(string(dates, "end-datetime", required=True)),
    }
    return row, [tls_policy(entry) for entry in member(report, "policies", list)]


def tls_policy(entry: object) -> tuple[dict, list[dict]]:
    if not isinstance(entry, dict):
        raise ReportError("a policies entry is not an object")
    policy, summary = member(entry, "policy", dict), member(entry, "summary", dict)
    mx_host = policy.get("mx-host", "")
    hosts = mx_host if isinstance(mx_host, list) else [mx_host]
    strings = policy.get("policy-string", [])
    row = {
        "policy_type": string(policy, "policy-type", required=True).lower(),
        "policy_domain": string(policy, "policy-domain", required=True).lower(),
        "mx_host": ", ".join(str(h) for h in hosts if h),
        "policy_string": dumps([str(s) for s in strings] if isinstance(strings, list) else [str(strings)]),
        "successful": count(summary, "total-successful-session-count"),
        "failed": count(summary, "total-failure-session-count"),
    }
    details = entry.get("failure-details", [])
    if not isinstance(details, list):
        raise ReportError("failure-details is not a list")
    return row, [tls_failure(detail) for detail in details]


def tls_failure(detail: object) -> dict:
    if not isinstance(detail, dict):
        raise ReportError("a failure-details entry is not an object")
    row: dict[str, str | int] = {
        key.replace("-", "_"): string(detail, key)
        for key in (
            "result-type",
            "sending-mta-ip",
            "receiving-mx-hostname",
            "receiving-mx-helo",
            "receiving-ip",
            "additional-information",
            "failure-reason-code",
        )
    }
    if not row["result_type"]:
        raise ReportError("a failure-details entry without result-type")
    row["failed_sessions"] = count(detail, "failed-session-count")
    return row


def member(obj: dict, key: str, kind: type):
    value = obj.get(key)
    if not isinstance(value, kind):
        raise ReportError(f'"{key}" is missing or not a{"n object" if kind is dict else " list"}')
    return value


def string(obj: dict, key: str, required: bool = False) -> str:
    value = obj.get(key, "")
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ReportError(f'"{key}" is not a string')
    found = str(value).strip()
    if required and not found:
        raise ReportError(f'"{key}" is missing')
    return found


def count(obj: dict, key: str) -> int:
    value = obj.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**63:
        raise ReportError(f'"{key}" is not a count')
    return value


# -- values ------------------------------------------------------------------------------------


def integer(value: str, name: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ReportError(f"<{name}> is not a number: {value[:40]!r}")
    if not 0 <= number < 2**63:
        raise ReportError(f"<{name}> is out of range: {number}")
    return number


def from_timestamp(value: str) -> str:
    """Seconds since the epoch (DMARC's date_range) as ISO 8601 UTC."""
    import datetime

    seconds = integer(value, "date_range")
    try:
        moment = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    except (OverflowError, OSError, ValueError):
        raise ReportError(f"<date_range> is out of range: {seconds}")
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def from_rfc3339(value: str) -> str:
    """An RFC 3339 date-time (TLS-RPT's date-range) as ISO 8601 UTC; no offset means UTC."""
    import datetime

    try:
        moment = datetime.datetime.fromisoformat(value)
    except ValueError:
        raise ReportError(f"not an RFC 3339 date-time: {value[:40]!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ip_address(value: str) -> str:
    import ipaddress

    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        raise ReportError(f"<source_ip> is not an IP address: {value[:60]!r}")


def dumps(value: object) -> str:
    import json

    return json.dumps(value, ensure_ascii=False)


# -- storing -------------------------------------------------------------------------------------


def store_all(path: str, timeout: float, reporter: str, queue_id: str, documents: list) -> list[str]:
    db = connect(path, timeout)
    try:
        return store(db, reporter, queue_id, documents)
    finally:
        db.close()


def store(db, reporter: str, queue_id: str, documents: list[tuple[str, str, bytes]]) -> list[str]:
    """Store the DOCUMENTS of one message in one transaction; a line per report saying what
    became of it.  A ReportError rolls everything back."""
    import datetime

    stamp = {
        "reporter": reporter,
        "queue_id": queue_id,
        "stored_at": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    outcomes = []
    db.execute("BEGIN IMMEDIATE")  # the write lock now, or a busy timeout (TempFail)
    try:
        for kind, name, document in documents:
            try:
                if kind == "dmarc":
                    outcomes.append(store_dmarc(db, stamp, document))
                else:
                    outcomes.append(store_tlsrpt(db, stamp, document))
            except ReportError as e:
                raise ReportError(f"{name}: {e}")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    return outcomes


def store_dmarc(db, stamp: dict, document: bytes) -> str:
    items = parse_dmarc(document)
    report = {**next(items), **stamp}
    cursor = db.execute(
        "INSERT OR IGNORE INTO dmarc_reports (reporter, report_id, org_name, email, domain, p, sp, pct,"
        " adkim, aspf, date_begin, date_end, errors, queue_id, stored_at) VALUES (:reporter, :report_id,"
        " :org_name, :email, :domain, :p, :sp, :pct, :adkim, :aspf, :date_begin, :date_end, :errors,"
        " :queue_id, :stored_at)",
        report,
    )
    what = f"DMARC report {report['report_id']!r} of {report['reporter']} on {report['domain']}"
    if cursor.rowcount == 0:
        items.close()
        return f"{what} was already stored"
    report_row, stored = cursor.lastrowid, 0

    def rows():
        nonlocal stored
        for record in items:  # parsed one by one as sqlite asks for them
            stored += 1
            yield {**record, "report": report_row}

    db.executemany(
        "INSERT INTO dmarc_records (report, source_ip, count, disposition, dkim_aligned, spf_aligned, dmarc,"
        " reasons, header_from, envelope_from, envelope_to, dkim_results, spf_results) VALUES (:report,"
        " :source_ip, :count, :disposition, :dkim_aligned, :spf_aligned, :dmarc, :reasons, :header_from,"
        " :envelope_from, :envelope_to, :dkim_results, :spf_results)",
        rows(),
    )
    return f"stored {what}: {plural(stored, 'record')}"


def store_tlsrpt(db, stamp: dict, document: bytes) -> str:
    report, policies = parse_tlsrpt(document)
    report = {**report, **stamp}
    cursor = db.execute(
        "INSERT OR IGNORE INTO tlsrpt_reports (reporter, report_id, org_name, contact_info, date_begin,"
        " date_end, queue_id, stored_at) VALUES (:reporter, :report_id, :org_name, :contact_info,"
        " :date_begin, :date_end, :queue_id, :stored_at)",
        report,
    )
    what = f"TLS-RPT report {report['report_id']!r} of {report['reporter']}"
    if cursor.rowcount == 0:
        return f"{what} was already stored"
    report_row = cursor.lastrowid
    for policy, failures in policies:
        policy_row = db.execute(
            "INSERT INTO tlsrpt_policies (report, policy_type, policy_domain, mx_host, policy_string,"
            " successful, failed) VALUES (:report, :policy_type, :policy_domain, :mx_host, :policy_string,"
            " :successful, :failed)",
            {**policy, "report": report_row},
        ).lastrowid
        db.executemany(
            "INSERT INTO tlsrpt_failures (policy, result_type, sending_mta_ip, receiving_mx_hostname,"
            " receiving_mx_helo, receiving_ip, failed_sessions, additional_information, failure_reason_code)"
            " VALUES (:policy, :result_type, :sending_mta_ip, :receiving_mx_hostname, :receiving_mx_helo,"
            " :receiving_ip, :failed_sessions, :additional_information, :failure_reason_code)",
            [{**failure, "policy": policy_row} for failure in failures],
        )
    domains = ", ".join(sorted({policy["policy_domain"] for policy, _ in policies})) or "no policy"
    return f"stored {what} on {domains}"


# -- the summary ---------------------------------------------------------------------------------

DMARC_SUMMARY = """
SELECT r.source_ip, r.header_from, SUM(r.count),
       SUM(CASE WHEN r.spf_aligned = 'pass' THEN r.count ELSE 0 END),
       SUM(CASE WHEN r.spf_aligned = 'pass' THEN 0 ELSE r.count END),
       SUM(CASE WHEN r.dkim_aligned = 'pass' THEN r.count ELSE 0 END),
       SUM(CASE WHEN r.dkim_aligned = 'pass' THEN 0 ELSE r.count END),
       SUM(CASE WHEN r.dmarc = 'pass' THEN r.count ELSE 0 END),
       SUM(CASE WHEN r.dmarc = 'pass' THEN 0 ELSE r.count END)
FROM dmarc_records r JOIN dmarc_reports p ON r.report = p.id
WHERE p.date_end >= :since
GROUP BY r.source_ip, r.header_from
ORDER BY 9 DESC, 3 DESC, r.header_from, r.source_ip
"""

TLS_SUMMARY = """
SELECT t.policy_domain, t.policy_type, SUM(t.successful), SUM(t.failed)
FROM tlsrpt_policies t JOIN tlsrpt_reports p ON t.report = p.id
WHERE p.date_end >= :since
GROUP BY t.policy_domain, t.policy_type
ORDER BY 4 DESC, t.policy_domain, t.policy_type
"""

TLS_FAILURES = """
SELECT t.policy_domain, t.policy_type, f.result_type, SUM(f.failed_sessions)
FROM tlsrpt_failures f JOIN tlsrpt_policies t ON f.policy = t.id JOIN tlsrpt_reports p ON t.report = p.id
WHERE p.date_end >= :since
GROUP BY t.policy_domain, t.policy_type, f.result_type
ORDER BY 4 DESC, f.result_type
"""


def summary(path: str, days: int | None = None) -> str:
    """The summary text of the database at PATH (opened read-only)."""
    import datetime
    import sqlite3

    since = ""
    if days is not None:
        moment = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=days)
        since = moment.strftime("%Y-%m-%dT%H:%M:%SZ")
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        db.execute("SELECT 1 FROM dmarc_reports LIMIT 1")  # a database of ours, else OperationalError
        period = f"in the last {days} days" if days is not None else "in all"
        return dmarc_summary(db, since, period) + "\n" + tls_summary(db, since, period)
    finally:
        db.close()


def dmarc_summary(db, since: str, period: str) -> str:
    reports, reporters = db.execute(
        "SELECT COUNT(*), COUNT(DISTINCT reporter) FROM dmarc_reports WHERE date_end >= ?", (since,)
    ).fetchone()
    rows = db.execute(DMARC_SUMMARY, {"since": since}).fetchall()
    head = f"DMARC: {plural(reports, 'report')} from {plural(reporters, 'reporter')} {period}"
    if not rows:
        return head + "\n"
    lines: list[tuple[str, ...]] = [
        ("source IP", "domain", "messages", "SPF pass/fail", "DKIM pass/fail", "DMARC pass/fail")
    ]
    for ip, domain, messages, spf_pass, spf_fail, dkim_pass, dkim_fail, dmarc_pass, dmarc_fail in rows:
        lines.append(
            (
                ip,
                domain,
                str(messages),
                f"{spf_pass}/{spf_fail}",
                f"{dkim_pass}/{dkim_fail}",
                f"{dmarc_pass}/{dmarc_fail}",
            )
        )
    return head + " (aligned SPF, aligned DKIM, DMARC; messages)\n" + table(lines, right=(2,))


def tls_summary(db, since: str, period: str) -> str:
    reports, reporters = db.execute(
        "SELECT COUNT(*), COUNT(DISTINCT reporter) FROM tlsrpt_reports WHERE date_end >= ?", (since,)
    ).fetchone()
    head = f"TLS-RPT: {plural(reports, 'report')} from {plural(reporters, 'reporter')} {period}"
    failures: dict[tuple[str, str], list[str]] = {}
    for domain, kind, result_type, sessions in db.execute(TLS_FAILURES, {"since": since}):
        failures.setdefault((domain, kind), []).append(f"{result_type} {sessions}")
    rows = db.execute(TLS_SUMMARY, {"since": since}).fetchall()
    if not rows:
        return head + "\n"
    lines: list[tuple[str, ...]] = [("policy domain", "type", "successful", "failed", "failures (sessions)")]
    for domain, kind, successful, failed in rows:
        lines.append(
            (domain, kind, str(successful), str(failed), ", ".join(failures.get((domain, kind), [])))
        )
    return head + " (sessions)\n" + table(lines, right=(2, 3))


def table(lines: list[tuple[str, ...]], right: tuple[int, ...] = ()) -> str:
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    out = []
    for line in lines:
        cells = [
            cell.rjust(w) if i in right else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        out.append("  ".join(cells).rstrip())
    return "\n".join(out) + "\n"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sqlite3

    parser = argparse.ArgumentParser(
        prog="reports.py", description="DMARC and TLS-RPT reports stored by the handler"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    command = commands.add_parser(
        "summary", help="pass/fail per source IP and domain; TLS failures per policy"
    )
    command.add_argument("--database", required=True, help="the [handler.reports] database file")
    command.add_argument("--days", type=int, help="only reports whose period ended in the last N days")
    args = parser.parse_args(argv)
    if args.days is not None and not 0 <= args.days <= 100000:
        parser.error("--days must be from 0 to 100000")
    if not os.path.isfile(args.database):
        print(f"reports.py: {args.database}: no such database", file=sys.stderr)
        return 66  # EX_NOINPUT
    try:
        sys.stdout.write(summary(args.database, args.days))
    except sqlite3.Error as e:
        print(f"reports.py: {args.database}: {e}", file=sys.stderr)
        return 66
    return 0


if __name__ == "__main__":
    sys.exit(main())
