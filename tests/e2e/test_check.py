"""`mailserver.py check` tests what the running server would hit, as the user it runs as:
the spool, the log target, the TLS certificate and key, the reply transport, handlers'
required settings and the handlers folder.  Each problem is one line and exit 78."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import Server

ROOT_USER = os.geteuid() == 0


def check(server: Server) -> tuple[int, str]:
    result = server.run("check")
    return result.returncode, result.stderr.decode()


def test_a_sound_installation_passes(server: Server) -> None:
    assert check(server) == (0, "")


def test_a_missing_spool_is_named(server: Server) -> None:
    server.write_config(server={"spool": "nowhere/spool"})
    code, text = check(server)
    assert code == 78 and "[server] spool" in text and "does not exist" in text


@pytest.mark.skipif(ROOT_USER, reason="root may write anywhere")
def test_an_unwritable_spool_is_named(server: Server) -> None:
    server.spool.chmod(0o500)
    try:
        code, text = check(server)
    finally:
        server.spool.chmod(0o700)
    assert code == 78 and "not writable" in text


def test_a_log_file_that_cannot_be_created_is_named(server: Server) -> None:
    server.write_config(server={"log": "no/such/folder/server.log"})
    code, text = check(server)
    assert code == 78 and "[server] log" in text and "cannot be created" in text


def test_a_log_target_that_is_a_folder_is_named(server: Server) -> None:
    (server.root / "logs").mkdir()
    server.write_config(server={"log": "logs"})
    code, text = check(server)
    assert code == 78 and "is a folder" in text


def test_syslog_without_a_socket_is_named(server: Server) -> None:
    from inbound import log

    server.write_config(server={"log": "syslog"})
    code, text = check(server)
    if log.target_problem("syslog"):
        assert code == 78 and "/dev/log does not exist" in text
    else:
        assert code == 0


def test_a_certificate_and_key_that_do_not_load_are_named(server: Server, tmp_path: Path) -> None:
    (tmp_path / "cert.pem").write_text("not a certificate")
    server.write_config(tls={"certificate": str(tmp_path / "cert.pem"), "key": str(tmp_path / "missing.pem")})
    code, text = check(server)
    assert code == 78 and "[tls] certificate/key" in text and "STARTTLS would not be offered" in text


def test_a_readable_certificate_passes(server: Server, tmp_path: Path) -> None:
    from deploy_support import make_certificate

    cert, key = make_certificate(tmp_path)
    server.write_config(tls={"certificate": str(cert), "key": str(key)})
    assert check(server) == (0, "")


def test_a_sendmail_transport_without_the_command_is_named(server: Server) -> None:
    server.write_config(reply={"transport": "sendmail", "sendmail": "/nonexistent/sendmail -t"})
    code, text = check(server)
    assert code == 78 and "[reply] sendmail" in text and "not found" in text


def test_an_smtp_transport_without_a_smarthost_is_named(server: Server) -> None:
    server.write_config(reply={"transport": "smtp", "smtp_host": ""})
    code, text = check(server)
    assert code == 78 and "[reply] smtp_host" in text


def test_a_handler_with_unset_required_settings_is_named_and_its_mail_deferred(server: Server) -> None:
    server.add_python(
        "needy", 'REQUIRED_SETTINGS = ["mirror", "senders"]\n\ndef handle(envelope):\n    pass\n'
    )
    code, text = check(server)
    assert (
        code == 0 and "warning: [handler.needy] mirror, senders not set" in text and "deferred (451)" in text
    )
    from conftest import dialogue

    out = server.smtp(dialogue("needy@example.org"))
    assert b"451 4.3.0 <needy@example.org>" in out and server.ids("queue") == []
    assert "[handler.needy] mirror, senders not set" in server.log()
    server.write_config(handler__needy={"mirror": "file:///m", "senders": "a@b.example"})
    assert check(server) == (0, "")
    assert b"250 2.0.0 OK queued" in server.smtp(dialogue("needy@example.org"))


def test_the_shipped_svnsync_is_deferred_until_configured(server: Server) -> None:
    import shutil

    from conftest import ROOT, dialogue

    shutil.copy(ROOT / "handlers" / "svnsync.py", server.handlers / "svnsync.py")
    code, text = check(server)
    assert code == 0 and "warning: [handler.svnsync] mirror, senders" in text
    assert b"451 4.3.0 <svnsync@example.org>" in server.smtp(dialogue("svnsync@example.org"))


def test_a_file_that_is_not_ini_names_the_line(server: Server) -> None:
    server.config.write_text("# a comment\nthis is not ini\n")
    code, text = check(server)
    assert code == 78 and "line 2" in text and text.count("\n") == 1


def test_a_missing_dkim_key_is_named(server: Server) -> None:
    server.write_config(
        reply={"dkim_domain": "example.org", "dkim_selector": "s", "dkim_key": "keys/nope.key"}
    )
    code, text = check(server)
    assert code == 78 and "[reply] dkim_key" in text and "No such file or directory" in text


def test_the_webhook_example_without_its_url_is_named(server: Server) -> None:
    (server.handlers / "webhook.py").write_text(
        (Path(__file__).parents[2] / "examples" / "webhook.py").read_text()
    )
    code, text = check(server)
    assert code == 0 and "warning: [handler.webhook] url" in text  # as for svnsync: deferred until set
    from conftest import dialogue

    assert b"451 4.3.0 <webhook@example.org>" in server.smtp(dialogue("webhook@example.org"))
