"""Shared set-up for the benchmarks: a throw-away server folder with a discarding handler."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAILSERVER = os.path.join(ROOT, "mailserver.py")
PYTHON = sys.executable

CONFIG = """\
[server]
hostname = bench.example
domains = example.org
spool = spool
log = server.log
max_message_size = 104857600
[handlers]
dir = handlers
[checks]
spf = no
dkim = no
dmarc = no
arc = no
"""


def checked_config(dns: str, timeout: float = 2) -> str:
    """CONFIG with every check on (SPF, DKIM, DMARC, ARC) against the DNS server at DNS."""
    head = CONFIG.split("[checks]\n")[0]
    checks = "".join(f"{name} = yes\n" for name in ("spf", "dkim", "dmarc", "arc"))
    return f"{head}[checks]\n{checks}dns_servers = {dns}\ndns_timeout = {timeout:g}\n"


def rounds_and_against(default_rounds: int) -> tuple[int, str]:
    """`SCRIPT [ROUNDS|SIZE] [--against DIR]`: the number, and the other checkout ("" if none)."""
    args = sys.argv[1:]
    against = ""
    if "--against" in args:
        at = args.index("--against")
        against = os.path.abspath(args[at + 1])
        del args[at : at + 2]
    return (int(args[0]) if args else default_rounds), against


def server_folder(config: str = CONFIG, sink: str = "#!/bin/sh\nexec cat > /dev/null\n") -> str:
    """A server folder with CONFIG, whose handlers are the shipped ones plus `sink` (a
    program; by default it reads the message and discards it)."""
    root = tempfile.mkdtemp(prefix="mailserver-bench-")
    shutil.copytree(
        os.path.join(ROOT, "handlers"),
        os.path.join(root, "handlers"),
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    with open(os.path.join(root, "config.ini"), "w") as f:
        f.write(config)
    os.mkdir(os.path.join(root, "spool"))  # as an installation has it (`check` insists)
    path = os.path.join(root, "handlers", "sink")
    with open(path, "w") as f:
        f.write(sink)
    os.chmod(path, 0o755)
    return root


def server_argv(root: str) -> list[str]:
    """The recommended inetd `server` line: the venv's interpreter, -I -S, absolute paths."""
    return [PYTHON, "-I", "-S", MAILSERVER, "--config", os.path.join(root, "config.ini")]
