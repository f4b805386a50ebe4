"""The example handlers in examples/: archive (Maildir), sqlite, pipe, webhook (against a real
http.server on 127.0.0.1), and the shell and PHP program handlers; each given an Envelope built
from the sample messages in examples/mail/."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Server

from inbound.autoreply import send_reply
from inbound.config import Config, load
from inbound.delivery.router import load_python
from inbound.envelope import Envelope
from inbound.outcomes import Reject, TempFail

EXAMPLES = ROOT / "examples"


def example(name: str) -> Any:
    handler = load_python(name, str(EXAMPLES / f"{name}.py"))
    assert not handler.error, handler.error
    return handler.module


def sample(name: str) -> bytes:
    """A sample message from examples/mail/ as the spool has it (CRLF)."""
    return (EXAMPLES / "mail" / name).read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


@pytest.fixture
def config(server: Server) -> Config:
    return load(str(server.config))


def envelope(
    config: Config, handler: str, settings: dict[str, str] | None = None, eml: str = "attachment.eml"
) -> Envelope:
    return Envelope(
        queue_id="0123456789ABC",
        sender="alice@example.net",
        recipients=["echo@example.org", "copy@example.org"],
        helo="client.example.net",
        remote_addr="192.0.2.7",
        handler=handler,
        config=settings or {},
        server_config=config,
        raw=sample(eml),
        replier=send_reply,
    )


# -- archive -------------------------------------------------------------------------------------


def test_archive_delivers_into_maildir_new(config: Config, tmp_path: Path) -> None:
    maildir = tmp_path / "Maildir"
    archive = example("archive")
    archive.handle(envelope(config, "archive", {"maildir": str(maildir)}))
    archive.handle(envelope(config, "archive", {"maildir": str(maildir)}))
    new = sorted((maildir / "new").iterdir())
    assert len(new) == 2 and new[0].name != new[1].name
    assert list((maildir / "tmp").iterdir()) == [] and (maildir / "cur").is_dir()
    data = new[0].read_bytes()
    assert data.startswith(
        b"Return-Path: <alice@example.net>\nDelivered-To: echo@example.org\nDelivered-To: copy@example.org\n"
    )
    assert b"\r\n" not in data and b"Subject: =?utf-8?q?Report_with_an_attachment" in data


def test_archive_defaults_to_the_spool(config: Config) -> None:
    example("archive").handle(envelope(config, "archive"))
    assert len(os.listdir(os.path.join(config.server.spool, "archive", "new"))) == 1


def test_archive_unwritable_folder_is_a_temporary_failure(config: Config, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(TempFail, match="Maildir"):
        example("archive").handle(envelope(config, "archive", {"maildir": str(blocker / "Maildir")}))


# -- sqlite --------------------------------------------------------------------------------------


def test_sqlite_stores_message_and_attachments_once(config: Config, tmp_path: Path) -> None:
    database = tmp_path / "mail.sqlite"
    store = example("sqlite")
    env = envelope(config, "sqlite", {"database": str(database)})
    store.handle(env)
    store.handle(env)  # a retry stores nothing twice
    db = sqlite3.connect(database)
    rows = db.execute(
        "SELECT queue_id, sender, recipients, subject, from_addr, text_body, raw FROM messages"
    ).fetchall()
    assert len(rows) == 1
    queue_id, sender, recipients, subject, from_addr, text, raw = rows[0]
    assert (queue_id, sender) == ("0123456789ABC", "alice@example.net")
    assert json.loads(recipients) == ["echo@example.org", "copy@example.org"]
    assert subject == "Report with an attachment ✓"
    assert json.loads(from_addr) == ["Alice Example <alice@localhost>"]
    assert "see the attached CSV" in text and raw == env.raw
    assert db.execute("SELECT filename, content_type, size, data FROM attachments").fetchall() == [
        ("report.csv", "text/csv", 29, b"day,value\nmonday,1\ntuesday,2\n")
    ]


def test_sqlite_schema_is_the_documented_one(config: Config, tmp_path: Path) -> None:
    store = example("sqlite")
    store.handle(envelope(config, "sqlite", {"database": str(tmp_path / "m.sqlite")}))
    db = sqlite3.connect(tmp_path / "m.sqlite")
    for table in ("messages", "attachments"):
        columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
        for column in columns:
            assert f"    {column} " in store.__doc__, (table, column)


def test_sqlite_default_database_is_in_the_spool(config: Config) -> None:
    example("sqlite").handle(envelope(config, "sqlite"))
    assert os.path.exists(os.path.join(config.server.spool, "mail.sqlite"))


def test_sqlite_locked_database_is_a_temporary_failure(config: Config, tmp_path: Path) -> None:
    store = example("sqlite")
    database = tmp_path / "locked.sqlite"
    store.connect(str(database)).close()
    holder = sqlite3.connect(database)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(TempFail, match="locked"):
            store.handle(envelope(config, "sqlite", {"database": str(database), "timeout": "0.2"}))
    finally:
        holder.rollback()
        holder.close()


# -- pipe ----------------------------------------------------------------------------------------


def test_pipe_gives_the_command_the_message_and_envelope(config: Config, tmp_path: Path) -> None:
    out = tmp_path / "out"
    command = f"sh -c 'cat > {out}.eml; echo \"$SENDER $RECIPIENTS $QUEUE_ID\" > {out}.env'"
    example("pipe").handle(envelope(config, "pipe", {"command": command}))
    assert (tmp_path / "out.eml").read_bytes() == sample("attachment.eml").replace(b"\r\n", b"\n")
    assert (
        tmp_path / "out.env"
    ).read_text() == "alice@example.net echo@example.org copy@example.org 0123456789ABC\n"


@pytest.mark.parametrize("status, outcome", [(75, TempFail), (1, TempFail), (67, Reject), (65, Reject)])
def test_pipe_exit_status_decides(config: Config, status: int, outcome: type[Exception]) -> None:
    command = f"sh -c 'cat >/dev/null; echo why not >&2; exit {status}'"
    with pytest.raises(outcome, match=f"exited with {status}: why not"):
        example("pipe").handle(envelope(config, "pipe", {"command": command}))


def test_pipe_without_a_command_or_with_a_missing_one_is_temporary(config: Config) -> None:
    with pytest.raises(TempFail, match="command is not set"):
        example("pipe").handle(envelope(config, "pipe"))
    with pytest.raises(TempFail, match="cannot run"):
        example("pipe").handle(envelope(config, "pipe", {"command": "/nonexistent/program"}))


def test_pipe_timeout_is_temporary(config: Config) -> None:
    with pytest.raises(TempFail, match="longer than"):
        example("pipe").handle(envelope(config, "pipe", {"command": "sleep 5", "timeout": "0.3"}))


# -- webhook ----------------------------------------------------------------------------------------


@dataclass
class Hook:
    """A local HTTP endpoint: what it got, and the status it answers with."""

    url: str = ""
    status: int = 200
    delay: float = 0.0
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)


@pytest.fixture
def http_hook() -> Iterator[Hook]:
    hook = Hook()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers["Content-Length"]))
            hook.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            time.sleep(hook.delay)
            try:
                self.send_response(hook.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"no")
            except OSError:  # the client gave up waiting (the time-out test)
                pass

        def log_message(self, *args: Any) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{httpd.server_address[1]}/hook"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_webhook_posts_signed_json(config: Config, http_hook: Hook) -> None:
    example("webhook").handle(envelope(config, "webhook", {"url": http_hook.url, "secret": "s3cret"}))
    [(headers, body)] = http_hook.requests
    expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["x-mailserver-signature"], expected)
    assert headers["content-type"] == "application/json"
    assert headers["x-mailserver-queue-id"] == "0123456789ABC"
    data = json.loads(body)
    assert data["sender"] == "alice@example.net" and data["subject"] == "Report with an attachment ✓"
    # the verifier snippet in the example's docstring runs as written
    doc = example("webhook").__doc__
    snippet = "\n".join(line[4:] for line in doc.split("in Python:\n\n", 1)[1].split("\n\n")[0].splitlines())
    scope: dict = {}
    exec(snippet, scope)
    assert scope["verified"](b"s3cret", body, headers["x-mailserver-signature"])
    assert not scope["verified"](b"s3cret", body + b" ", headers["x-mailserver-signature"])

    [attachment] = data["attachments"]
    assert attachment["filename"] == "report.csv" and attachment["size"] == 29


def test_webhook_signs_the_standard_webhooks_way_and_the_package_verifies_it(
    config: Config, http_hook: Hook
) -> None:
    import base64

    from standardwebhooks import Webhook, WebhookVerificationError

    for secret in ("s3cret", "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()):
        http_hook.requests.clear()
        example("webhook").handle(envelope(config, "webhook", {"url": http_hook.url, "secret": secret}))
        [(headers, body)] = http_hook.requests
        assert headers["webhook-id"] == "0123456789ABC"  # the queue id: stable across retries
        verifier = Webhook(secret if secret.startswith("whsec_") else secret.encode())
        assert verifier.verify(body, dict(headers))["sender"] == "alice@example.net"
        tampered = dict(headers, **{"webhook-id": "another"})  # the id is signed too: no replay as another
        with pytest.raises(WebhookVerificationError):
            verifier.verify(body, tampered)
        # the docstring's receiver snippet runs as written
        doc = example("webhook").__doc__
        line = doc.split("package:\n\n", 1)[1].split("\n\n")[0].strip().splitlines()
        scope = {"secret": secret, "body": body, "headers": dict(headers)}
        exec("\n".join(part.strip() for part in line), scope)
        if not secret.startswith("whsec_"):  # the standard-library check runs as written too
            text = doc.split("replayed later):\n\n", 1)[1].split("\n\n")[0]
            check: dict = {}
            exec("\n".join(row[4:] for row in text.splitlines()), check)
            assert check["fresh_and_verified"](secret.encode(), body, dict(headers))
            assert not check["fresh_and_verified"](secret.encode(), body, tampered)
            stale = dict(headers, **{"webhook-timestamp": str(int(headers["webhook-timestamp"]) - 3600)})
            assert not check["fresh_and_verified"](secret.encode(), body, stale)


def test_webhook_without_secret_sends_no_signature(config: Config, http_hook: Hook) -> None:
    example("webhook").handle(envelope(config, "webhook", {"url": http_hook.url}))
    assert "x-mailserver-signature" not in http_hook.requests[0][0]


def test_webhook_posts_raw_utf8_display_names(config: Config, http_hook: Hook) -> None:
    """Ordinary international mail: raw UTF-8 in From (it came back as lone surrogates and
    the JSON body could not be encoded)."""
    env = envelope(config, "webhook", {"url": http_hook.url})
    env._raw = (
        b"From: J\xc3\xb6rg \xff <j\xc3\xb6rg@example.net>\r\nSubject: Gr\xc3\xbc\xc3\x9fe\r\n\r\nHallo.\r\n"
    )
    example("webhook").handle(env)
    data = json.loads(http_hook.requests[0][1])
    assert data["from"] == ["Jörg \ufffd <jörg@example.net>"] and data["subject"] == "Grüße"


@pytest.mark.parametrize(
    "status, outcome",
    [(400, Reject), (404, Reject), (429, TempFail), (500, TempFail), (503, TempFail), (302, TempFail)],
)
def test_webhook_status_decides(
    config: Config, http_hook: Hook, status: int, outcome: type[Exception]
) -> None:
    http_hook.status = status
    with pytest.raises(outcome, match=str(status)):
        example("webhook").handle(envelope(config, "webhook", {"url": http_hook.url}))


def test_webhook_timeout_and_refused_connection_are_temporary(config: Config, http_hook: Hook) -> None:
    http_hook.delay = 1.0
    with pytest.raises(TempFail):
        example("webhook").handle(envelope(config, "webhook", {"url": http_hook.url, "timeout": "0.2"}))
    from conftest import free_port

    with pytest.raises(TempFail):
        example("webhook").handle(envelope(config, "webhook", {"url": f"http://127.0.0.1:{free_port()}/"}))


def test_webhook_needs_an_http_url(config: Config) -> None:
    with pytest.raises(TempFail, match="url"):
        example("webhook").handle(envelope(config, "webhook", {"url": "file:///etc/passwd"}))


# -- program handlers ----------------------------------------------------------------------------------


def run_program(path: Path, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    base = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "SENDER": "alice@example.net",
        "RECIPIENT": "hello@example.org",
        "QUEUE_ID": "0123456789ABC",
        "REMOTE_ADDR": "192.0.2.7",
        "SPF_RESULT": "pass",
    }
    return subprocess.run(
        [str(path)], input=sample("question.eml").replace(b"\r\n", b"\n"), env={**base, **env},
        capture_output=True, timeout=20,
    )  # fmt: skip


@pytest.mark.parametrize("program", ["hello.sh", "hello.php"])
def test_program_examples_log_a_line_or_just_succeed(program: str, tmp_path: Path) -> None:
    if program.endswith(".php") and shutil.which("php") is None:
        pytest.skip("php-cli is not installed")
    path = EXAMPLES / program
    assert os.access(path, os.X_OK)
    assert run_program(path, {}).returncode == 0
    log = tmp_path / "hello.log"
    result = run_program(path, {"CONF_LOG": str(log)})
    assert result.returncode == 0, result.stderr
    line = log.read_text()
    assert "queue=0123456789ABC" in line and "from=<alice@example.net>" in line and line.endswith("\n")
    if program.endswith(".php"):
        assert 'subject="Will the build be green today?"' in line
    unwritable = run_program(path, {"CONF_LOG": str(tmp_path / "missing" / "x.log")})
    assert unwritable.returncode == 75


def test_shell_example_runs_as_a_handler(server: Server) -> None:
    shutil.copy(EXAMPLES / "hello.sh", server.handlers / "hello")
    log = server.root / "hello.log"
    server.write_config(handler__hello={"log": str(log)})
    eml = server.root / "q.eml"
    eml.write_bytes(sample("question.eml"))
    result = server.run("deliver", "--from", "alice@example.net", "--to", "hello@example.org", str(eml))
    assert result.returncode == 0, result.stderr
    assert "to=<hello@example.org>" in log.read_text()
