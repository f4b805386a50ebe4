#!/usr/bin/env python3
"""Peak RSS of one mailserver.py process receiving a large message over a pipe.

Streams a SIZE-MB message (default 50) through SMTP on the server's stdin, the whole
session including the handler run, and prints the process's peak RSS (wait4's
ru_maxrss of that process) next to `python3 -I -S -c pass` and min_smtpd.py measured the
same way.  Issue 2 asks for < 40 MB at 50 MB.

usage: bench/memory.py [SIZE_MB]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time

from _common import PYTHON, ROOT, server_argv, server_folder

LINE = b"x" * 76 + b"\r\n"


def feed(pipe, size: int, dialogue_head: bytes) -> None:  # type: ignore[no-untyped-def]
    pipe.write(dialogue_head)
    sent, block = 0, LINE * 1000
    while sent < size:
        pipe.write(block)
        sent += len(block)
    pipe.write(b".\r\nQUIT\r\n")
    pipe.close()


def peak_rss_kb(argv: list[str], size: int, head: bytes) -> tuple[int, float, bytes]:
    """Run ARGV with the message on stdin; its own peak RSS (wait4), seconds, stdout."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env={"REMOTE_ADDR": "192.0.2.1"}
    )
    writer = threading.Thread(target=feed, args=(proc.stdin, size, head))
    writer.start()
    out = proc.stdout.read()  # type: ignore[union-attr]
    _, _, usage = os.wait4(proc.pid, 0)
    proc.returncode = 0
    writer.join()
    return usage.ru_maxrss, time.perf_counter() - started, out


def main() -> int:
    size_mb = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    size = size_mb * 1024 * 1024
    root = server_folder()
    head = (
        b"EHLO bench.example\r\nMAIL FROM:<a@sender.example>\r\nRCPT TO:<sink@example.org>\r\nDATA\r\n"
        b"Subject: big\r\n\r\n"
    )
    try:
        floor, _, _ = peak_rss_kb([PYTHON, "-I", "-S", "-c", "pass"], 0, b"")
        maildir = os.path.join(root, "Maildir")
        ref, ref_s, _ = peak_rss_kb(
            [PYTHON, "-I", "-S", os.path.join(ROOT, "bench", "min_smtpd.py"), maildir], size, head
        )
        ours, ours_s, out = peak_rss_kb(server_argv(root), size, head)
        accepted = b"250 2.0.0 OK queued" in out
        print(f"message: {size_mb} MB over a pipe")
        print(f"python3 -I -S -c pass:       peak RSS {floor / 1024:6.1f} MB")
        print(f"min_smtpd.py (floor):        peak RSS {ref / 1024:6.1f} MB  {ref_s:5.2f} s")
        ratio = ours / max(ref, 1)
        print(f"mailserver.py:               peak RSS {ours / 1024:6.1f} MB  {ours_s:5.2f} s  ({ratio:.2f}x)")
        print(f"accepted: {accepted}")
        return 0 if accepted else 1
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
