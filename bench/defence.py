#!/usr/bin/env python3
"""What the defences cost the refused path, one process per session (inetd mode), next
to the floor, in interleaved rounds over pipes:

  min_smtpd      bench/min_smtpd.py, one accepted message        (the reference receiver)
  refused        mailserver.py, no [limits], no DNSBL: EHLO, MAIL, RCPT refused, QUIT
  + store        the same with the per-client memory on ([limits] rate): clients.sqlite
                 opened, the connection counted, penalties read
  + dnsbl new    the store and `[checks] dnsbl` against a DNS server on 127.0.0.1, a new
                 client address every session (the query is asked)
  + dnsbl known  the same for one client address again (the answer cached in the store)

Medians, with ratios to min_smtpd measured in the same run.  The lean-path budget for
the refused session is 1.5x min_smtpd.  Needs the dev requirements (dnslib, for the DNS
server).

usage: bench/defence.py [ROUNDS]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time

from _common import CONFIG, PYTHON, ROOT, rounds_and_against, server_argv, server_folder

sys.path.insert(0, os.path.join(ROOT, "tests"))
from dns_server import DNSTestServer  # noqa: E402  (test scaffolding, a real DNS server)

REFUSED = b"EHLO bench.example\r\nMAIL FROM:<a@sender.example>\r\nRCPT TO:<nobody@example.org>\r\nQUIT\r\n"
ACCEPTED = (
    b"EHLO bench.example\r\nMAIL FROM:<a@sender.example>\r\nRCPT TO:<sink@example.org>\r\n"
    b"DATA\r\nSubject: hi\r\n\r\nhello\r\n.\r\nQUIT\r\n"
)


def timed(argv: list[str], data: bytes, addr: str) -> float:
    started = time.perf_counter()
    subprocess.run(argv, input=data, stdout=subprocess.DEVNULL, env={"REMOTE_ADDR": addr}, check=True)
    return (time.perf_counter() - started) * 1000


def main() -> int:
    rounds, _ = rounds_and_against(30)
    dns = DNSTestServer()
    dns.serve({})  # lists nobody: every query gets NXDOMAIN, as most clients would
    host, port = dns.address
    store = "[limits]\nrate = 100000\n"
    dnsbl = f"dnsbl = zen.bench.test\ndns_servers = {host}:{port}\ndns_timeout = 1\n"
    folders = {
        "refused": server_folder(),
        "+ store": server_folder(CONFIG + store),
        "+ dnsbl": server_folder(CONFIG.replace("[checks]\n", "[checks]\n" + dnsbl) + store),
    }
    maildir = os.path.join(folders["refused"], "Maildir")
    minimal = [PYTHON, "-I", "-S", os.path.join(ROOT, "bench", "min_smtpd.py"), maildir]
    counter = [0]

    def new_addr() -> str:
        counter[0] += 1
        return f"198.18.{counter[0] // 250}.{counter[0] % 250 + 1}"

    cases = {
        "min_smtpd": lambda: timed(minimal, ACCEPTED, "192.0.2.1"),
        "refused": lambda: timed(server_argv(folders["refused"]), REFUSED, "192.0.2.1"),
        "+ store": lambda: timed(server_argv(folders["+ store"]), REFUSED, "192.0.2.1"),
        "+ dnsbl new": lambda: timed(server_argv(folders["+ dnsbl"]), REFUSED, new_addr()),
        "+ dnsbl known": lambda: timed(server_argv(folders["+ dnsbl"]), REFUSED, "192.0.2.1"),
    }
    try:
        for run in cases.values():  # warm the page cache, __pycache__ and the store
            run()
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, run in cases.items():
                samples[name].append(run())
        reference = statistics.median(samples["min_smtpd"])
        print(f"{rounds} interleaved rounds, medians, one process per session over pipes ({PYTHON} -I -S)")
        for name, values in samples.items():
            median = statistics.median(values)
            print(f"{name:14} {median:7.1f} ms   {median / reference:5.2f}x min_smtpd")
        return 0
    finally:
        dns.close()
        for folder in folders.values():
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
