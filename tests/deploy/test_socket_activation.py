"""mailserver under systemd-style socket activation, as mailserver.socket (Accept=yes) and
mailserver@.service run it: `systemd-socket-activate --accept --inetd` starts one process
per connection with the connection on stdin/stdout.  Mail sent with smtplib and swaks
reaches a program handler, concurrent sessions all land, and an IPv4 client on a
dual-stack socket (what ListenStream=25 gives) is reported as its IPv4 address."""

from __future__ import annotations

import smtplib
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from deploy_support import (
    DOMAIN,
    HOSTNAME,
    REPLY_LINE,
    Installation,
    Launcher,
    Wire,
    make_installation,
    require_program,
    send_message,
    start_socket_activate,
    swaks_server_lines,
)

MESSAGE = "From: Alice <alice@sender.example>\nTo: sink@example.org\nSubject: {subject}\n\n{body}\n"


@pytest.fixture
def installation(tmp_path: Path) -> Installation:
    return make_installation(tmp_path)


@pytest.fixture
def activated(installation: Installation) -> Iterator[Launcher]:
    launcher = start_socket_activate(installation)
    try:
        yield launcher
    finally:
        launcher.stop()


def test_mail_sent_with_smtplib_reaches_the_handler_with_the_client_address(
    installation: Installation, activated: Launcher
) -> None:
    with smtplib.SMTP("127.0.0.1", activated.port, local_hostname="client.example", timeout=20) as smtp:
        assert smtp.ehlo()[0] == 250
        smtp.sendmail(
            "alice@sender.example", [f"sink@{DOMAIN}"], MESSAGE.format(subject="s", body="Activated.")
        )
    [delivery] = installation.wait_for_deliveries(1)
    assert delivery.env["REMOTE_ADDR"] == "127.0.0.1"
    assert delivery.env["RECIPIENT"] == f"sink@{DOMAIN}"
    assert f"by {HOSTNAME} (mailserver) with ESMTP id {delivery.env['QUEUE_ID']}" in delivery.message
    assert "Activated." in delivery.message


def test_every_line_on_the_wire_is_an_smtp_reply(installation: Installation, activated: Launcher) -> None:
    wire = Wire(activated.port)
    try:
        assert wire.reply().startswith(b"220 ")
        assert wire.command("EHLO client.example").startswith(b"250-")
        assert wire.command("NOT-A-VERB").startswith(b"500 ")
        assert send_message(wire, "a@sender.example", f"noisy@{DOMAIN}", "Subject: n\n\nnoise").startswith(
            b"250 "
        )
        assert wire.command("QUIT").startswith(b"221 ")
        assert wire.read_to_end() == b""
    finally:
        wire.close()
    installation.wait_for_deliveries(1)
    wire.assert_only_smtp()


def test_mail_sent_with_swaks_reaches_the_handler(installation: Installation, activated: Launcher) -> None:
    swaks = require_program("swaks", "swaks")
    result = subprocess.run(
        [
            swaks,
            "--server", "127.0.0.1", "--port", str(activated.port),
            "--helo", "swaks.example", "--from", "bob@sender.example", "--to", f"sink@{DOMAIN}",
            "--header", "Subject: from swaks", "--body", "Sent by swaks.", "--timeout", "20",
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert all(REPLY_LINE.match(line.encode()) for line in swaks_server_lines(result.stdout)), result.stdout
    [delivery] = installation.wait_for_deliveries(1)
    assert delivery.env["SENDER"] == "bob@sender.example"
    assert "Sent by swaks." in delivery.message


def test_ten_concurrent_sessions_all_land(installation: Installation, activated: Launcher) -> None:
    def send(n: int) -> dict[str, tuple[int, bytes]]:
        with smtplib.SMTP("127.0.0.1", activated.port, local_hostname=f"c{n}.example", timeout=30) as smtp:
            body = MESSAGE.format(subject=f"n{n}", body=f"Message {n}.")
            return smtp.sendmail(f"sender{n}@sender.example", [f"sink@{DOMAIN}"], body)

    with ThreadPoolExecutor(10) as pool:
        assert list(pool.map(send, range(10))) == [{}] * 10
    deliveries = installation.wait_for_deliveries(10, timeout=30)
    assert {d.env["SENDER"] for d in deliveries} == {f"sender{n}@sender.example" for n in range(10)}
    assert len({d.env["QUEUE_ID"] for d in deliveries}) == 10


def test_an_ipv4_client_on_a_dual_stack_socket_is_reported_as_ipv4(installation: Installation) -> None:
    # ListenStream=25 (and xinetd's IPv6 flag) listen on one IPv6 socket that takes IPv4
    # clients too; getpeername() then says ::ffff:127.0.0.1.  Bound to the v4-mapped
    # loopback address here, so nothing listens beyond 127.0.0.1.
    launcher = start_socket_activate(installation, address="::ffff:127.0.0.1")
    try:
        with smtplib.SMTP("127.0.0.1", launcher.port, local_hostname="client.example", timeout=20) as smtp:
            smtp.sendmail(
                "alice@sender.example", [f"sink@{DOMAIN}"], MESSAGE.format(subject="v6", body="Mapped.")
            )
        [delivery] = installation.wait_for_deliveries(1)
    finally:
        launcher.stop()
    assert delivery.env["REMOTE_ADDR"] == "127.0.0.1"
    received = delivery.message.split("\nFrom: ")[0]
    assert "[127.0.0.1])" in received and "::ffff:" not in received
