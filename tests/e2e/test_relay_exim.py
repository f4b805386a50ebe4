"""A real relaying MTA as the client: Exim from Debian (exim4-daemon-light, run one-shot
with its own config, no daemon) delivers to mailserver behind `listen`.

What broke with real relays: a refused recipient counted as an error, so one valid and
ten unknown recipients got 421 in the middle of the transaction and the relay deferred
the valid one; an internationalised domain configured in its U-label form was refused."""

from __future__ import annotations

import os
import pwd
import smtplib
import subprocess
from pathlib import Path

import pytest
from conftest import Server, wait_until
from deploy_support import require_program

MESSAGE = b"From: alice@sender.example\nTo: sink@example.org\nSubject: relayed by exim\n\nHello from Exim.\n"


def exim(server_port: int, root: Path, sender: str, recipients: list[str]) -> str:
    """Hand one message to Exim and let it deliver in the foreground; Exim's main log."""
    binary = require_program("exim4", "exim4-daemon-light")
    if os.geteuid() != 0:
        pytest.skip("exim runs one-shot here as root (it drops to its own user)")
    try:
        user = pwd.getpwnam("Debian-exim")
    except KeyError:
        pytest.skip("no Debian-exim user")
    spool, logs = root / "exim-spool", root / "exim-log"
    for folder in (spool, logs):
        folder.mkdir()
        os.chown(folder, user.pw_uid, user.pw_gid)
    root.chmod(0o755)
    for parent in root.parents:  # pytest's folders are root's alone: let Exim's user through
        if str(parent).startswith("/tmp/pytest-of-"):
            parent.chmod(parent.stat().st_mode | 0o011)
    config = root / "exim.conf"
    config.write_text(
        f"""primary_hostname = relay.example
spool_directory = {spool}
log_file_path = {logs}/%slog
keep_environment =
begin routers
to_mailserver:
  driver = manualroute
  route_list = * 127.0.0.1
  transport = remote_smtp
  self = send
begin transports
remote_smtp:
  driver = smtp
  port = {server_port}
  hosts_avoid_tls = *
begin retry
* * F,1m,1m
"""
    )
    config.chmod(0o644)
    subprocess.run(
        [binary, "-C", str(config), "-odf", "-oi", "-f", sender, *recipients],
        input=MESSAGE,
        capture_output=True,
        timeout=60,
        check=True,
    )
    return (logs / "mainlog").read_text()


def test_one_valid_and_ten_unknown_recipients_deliver_the_valid_one(server: Server, listening: int) -> None:
    unknown = [f"nobody{n}@example.org" for n in range(10)]
    log = exim(listening, server.root, "alice@sender.example", ["sink@example.org", *unknown])
    assert "=> sink@example.org" in log and "250 2.0.0 OK queued as" in log
    assert "== sink@example.org" not in log  # not deferred
    assert "421" not in log
    assert all(f"** {address}" in log for address in unknown)
    runs = wait_until(lambda: server.got(), timeout=15)
    assert runs and b"Hello from Exim." in runs[0][0]


def test_an_idn_configured_as_u_label_takes_mail_for_its_a_label(server: Server, listening: int) -> None:
    server.write_config(server={"domains": "bücher.example"})
    assert server.run("check").returncode == 0
    port = listening  # each connection reads the config anew: the one just written
    log = exim(port, server.root, "alice@sender.example", ["sink@xn--bcher-kva.example"])
    assert "=> sink@xn--bcher-kva.example" in log
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as smtp:  # and the U-label form, SMTPUTF8
        smtp.ehlo("client.example")
        refused = smtp.sendmail(
            "alice@sender.example",
            ["sink@bücher.example"],
            MESSAGE.replace(b"\n", b"\r\n"),
            mail_options=["SMTPUTF8"],
        )
        assert refused == {}
    runs = wait_until(lambda: len(server.got()) >= 2 and server.got(), timeout=15)
    recipients = {env["RECIPIENT"] for _, env in runs}
    assert recipients == {"sink@xn--bcher-kva.example"}
