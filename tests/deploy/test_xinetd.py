"""mailserver under real xinetd, run from the shipped xinetd/mailserver file (rewritten only
to a loopback high port, this user, this interpreter and this checkout): mail sent with
smtplib and swaks reaches a program handler; concurrent sessions all land; the handler
sees the client's address; nothing but SMTP replies ever reaches the client, not even
when a handler writes to stdout/stderr or the config is broken."""

from __future__ import annotations

import smtplib
import subprocess
import threading
from collections.abc import Iterator
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
    start_xinetd,
    swaks_server_lines,
    wait_until,
)

MESSAGE = "From: Alice <alice@sender.example>\nTo: sink@example.org\nSubject: {subject}\n\n{body}\n"


@pytest.fixture
def installation(tmp_path: Path) -> Installation:
    return make_installation(tmp_path)


@pytest.fixture
def xinetd(installation: Installation) -> Iterator[Launcher]:
    launcher = start_xinetd(installation)
    try:
        yield launcher
    finally:
        launcher.stop()


def test_mail_sent_with_smtplib_reaches_the_handler_with_the_client_address(
    installation: Installation, xinetd: Launcher
) -> None:
    with smtplib.SMTP("127.0.0.1", xinetd.port, local_hostname="client.example", timeout=20) as smtp:
        code, banner = smtp.ehlo()
        assert code == 250 and banner.startswith(HOSTNAME.encode())
        assert "starttls" not in smtp.esmtp_features  # no certificate configured
        refused = smtp.sendmail(
            "alice@sender.example",
            [f"sink@{DOMAIN}"],
            MESSAGE.format(subject="via xinetd", body="Hello through xinetd."),
        )
        assert refused == {}
    [delivery] = installation.wait_for_deliveries(1)
    assert delivery.env["REMOTE_ADDR"] == "127.0.0.1"
    assert delivery.env["SENDER"] == "alice@sender.example"
    assert delivery.env["RECIPIENT"] == f"sink@{DOMAIN}"
    assert delivery.env["HELO"] == "client.example"
    assert delivery.env["QUEUE_ID"]
    assert f"by {HOSTNAME} (mailserver) with ESMTP id {delivery.env['QUEUE_ID']}" in delivery.message
    received = delivery.message.split("\nFrom: ")[0]
    assert "Received: from client.example (" in received and "[127.0.0.1])" in received
    assert "::ffff:" not in received  # xinetd's REMOTE_HOST is an address, not a host name
    assert "Hello through xinetd." in delivery.message


def test_mail_sent_with_swaks_reaches_the_handler(installation: Installation, xinetd: Launcher) -> None:
    swaks = require_program("swaks", "swaks")
    result = subprocess.run(
        [
            swaks,
            "--server", "127.0.0.1", "--port", str(xinetd.port),
            "--helo", "swaks.example", "--from", "bob@sender.example", "--to", f"sink@{DOMAIN}",
            "--header", "Subject: from swaks", "--body", "Sent by swaks.", "--timeout", "20",
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    server_lines = swaks_server_lines(result.stdout)
    assert server_lines and all(REPLY_LINE.match(line.encode()) for line in server_lines), result.stdout
    [delivery] = installation.wait_for_deliveries(1)
    assert delivery.env["SENDER"] == "bob@sender.example"
    assert delivery.env["REMOTE_ADDR"] == "127.0.0.1"
    assert "Subject: from swaks" in delivery.message and "Sent by swaks." in delivery.message


def test_ten_concurrent_sessions_all_land(installation: Installation, xinetd: Launcher) -> None:
    errors: list[BaseException] = []
    start = threading.Barrier(10)

    def send(n: int) -> None:
        try:
            with smtplib.SMTP(
                "127.0.0.1", xinetd.port, local_hostname=f"client{n}.example", timeout=30
            ) as smtp:
                start.wait(10)
                smtp.sendmail(
                    f"sender{n}@sender.example",
                    [f"sink@{DOMAIN}"],
                    MESSAGE.format(subject=f"number {n}", body=f"Message number {n}."),
                )
        except BaseException as e:  # reported below, with the others
            errors.append(e)

    threads = [threading.Thread(target=send, args=(n,)) for n in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    deliveries = installation.wait_for_deliveries(10, timeout=30)
    assert sorted(d.env["SENDER"] for d in deliveries) == sorted(
        f"sender{n}@sender.example" for n in range(10)
    )
    assert len({d.env["QUEUE_ID"] for d in deliveries}) == 10
    for delivery in deliveries:
        n = delivery.env["SENDER"].split("@")[0].removeprefix("sender")
        assert f"Message number {n}." in delivery.message


def test_nothing_but_smtp_replies_reach_the_client_even_from_a_noisy_handler(
    installation: Installation, xinetd: Launcher
) -> None:
    wire = Wire(xinetd.port)
    try:
        assert wire.reply().startswith(b"220 ")
        assert wire.command("EHLO client.example").startswith(b"250-")
        assert wire.command("BOGUS command").startswith(b"500 ")
        assert wire.command("MAIL FROM:<not an address>")[:1] == b"5"
        assert wire.command("RSET").startswith(b"250 ")
        assert wire.command("MAIL FROM:<alice@sender.example>").startswith(b"250 ")
        assert wire.command(f"RCPT TO:<nobody-here@{DOMAIN}>").startswith(b"550 ")
        assert wire.command("RCPT TO:<someone@elsewhere.example>").startswith(b"550 ")
        assert wire.command(f"RCPT TO:<noisy@{DOMAIN}>").startswith(b"250 ")
        assert wire.command("DATA").startswith(b"354 ")
        wire.send(MESSAGE.format(subject="noise", body="x").replace("\n", "\r\n").encode() + b".\r\n")
        assert wire.reply().startswith(b"250 ")
        assert wire.command("QUIT").startswith(b"221 ")
        assert wire.read_to_end() == b""  # the handler's noise went elsewhere
    finally:
        wire.close()
    installation.wait_for_deliveries(1)
    wire.assert_only_smtp()


def test_the_connection_is_released_before_the_handlers_finish(
    installation: Installation, xinetd: Launcher
) -> None:
    slow = installation.handlers / "slow"
    slow.write_text("#!/bin/sh\ncat >/dev/null\nsleep 3\n")
    slow.chmod(0o755)
    wire = Wire(xinetd.port, timeout=10)
    try:
        wire.reply()
        wire.command("EHLO client.example")
        assert send_message(wire, "alice@sender.example", f"slow@{DOMAIN}", "Subject: s\n\nslow").startswith(
            b"250"
        )
        assert wire.command("QUIT").startswith(b"221 ")
        wire.sock.settimeout(2)  # the handler sleeps 3 s: the close must come before
        assert wire.read_to_end() == b""
    finally:
        wire.close()
    wire.assert_only_smtp()


def test_a_broken_config_gets_421_and_nothing_else(installation: Installation) -> None:
    broken = installation.root / "broken.ini"
    broken.write_text("[server]\ndomains = example.org\nmax_recipients = many\n")
    launcher = start_xinetd(installation, config=broken)
    try:
        wire = Wire(launcher.port)
        try:
            first = wire.reply()
            rest = wire.read_to_end()
        finally:
            wire.close()
    finally:
        launcher.stop()
    assert first.startswith(b"421 4.3.0 "), first
    assert rest == b""
    wire.assert_only_smtp()


def test_xinetd_logs_each_session_with_its_duration_and_exit_status(
    installation: Installation, xinetd: Launcher
) -> None:
    wire = Wire(xinetd.port)
    try:
        wire.reply()
        wire.command("QUIT")
        wire.read_to_end()
    finally:
        wire.close()
    log = installation.root / "xinetd.log"
    text = wait_until(lambda: "EXIT:" in log.read_text() and log.read_text(), 10, "xinetd's EXIT line")
    assert "START: mailserver-test pid=" in text
    assert "status=0" in text and "duration=" in text
