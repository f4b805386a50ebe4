"""[limits] under real xinetd (the shipped xinetd/mailserver): the connection rate per
client address and pregreet work across the per-connection processes xinetd starts."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from deploy_support import Installation, Launcher, Wire, make_installation, start_xinetd


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[tuple[Installation, Launcher]]:
    installation = make_installation(
        tmp_path, extra="\n[limits]\nrate = 3\nrate_window = 60\npregreet = 0.5\n"
    )
    launcher = start_xinetd(installation)
    try:
        yield installation, launcher
    finally:
        launcher.stop()


def test_the_rate_per_client_holds_across_xinetds_processes(limited: tuple[Installation, Launcher]) -> None:
    installation, launcher = limited
    for _ in range(3):
        wire = Wire(launcher.port)
        assert wire.reply().startswith(b"220 "), wire.lines  # after the pregreet pause
        assert wire.command("QUIT").startswith(b"221")
        wire.close()
    wire = Wire(launcher.port)
    assert wire.reply().startswith(b"421 4.7.0 "), wire.lines
    assert "Too many connections from your address lately" in installation.log.read_text()


def test_pregreet_under_xinetd_refuses_a_client_that_talks_first(
    limited: tuple[Installation, Launcher],
) -> None:
    installation, launcher = limited
    with socket.create_connection(("127.0.0.1", launcher.port), timeout=20) as sock:
        sock.sendall(b"EHLO spammer.example\r\n")  # at once, before any banner
        data = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and b"\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    assert data.startswith(b"554 5.5.1 "), data
    again = Wire(launcher.port)
    assert again.reply().startswith(b"421 4.7.0 "), again.lines  # remembered
