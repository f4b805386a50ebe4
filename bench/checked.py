#!/usr/bin/env python3
"""Milliseconds per accepted session with every check on, end to end, next to min_smtpd.

One process per session as inetd runs it (`python3 -I -S mailserver.py`, over pipes),
a 2 KB DKIM-signed message (rsa-sha256, 2048-bit key) from an SPF-authorised client,
SPF, DKIM, DMARC and ARC on against a real DNS server on 127.0.0.1 (tests/dns_server.py,
in this process), and a program handler that reads the message.  A session is timed
until the process exits, so the checks and the handler run (after the 250) are included.

Rounds are interleaved (A B C, A B C, ...): min_smtpd.py receiving the same message, then
mailserver.py; with `--against DIR` (another checkout, e.g. a `git worktree` of the
commit before a change) its mailserver.py runs the same session in the same rounds.
Medians and ratios to min_smtpd measured in the same run are printed; the handler's
Authentication-Results of the last session is checked (spf, dkim and dmarc pass).

With `--hostile slow|chains` the message is tests/hostile_dns.py's (20 DKIM keys, 50 ARC
sets, nine SPF includes at the attacker's names) and the DNS server never answers those
names (slow) or answers with CNAME chains (chains): the figure is the worst-case time of
one message's checks against the DNS budget, at `--dns-timeout` (default 5, as shipped).

usage: bench/checked.py [ROUNDS] [--against DIR] [--hostile slow|chains] [--dns-timeout S]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time

from _common import MAILSERVER, PYTHON, ROOT, checked_config, server_folder

sys.path.insert(0, os.path.join(ROOT, "tests"))
from dns_server import DNSTestServer  # noqa: E402  (test scaffolding: dnslib, a dev dependency)

KEYS = os.path.join(ROOT, "tests", "data", "dkim")
CLIENT = "192.0.2.10"


# The handler keeps what it saw (a shell builtin: no process) and reads the message.
SINK = '#!/bin/sh\necho "$AUTHENTICATION_RESULTS" > "$(dirname "$0")/../authres"\nexec cat > /dev/null\n'


def zone() -> dict:
    with open(os.path.join(KEYS, "test-rsa2048.pub.b64")) as f:
        public = f.read().strip()
    return {
        "sender.example": [{"TXT": f"v=spf1 ip4:{CLIENT} -all"}],
        "sel._domainkey.sender.example": [{"TXT": f"v=DKIM1; k=rsa; p={public}"}],
        "_dmarc.sender.example": [{"TXT": "v=DMARC1; p=reject"}],
    }


def signed_message(size: int = 2048) -> bytes:
    import dkim

    head = (
        b"From: Alice <alice@sender.example>\r\nTo: sink@example.org\r\nSubject: checked\r\n"
        b"Date: Mon, 01 Jan 2024 00:00:00 +0000\r\nMessage-ID: <bench@sender.example>\r\n\r\n"
    )
    line = b"x" * 76 + b"\r\n"
    message = head + line * ((size - len(head) - 530) // len(line))
    with open(os.path.join(KEYS, "test-rsa2048.pem"), "rb") as f:
        key = f.read()
    signature = dkim.sign(
        message, b"sel", b"sender.example", key, include_headers=[b"from", b"to", b"subject", b"date"]
    )
    return signature + message


def dialogue(message: bytes) -> bytes:
    return (
        b"EHLO mail.sender.example\r\nMAIL FROM:<alice@sender.example>\r\nRCPT TO:<sink@example.org>\r\n"
        b"DATA\r\n" + message + b".\r\nQUIT\r\n"
    )


def timed(argv: list[str], data: bytes) -> float:
    started = time.perf_counter()
    subprocess.run(argv, input=data, stdout=subprocess.DEVNULL, env={"REMOTE_ADDR": CLIENT}, check=True)
    return (time.perf_counter() - started) * 1000


def option(args: list[str], name: str, default: str) -> str:
    if name not in args:
        return default
    at = args.index(name)
    value = args[at + 1]
    del args[at : at + 2]
    return value


def main() -> int:
    args = sys.argv[1:]
    against = option(args, "--against", "")
    against = os.path.abspath(against) if against else ""
    hostile = option(args, "--hostile", "")
    timeout = float(option(args, "--dns-timeout", "5" if hostile else "2"))
    if hostile:
        return hostile_run(int(args[0]) if args else 3, hostile, timeout, against)
    rounds = int(args[0]) if args else 30
    dns = DNSTestServer()
    dns.serve(zone())
    root = server_folder(checked_config(f"127.0.0.1:{dns.port}", timeout), SINK)
    message = signed_message()
    session = dialogue(message)
    config = os.path.join(root, "config.ini")
    cases = {
        "min_smtpd": (
            [PYTHON, "-I", "-S", os.path.join(ROOT, "bench", "min_smtpd.py"), os.path.join(root, "Maildir")],
            session,
        ),
        "checked": ([PYTHON, "-I", "-S", MAILSERVER, "--config", config], session),
    }
    roots = [root]
    if against:  # its own folder: the two trees must not take turns rebuilding each other's caches
        theirs = os.path.join(against, "mailserver.py")
        roots.append(server_folder(checked_config(f"127.0.0.1:{dns.port}", timeout), SINK))
        their_config = os.path.join(roots[1], "config.ini")
        cases["checked@against"] = ([PYTHON, "-I", "-S", theirs, "--config", their_config], session)
    try:
        for argv, data in cases.values():  # warm the page cache, __pycache__ and any cache file
            timed(argv, data)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, (argv, data) in cases.items():
                samples[name].append(timed(argv, data))
        with open(os.path.join(root, "authres")) as f:
            authres = f.read().strip()
        reference = statistics.median(samples["min_smtpd"])
        print(f"{rounds} interleaved rounds, medians, over pipes ({PYTHON}); message {len(message)} bytes")
        for name, values in samples.items():
            median = statistics.median(values)
            print(f"{name:18} {median:7.1f} ms   {median / reference:5.2f}x min_smtpd")
        print(f"handler saw: {authres}")
        ok = all(f"{method}=pass" in authres for method in ("spf", "dkim", "dmarc"))
        if not ok:
            print("checks did not all pass: the figures above are not of the checked path")
        return 0 if ok else 1
    finally:
        dns.close()
        for folder in roots:
            shutil.rmtree(folder, ignore_errors=True)


def hostile_run(rounds: int, kind: str, timeout: float, against: str) -> int:
    import hostile_dns

    dns = DNSTestServer()
    dns.serve(hostile_dns.zone(kind))
    root = server_folder(checked_config(f"127.0.0.1:{dns.port}", timeout), SINK)
    session = (
        b"EHLO mail.evil.example\r\nMAIL FROM:<boss@evil.example>\r\nRCPT TO:<sink@example.org>\r\n"
        b"DATA\r\n" + hostile_dns.message() + b".\r\nQUIT\r\n"
    )
    config = os.path.join(root, "config.ini")
    checkouts = {
        "hostile": MAILSERVER,
        **({"hostile@against": os.path.join(against, "mailserver.py")} if against else {}),
    }
    try:
        print(f"{rounds} rounds, medians; hostile message, DNS {kind}, dns_timeout = {timeout:g}")
        for name, script in checkouts.items():
            times, queries = [], []
            for _ in range(rounds):
                dns.serve(hostile_dns.zone(kind))  # and forget the query log
                times.append(timed([PYTHON, "-I", "-S", script, "--config", config], session) / 1000)
                queries.append(len(dns.queries))
            with open(os.path.join(root, "authres")) as f:
                authres = f.read().strip()
            median = statistics.median(times)
            print(f"{name:18} {median:7.1f} s per message   {statistics.median(queries):5.0f} DNS queries")
            print(f"{'':18} {authres[:150]}")
        return 0
    finally:
        dns.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
