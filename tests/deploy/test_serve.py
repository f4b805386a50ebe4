"""`mailserver.py serve` (fast mode) under the real launchers it is shipped for: xinetd
with `wait = yes` (xinetd/mailserver-serve, rewritten only to a loopback port, this user,
this interpreter and this checkout) and systemd-socket-activate without --accept (what
mailserver-serve.socket does: LISTEN_FDS).  Concurrent sessions land with the right client
address; the master's limits answer 421; the master exits when idle and comes back on
the next connection; killing the master loses nothing that got 250; killing a session
mid-DATA leaves nothing half-queued; a handler dropped in while the master runs is used."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import MAILSERVER
from deploy_support import (
    DOMAIN,
    HOSTNAME,
    RECORDER,
    SHIPPED_XINETD_SERVE,
    Installation,
    Launcher,
    Wire,
    is_listening,
    make_installation,
    parse_xinetd,
    send_message,
    start_socket_activate,
    start_xinetd,
    wait_until,
)

MESSAGE = "From: Alice <alice@sender.example>\nTo: sink@example.org\nSubject: {subject}\n\nHello {subject}.\n"


def serve_installation(root: Path, **serve: str) -> Installation:
    extra = "\n[serve]\n" + "".join(f"{key} = {value}\n" for key, value in serve.items())
    return make_installation(root, extra=extra)


@pytest.fixture(params=["xinetd", "systemd"])
def launched(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Installation, Launcher]]:
    installation = serve_installation(tmp_path, max_connections="4", max_per_source="3", idle_exit="600")
    launcher = launch(request.param, installation)
    try:
        yield installation, launcher
    finally:
        launcher.stop()


def launch(kind: str, installation: Installation) -> Launcher:
    if kind == "xinetd":
        return start_xinetd(installation, shipped=SHIPPED_XINETD_SERVE)
    return start_socket_activate(installation, accept=False)


def zombies(parents: list[int]) -> list[str]:
    """Children of PARENTS that ended but are not yet reaped."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] == "Z" and int(fields[1]) in parents:
            found.append(stat.parent.name)
    return found


def greeted(port: int) -> Wire:
    wire = Wire(port)
    assert wire.reply().startswith(b"220 "), wire.lines
    return wire


def test_the_shipped_xinetd_file_hands_the_listening_socket_to_serve() -> None:
    name, attributes = parse_xinetd(SHIPPED_XINETD_SERVE.read_text())
    assert name == "smtp" and attributes["wait"] == "yes" and attributes["instances"] == "1"
    assert " serve --config " in attributes["server_args"]


def test_the_shipped_systemd_units_are_accept_no_and_hardened_like_the_per_connection_one() -> None:
    systemd = MAILSERVER.parent / "systemd"
    socket_unit = (systemd / "mailserver-serve.socket").read_text()
    service = (systemd / "mailserver-serve.service").read_text()
    assert "Accept=no" in socket_unit and "Service=mailserver-serve.service" in socket_unit
    assert " serve --config " in service and "KillMode=mixed" in service

    def directives(text: str) -> set[str]:
        return {line.split("=")[0] for line in text.splitlines() if "=" in line and not line.startswith("#")}

    hardening = {
        d
        for d in directives((systemd / "mailserver@.service").read_text())
        if d.startswith(("Protect", "Restrict", "Private", "System", "NoNew", "Capab"))
    }
    assert hardening <= directives(service)


def test_twenty_concurrent_sessions_are_delivered_with_the_client_address(tmp_path: Path) -> None:
    for kind in ("xinetd", "systemd"):
        installation = serve_installation(tmp_path / kind, max_connections="50", max_per_source="50")
        launcher = launch(kind, installation)
        try:
            errors: list[BaseException] = []

            def one(n: int, port: int = launcher.port, errors: list[BaseException] = errors) -> None:
                try:
                    wire = greeted(port)
                    wire.command("EHLO client.example")
                    reply = send_message(
                        wire, "alice@sender.example", f"sink@{DOMAIN}", MESSAGE.format(subject=n)
                    )
                    assert reply.startswith(b"250 "), reply
                    wire.command("QUIT")
                    wire.close()
                except BaseException as e:  # reported below, in the test's thread
                    errors.append(e)

            threads = [threading.Thread(target=one, args=(n,)) for n in range(20)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert errors == []
            deliveries = installation.wait_for_deliveries(20)
            assert {d.env["REMOTE_ADDR"] for d in deliveries} == {"127.0.0.1"}
            assert len({d.env["QUEUE_ID"] for d in deliveries}) == 20
            assert len(launcher.masters()) == 1
        finally:
            launcher.stop()


def test_over_the_per_source_and_total_limits_the_master_answers_421(
    launched: tuple[Installation, Launcher],
) -> None:
    installation, launcher = launched
    held = [greeted(launcher.port) for _ in range(3)]  # max_per_source = 3
    refused = Wire(launcher.port)
    assert refused.reply().startswith(b"421 4.7.0 "), refused.lines
    assert b"from your address" in refused.lines[0]
    assert refused.read_to_end() == b""  # and closed: no session behind it
    held[0].command("QUIT")
    held[0].close()
    masters = launcher.masters()
    wait_until(lambda: len(launcher.sessions()) == 2 and not zombies(masters), 10, "the session to be reaped")

    def admitted() -> Wire | None:  # the master learns of the exit from SIGCHLD: a moment later
        wire = Wire(launcher.port)
        if wire.reply().startswith(b"220 "):
            return wire
        wire.close()
        return None

    held[0] = wait_until(admitted, 10, "a freed slot to admit a new session", interval=0.1)
    assert "max_per_source" in installation.log.read_text()
    for wire in held:
        wire.command("QUIT")
        wire.close()


def test_over_max_connections_the_master_answers_421(tmp_path: Path) -> None:
    installation = serve_installation(tmp_path, max_connections="2", max_per_source="10")
    launcher = start_socket_activate(installation, accept=False)
    try:
        held = [greeted(launcher.port) for _ in range(2)]
        refused = Wire(launcher.port)
        assert refused.reply().startswith(b"421 4.7.0 "), refused.lines
        assert b"Too many connections" in refused.lines[0]
        for wire in held:
            wire.command("QUIT")
            wire.close()
        wait_until(lambda: not launcher.sessions(), 10, "the sessions to end")
        assert greeted(launcher.port).command("QUIT").startswith(b"221")
        assert "max_connections" in installation.log.read_text()
    finally:
        launcher.stop()


def test_an_idle_master_exits_and_the_next_connection_starts_it_again(tmp_path: Path) -> None:
    installation = serve_installation(tmp_path, idle_exit="1")
    launcher = start_xinetd(installation, shipped=SHIPPED_XINETD_SERVE)
    try:
        wire = greeted(launcher.port)
        [first] = launcher.masters()
        wire.command("QUIT")
        wire.close()
        wait_until(lambda: not launcher.masters(), 15, "the idle master to exit")
        assert "no connection for 1 s, exiting" in installation.log.read_text()
        wait_until(lambda: is_listening(launcher.port), 10, "xinetd to listen again")
        wire = greeted(launcher.port)
        wire.command("EHLO client.example")
        assert send_message(
            wire, "alice@sender.example", f"sink@{DOMAIN}", MESSAGE.format(subject="again")
        ).startswith(b"250")
        wire.command("QUIT")
        [second] = launcher.masters() or [0]
        assert second != first
        installation.wait_for_deliveries(1)
    finally:
        launcher.stop()


def test_killing_the_master_mid_session_loses_nothing_that_got_250(
    launched: tuple[Installation, Launcher],
) -> None:
    installation, launcher = launched
    wire = greeted(launcher.port)
    wire.command("EHLO client.example")
    assert wire.command("MAIL FROM:<alice@sender.example>").startswith(b"250")
    assert wire.command(f"RCPT TO:<sink@{DOMAIN}>").startswith(b"250")
    assert wire.command("DATA").startswith(b"354")
    [master] = launcher.masters()
    os.kill(master, signal.SIGKILL)
    wait_until(lambda: master not in launcher.masters(), 10, "the master to die")
    wire.send(MESSAGE.format(subject="orphan").replace("\n", "\r\n").encode() + b"\r\n.\r\n")
    assert wire.reply().startswith(b"250 "), wire.lines
    assert wire.command("QUIT").startswith(b"221")
    [delivery] = installation.wait_for_deliveries(1)
    assert "Hello orphan." in delivery.message


def test_killing_a_session_mid_data_leaves_nothing_half_queued(
    launched: tuple[Installation, Launcher],
) -> None:
    installation, launcher = launched
    wire = greeted(launcher.port)
    wire.command("EHLO client.example")
    wire.command("MAIL FROM:<alice@sender.example>")
    wire.command(f"RCPT TO:<sink@{DOMAIN}>")
    assert wire.command("DATA").startswith(b"354")
    wire.send(b"Subject: half\r\n\r\n" + b"x" * 70 + b"\r\n")
    [session] = wait_until(launcher.sessions, 10, "the forked session")
    wait_until(lambda: list((installation.spool / "incoming").glob("*/message")), 10, "data in incoming/")
    os.kill(session, signal.SIGKILL)
    try:
        rest = wire.read_to_end()
    except ConnectionResetError:  # unread data in the dead socket's buffer: a reset
        rest = b""
    assert rest == b""  # the connection closed, no 250
    assert list((installation.spool / "queue").iterdir()) == []
    # the master goes on: the next session is served
    assert greeted(launcher.port).command("QUIT").startswith(b"221")
    assert "killed by signal 9" in installation.log.read_text()


def test_a_handler_dropped_in_while_the_master_runs_is_used(launched: tuple[Installation, Launcher]) -> None:
    installation, launcher = launched
    wire = greeted(launcher.port)
    wire.command("EHLO client.example")
    assert wire.command("MAIL FROM:<alice@sender.example>").startswith(b"250")
    assert wire.command(f"RCPT TO:<late@{DOMAIN}>").startswith(b"550 5.1.1")
    wire.command("QUIT")
    late = installation.handlers / "late"
    late.write_text(RECORDER.format(python=sys.executable, delivered=installation.delivered, noise=""))
    late.chmod(0o755)
    wire = greeted(launcher.port)
    wire.command("EHLO client.example")
    assert send_message(
        wire, "alice@sender.example", f"late@{DOMAIN}", MESSAGE.format(subject="late")
    ).startswith(b"250")
    wire.command("QUIT")
    [delivery] = installation.wait_for_deliveries(1)
    assert delivery.env["RECIPIENT"] == f"late@{DOMAIN}"


def test_sigterm_stops_accepting_and_lets_the_running_session_finish(tmp_path: Path) -> None:
    installation = serve_installation(tmp_path)
    launcher = start_socket_activate(installation, accept=False)
    try:
        wire = greeted(launcher.port)
        wire.command("EHLO client.example")
        os.kill(launcher.process.pid, signal.SIGHUP)  # harmless
        time.sleep(0.2)
        assert launcher.process.poll() is None
        os.kill(launcher.process.pid, signal.SIGTERM)
        wait_until(lambda: not is_listening(launcher.port), 10, "the master to stop listening")
        assert launcher.process.poll() is None  # still waiting for the session
        reply = send_message(wire, "alice@sender.example", f"sink@{DOMAIN}", MESSAGE.format(subject="last"))
        assert reply.startswith(b"250 ")
        wire.command("QUIT")
        wire.close()
        assert launcher.process.wait(15) == 0
        installation.wait_for_deliveries(1)
        assert "serve: master" in installation.log.read_text() and "stopped" in installation.log.read_text()
    finally:
        launcher.stop()


def test_serve_listen_for_development_and_its_errors(tmp_path: Path) -> None:
    installation = serve_installation(tmp_path)
    python = sys.executable
    # no socket from anyone and no --listen: a usage error, said on stderr
    lone = subprocess.run(
        [python, str(MAILSERVER), "serve", "--config", str(installation.config)],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )
    assert lone.returncode == 64 and b"no listening socket" in lone.stderr
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [
            python,
            str(MAILSERVER),
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--config",
            str(installation.config),
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,  # `> serve.log 2>&1`: one file, a person's, not a socket
    )
    try:
        wait_until(lambda: is_listening(port), 20, "serve --listen")
        wire = greeted(port)
        assert wire.command("EHLO client.example").startswith(b"250-" + HOSTNAME.encode())
        assert send_message(
            wire, "a@sender.example", f"sink@{DOMAIN}", MESSAGE.format(subject="dev")
        ).startswith(b"250")
        wire.command("QUIT")
        installation.wait_for_deliveries(1)
    finally:
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=15)
    assert process.returncode == 0
    assert f"serving on 127.0.0.1:{port}".encode() in output, output
