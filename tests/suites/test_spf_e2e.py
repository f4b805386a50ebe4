"""The RFC 7208 SPF suite end to end: for each of the 203 cases, `mailserver.py --config FILE`
runs as a subprocess over pipes with REMOTE_ADDR set to the case's client address, gets
EHLO <helo> / MAIL FROM / RCPT / DATA, and a program handler keeps the message it was
given.  The spf= result of the Authentication-Results field the handler received (and its
SPF_RESULT variable) must be among the case's allowed results.

Each scenario has its own DNS server and server folder; the sessions run a few at a time,
as inetd would start them, and each test then reads its own case's outcome.

A case whose MAIL FROM or HELO is not valid SMTP syntax (RFC 5321 4.1.2) may be refused
by the session before any SPF check; the test then asserts that refusal (a 5xx reply) and
that the identity really is malformed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import authres
import pytest
import yaml
from conftest import MAILSERVER, TEST_DATA
from dns_server import DNSTestServer

SUITE = TEST_DATA / "spf" / "rfc7208-tests.yml"
PARALLEL = 4

CONFIG = """\
[server]
hostname = mx.test.example
domains = example.org
spool = spool
log = server.log
command_timeout = 30
data_timeout = 30

[handlers]
dir = handlers
timeout = 20

[checks]
spf = yes
dkim = no
dmarc = no
arc = no
dns_servers = 127.0.0.1:{port}
dns_timeout = 0.5

[reply]
transport = outbox
outbox = outbox
require_auth = no
"""

SINK = """\
#!/bin/sh
out="$(dirname "$0")/../got/$QUEUE_ID"
mkdir -p "$(dirname "$out")"
echo "$SPF_RESULT" > "$out.spf"
cat > "$out.part" && mv "$out.part" "$out.eml"
"""

# RFC 5321 4.1.2 Mailbox / Domain, roughly: enough to tell a malformed identity.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL = rf'(?:{_ATOM}(?:\.{_ATOM})*|"(?:[^"\\\r\n]|\\.)*")'
_DOMAIN = (
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*|\[[^\]]+\])"
)
MAILBOX = re.compile(rf"{_LOCAL}@{_DOMAIN}")
HELO = re.compile(_DOMAIN)


@dataclass
class Case:
    scenario: int
    name: str
    host: str
    helo: str
    mailfrom: str
    allowed: list[str]


@dataclass
class Outcome:
    replies: list[str]
    authres: str | None
    spf_env: str | None


def load_cases() -> tuple[list[dict[str, Any]], list[Case]]:
    with open(SUITE, encoding="utf-8") as f:
        scenarios = list(yaml.safe_load_all(f))
    cases = []
    for number, scenario in enumerate(scenarios, 1):
        for name, test in scenario["tests"].items():
            allowed = test["result"] if isinstance(test["result"], list) else [test["result"]]
            cases.append(Case(number, name, test["host"], test["helo"], test["mailfrom"], allowed))
    return scenarios, cases


SCENARIOS, CASES = load_cases()


def smtp_path(mailfrom: str) -> str:
    """MAIL FROM's path for an address as the suite writes it (a local part with spaces quoted)."""
    if not mailfrom:
        return "<>"
    local, at, domain = mailfrom.rpartition("@")
    if at and re.search(r'[\s"(),:;<>@\[\]\\]', local):
        local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return f"<{local}{at}{domain}>"


def run_case(folder: Path, case: Case) -> Outcome:
    session = (
        f"EHLO {case.helo}\r\n"
        f"MAIL FROM:{smtp_path(case.mailfrom)}\r\n"
        "RCPT TO:<sink@example.org>\r\n"
        "DATA\r\n"
        f"From: someone@example.net\r\nSubject: {case.name}\r\n\r\nSPF suite case {case.name}\r\n.\r\n"
        "QUIT\r\n"
    ).encode()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REMOTE_", "TCPREMOTE"))}
    env["REMOTE_ADDR"] = case.host
    result = subprocess.run(
        [sys.executable, str(MAILSERVER), "--config", str(folder / "config.ini")],
        input=session,
        capture_output=True,
        env=env,
        timeout=60,
    )
    lines = result.stdout.decode("utf-8", "replace").split("\r\n")
    replies = [line for line in lines if line and line[3:4] != "-"]
    queued = re.search(r"queued as (\S+)", result.stdout.decode("utf-8", "replace"))
    if not queued:
        return Outcome(replies, None, None)
    message = folder / "got" / f"{queued.group(1)}.eml"
    if not message.exists():
        return Outcome(replies, None, None)
    value = None
    head = message.read_bytes().split(b"\n\n", 1)[0].split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    for field in re.split(r"\r?\n(?![ \t])", head):
        if field.lower().startswith("authentication-results:"):
            value = field
            break
    spf_env = (folder / "got" / f"{queued.group(1)}.spf").read_text().strip()
    return Outcome(replies, value, spf_env)


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[int, str], Outcome]]:
    """Every case run through mailserver.py; each scenario with its own DNS server and folder."""
    servers, folders = {}, {}
    for number, scenario in enumerate(SCENARIOS, 1):
        dns = DNSTestServer()
        dns.serve(scenario["zonedata"])
        folder = tmp_path_factory.mktemp(f"spf-e2e-{number:02d}")
        (folder / "handlers").mkdir()
        sink = folder / "handlers" / "sink"
        sink.write_text(SINK)
        sink.chmod(0o755)
        (folder / "config.ini").write_text(CONFIG.format(port=dns.port))
        servers[number], folders[number] = dns, folder
    try:
        with ThreadPoolExecutor(PARALLEL) as pool:
            futures = {(c.scenario, c.name): pool.submit(run_case, folders[c.scenario], c) for c in CASES}
            yield {key: future.result() for key, future in futures.items()}
    finally:
        for dns in servers.values():
            dns.close()


def spf_result(header_field: str) -> str:
    parsed = authres.parse(header_field)
    assert parsed.authserv_id == "mx.test.example"
    results = [r.result for r in parsed.results if r.method == "spf"]
    assert len(results) == 1, header_field
    return str(results[0])


@pytest.mark.parametrize("case", CASES, ids=[f"{c.scenario:02d}-{c.name}" for c in CASES])
def test_spf_suite_case_through_mailserver(outcomes: dict[tuple[int, str], Outcome], case: Case) -> None:
    outcome = outcomes[(case.scenario, case.name)]
    if outcome.authres is None:
        # Refused before DATA: only acceptable for an identity that is not valid SMTP.
        refused = [r for r in outcome.replies if r[:1] == "5"]
        assert refused, outcome.replies
        malformed = (case.mailfrom and not MAILBOX.fullmatch(case.mailfrom)) or not HELO.fullmatch(case.helo)
        assert malformed, f"valid identity refused: {outcome.replies}"
        return
    assert spf_result(outcome.authres) in case.allowed, outcome.authres
    assert outcome.spf_env in case.allowed
