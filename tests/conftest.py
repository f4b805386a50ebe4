"""Shared fixtures and helpers: a config in a temporary folder, handlers, one SMTP dialogue
builder, and ways to talk SMTP to the server in-process, as a subprocess over pipes, and
over TCP through `listen`.

The folders are the kinds of test: unit/ (in-process, fast), suites/ (the RFC conformance
suites), e2e/ (the whole path over real processes and sockets), deploy/ (real xinetd and
systemd-socket-activate).  Each test is marked with its folder's name: `make test-fast`
runs unit and suites.  pyproject's pytest `pythonpath` puts the checkout and tests/ on
sys.path, so `import inbound` and `from conftest import ...` work from every folder.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from conftest_dns import check_settings, dns_server, dns_server_process_wide  # noqa: F401  (fixtures)
from scanner_daemons import clamd, rspamd  # noqa: F401  (fixtures: the real daemons, started once)

ROOT = Path(__file__).resolve().parent.parent
MAILSERVER = ROOT / "mailserver.py"
TEST_DATA = Path(__file__).resolve().parent / "data"
KINDS = ("unit", "suites", "e2e", "deploy")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with the kind its folder names (unit, suites, e2e, deploy)."""
    for item in items:
        kind = Path(str(item.fspath)).parent.name
        if kind in KINDS:
            item.add_marker(getattr(pytest.mark, kind))


# -- one SMTP dialogue ---------------------------------------------------------------------

EHLO = b"EHLO client.example\r\n"
MAIL = b"MAIL FROM:<alice@sender.example>\r\n"
RCPT = b"RCPT TO:<sink@example.org>\r\n"
MESSAGE = b"From: Alice <alice@sender.example>\r\nTo: sink@example.org\r\nSubject: hi\r\n\r\nHello.\r\n"


def dialogue(
    *recipients: str,
    sender: str = "alice@sender.example",
    body: bytes = MESSAGE,
    helo: str = "client.example",
    quit: bool = True,
) -> bytes:
    """What a client sends for one message: EHLO, MAIL, RCPT each (default sink@), DATA."""
    rcpts = b"".join(b"RCPT TO:<%s>\r\n" % r.encode() for r in recipients or ("sink@example.org",))
    text = b"EHLO %s\r\nMAIL FROM:<%s>\r\n" % (helo.encode(), sender.encode())
    return text + rcpts + b"DATA\r\n" + body + b".\r\n" + (b"QUIT\r\n" if quit else b"")


BASE_CONFIG = """\
[server]
hostname = mx.test.example
domains = example.org, example.net
spool = spool
log = server.log
log_level = debug
command_timeout = 30
data_timeout = 60

[handlers]
dir = handlers
timeout = 20

[checks]
spf = no
dkim = no
dmarc = no
arc = no

[reply]
transport = outbox
outbox = outbox
require_auth = no
"""

# A program handler that keeps what it got: the message and its environment.
SINK = """\
#!/bin/sh
out="$(dirname "$0")/../got/$QUEUE_ID.$(basename "$0")"
mkdir -p "$(dirname "$out")"
env > "$out.env"
cat > "$out.part" && mv "$out.part" "$out.eml"
"""


@dataclass
class Server:
    """A server folder: config.ini, handlers/, spool/; and helpers to look inside."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.ini"

    @property
    def handlers(self) -> Path:
        return self.root / "handlers"

    @property
    def spool(self) -> Path:
        return self.root / "spool"

    def write_config(self, text: str = BASE_CONFIG, **sections: dict[str, str]) -> None:
        """BASE_CONFIG with keys overridden: write_config(server={"max_recipients": "2"})."""
        import configparser

        parser = configparser.ConfigParser(interpolation=None)
        parser.read_string(text)
        for section, values in sections.items():
            section = section.replace("__", ".")
            if not parser.has_section(section):
                parser.add_section(section)
            for key, value in values.items():
                parser.set(section, key, value)
        with open(self.config, "w") as f:
            parser.write(f)

    def add_program(self, name: str, script: str = SINK) -> Path:
        path = self.handlers / name
        path.write_text(textwrap.dedent(script))
        path.chmod(0o755)
        return path

    def add_python(self, name: str, source: str) -> Path:
        path = self.handlers / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        return path

    def got(self, handler: str = "sink") -> list[tuple[bytes, dict[str, str]]]:
        """What a SINK handler received: (message, environment) per run, oldest first."""
        folder = self.root / "got"
        runs = []
        for eml in sorted(folder.glob(f"*.{handler}.eml")) if folder.exists() else []:
            env_text = eml.with_suffix(".env").read_text()
            env = dict(line.split("=", 1) for line in env_text.splitlines() if "=" in line)
            runs.append((eml.read_bytes(), env))
        return runs

    def ids(self, folder: str) -> list[str]:
        path = self.spool / folder
        return sorted(os.listdir(path)) if path.exists() else []

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text() if path.exists() else ""

    def run(
        self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        """mailserver.py ARGS --config <ours>, as a subprocess over pipes."""
        full_env = {k: v for k, v in os.environ.items() if not k.startswith(("REMOTE_", "TCPREMOTE"))}
        full_env.update(env or {})
        return subprocess.run(
            [sys.executable, str(MAILSERVER), *args, "--config", str(self.config)],
            input=input,
            capture_output=True,
            env=full_env,
            timeout=timeout,
        )

    def smtp(
        self, data: bytes, remote_addr: str = "192.0.2.10", env: dict[str, str] | None = None, **kw: object
    ) -> bytes:
        """One inetd-mode session over pipes: DATA is everything the client sends."""
        full_env = {"REMOTE_ADDR": remote_addr} if remote_addr else {}
        full_env.update(env or {})
        result = self.run(input=data, env=full_env, **kw)  # type: ignore[arg-type]
        assert result.stderr == b"", result.stderr
        return result.stdout


@pytest.fixture
def server(tmp_path: Path) -> Server:
    """A fresh server folder with the base config and a `sink` program handler."""
    srv = Server(tmp_path)
    srv.handlers.mkdir()
    srv.spool.mkdir()  # as an installation has it (`check` insists)
    srv.write_config()
    srv.add_program("sink")
    return srv


def replies(output: bytes) -> list[bytes]:
    """The final line of each reply ("250-..." continuation lines folded away)."""
    return [line for line in output.split(b"\r\n") if line and line[3:4] != b"-"]


def codes(output: bytes) -> list[int]:
    return [int(line[:3]) for line in replies(output)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture
def listening(server: Server) -> Iterator[int]:
    """`mailserver.py listen` on a free loopback port; yields the port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(MAILSERVER), "listen", "--port", str(port), "--config", str(server.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port)
        yield port
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def wait_until(predicate, timeout: float = 10.0, what: str = "", interval: float = 0.02):  # type: ignore[no-untyped-def]
    """Poll PREDICATE until it is true; its last value.  With WHAT, a time-out fails the test."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            break
        time.sleep(interval)
    if not value and what:
        raise AssertionError(f"timed out after {timeout} s waiting for {what}")
    return value


# -- the SMTP session in this process ---------------------------------------------------------


def talk(
    server: Server,
    data: bytes,
    client: Any = None,
    policy: object = None,
    read_size: int | None = None,
) -> tuple[bytes, Any]:
    """One session in-process over files: DATA in, everything the server wrote out.

    CLIENT: a Client (default 192.0.2.1); POLICY: another policy than the router's;
    READ_SIZE: octets per read, to put a read boundary everywhere."""
    import tempfile

    from inbound.config import load
    from inbound.inetd import build_session
    from inbound.smtp.channel import Channel
    from inbound.smtp.session import Client

    config = load(str(server.config))
    with tempfile.TemporaryFile() as inp, tempfile.TemporaryFile() as out:
        inp.write(data)
        inp.seek(0)
        channel = Channel(inp.fileno(), out.fileno())
        if read_size:
            channel.READ_SIZE = read_size
        session, _ = build_session(config, channel, client or Client("192.0.2.1"))
        if policy is not None:
            session.policy = policy
        try:
            session.run()
        finally:
            for incoming in session.accepted:
                incoming.release()
        out.seek(0)
        return out.read(), session


# -- smtp_sink: a real SMTP server on 127.0.0.1 ---------------------------------------------


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes
    tls: bool
    login: str


@dataclass
class Sink:
    """What the sink got; set rcpt_reply/data_reply to make it refuse ("451 ...", "550 ...")."""

    port: int = 0
    messages: list[Received] = field(default_factory=list)
    rcpt_reply: str | None = None
    data_reply: str | None = None

    async def handle_RCPT(self, server: Any, session: Any, env: Any, address: str, options: Any) -> str:  # noqa: N802
        if self.rcpt_reply:
            return self.rcpt_reply
        env.rcpt_tos.append(address)
        return "250 2.1.5 Ok"

    async def handle_DATA(self, server: Any, session: Any, env: Any) -> str:  # noqa: N802
        if self.data_reply:
            return self.data_reply
        login = session.auth_data.decode() if session.authenticated and session.auth_data else ""
        self.messages.append(
            Received(env.mail_from, list(env.rcpt_tos), env.content, session.ssl is not None, login)
        )
        return "250 2.0.0 Ok: queued as SINK1"


def start_sink(**smtp_options: Any) -> tuple[Sink, Any]:
    from aiosmtpd.controller import Controller

    sink = Sink(port=free_port())
    controller = Controller(sink, hostname="127.0.0.1", port=sink.port, ready_timeout=10, **smtp_options)
    controller.start()
    return sink, controller


@pytest.fixture
def smtp_sink() -> Iterator[Sink]:
    """An aiosmtpd server on 127.0.0.1 that keeps every message it is given."""
    sink, controller = start_sink()
    try:
        yield sink
    finally:
        controller.stop()
