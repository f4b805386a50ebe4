#!/usr/bin/env python3
"""Milliseconds per session, one process per session as inetd runs it, next to the floor.

Each round runs, interleaved (A B C D, A B C D, ...), over pipes:
  floor      python3 -I -S -c pass                       (the interpreter's start)
  min_smtpd  bench/min_smtpd.py, one accepted message   (the reference receiver)
  rejected   mailserver.py: EHLO, MAIL, RCPT refused, QUIT
  accepted   mailserver.py: one message accepted and handed to a program handler
and prints medians with ratios to the floor and to min_smtpd measured in the same run.

With `--against DIR` (another checkout, e.g. a `git worktree` of the commit before a
change) its mailserver.py runs the same two sessions in the same rounds: before and after.

usage: bench/startup.py [ROUNDS] [--against DIR]
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time

from _common import PYTHON, ROOT, rounds_and_against, server_argv, server_folder

HEAD = b"EHLO bench.example\r\nMAIL FROM:<a@sender.example>\r\n"
ACCEPTED = HEAD + b"RCPT TO:<sink@example.org>\r\nDATA\r\nSubject: hi\r\n\r\nhello\r\n.\r\nQUIT\r\n"
REJECTED = HEAD + b"RCPT TO:<nobody@example.org>\r\nQUIT\r\n"


def timed(argv: list[str], data: bytes) -> float:
    started = time.perf_counter()
    subprocess.run(argv, input=data, stdout=subprocess.DEVNULL, env={"REMOTE_ADDR": "192.0.2.1"}, check=True)
    return (time.perf_counter() - started) * 1000


def main() -> int:
    rounds, against = rounds_and_against(30)
    root = server_folder()
    ours = server_argv(root)
    cases = {
        "floor": ([PYTHON, "-I", "-S", "-c", "pass"], b""),
        "min_smtpd": (
            [PYTHON, "-I", "-S", os.path.join(ROOT, "bench", "min_smtpd.py"), os.path.join(root, "Maildir")],
            ACCEPTED,
        ),
        "rejected": (ours, REJECTED),
        "accepted": (ours, ACCEPTED),
    }
    roots = [root]
    if against:  # its own folder: the two trees must not take turns rebuilding each other's caches
        roots.append(server_folder())
        theirs = [
            *ours[:3],
            os.path.join(against, "mailserver.py"),
            "--config",
            os.path.join(roots[1], "config.ini"),
        ]
        cases["rejected@against"] = (theirs, REJECTED)
        cases["accepted@against"] = (theirs, ACCEPTED)
    try:
        for argv, data in cases.values():  # warm the page cache and __pycache__
            timed(argv, data)
        samples: dict[str, list[float]] = {name: [] for name in cases}
        for _ in range(rounds):
            for name, (argv, data) in cases.items():
                samples[name].append(timed(argv, data))
        floor = statistics.median(samples["floor"])
        reference = statistics.median(samples["min_smtpd"])
        print(f"{rounds} interleaved rounds, medians, over pipes ({PYTHON})")
        for name, values in samples.items():
            median = statistics.median(values)
            ratios = f"{median / floor:5.2f}x floor   {median / reference:5.2f}x min_smtpd"
            print(f"{name:18} {median:7.1f} ms   {ratios}")
        return 0
    finally:
        for folder in roots:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
