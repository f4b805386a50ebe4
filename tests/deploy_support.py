"""Helpers of the deployment tests (test_xinetd, test_socket_activation, test_starttls).

They build a throwaway installation (config.ini, spool, a handler program that records
what it is given), run the real launchers (xinetd from a config generated from the
shipped xinetd/mailserver file; systemd-socket-activate) on a free loopback port, and
talk SMTP to them with a client that records every line it reads, so a test can assert
that nothing but SMTP replies ever reaches the wire.

Only 127.0.0.1 is used.  Every process started here is ended by its id when the test
ends: the launcher itself, and the per-connection mailserver.py processes it spawned
(read from the launcher's log), after giving their handlers time to finish.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import MAILSERVER, free_port, wait_until  # noqa: F401  (re-exported for the deploy tests)
from conftest import ROOT as REPO

SHIPPED_XINETD = REPO / "xinetd" / "mailserver"
SHIPPED_XINETD_SERVE = REPO / "xinetd" / "mailserver-serve"
INSTALLED_SCRIPT = "/opt/mailserver/mailserver.py"  # as written in the shipped files
INSTALLED_CONFIG = "/etc/mailserver/config.ini"
INSTALLED_VENV_BIN = "/opt/mailserver/.venv/bin"
PYTHON = sys.executable  # the venv's interpreter when the suite runs from .venv
REPLY_LINE = re.compile(rb"^\d{3}[ -]")
HOSTNAME = "mx.test.example"
DOMAIN = "example.org"


def require_program(name: str, package: str) -> str:
    """The program's path; skip when it is missing, but fail under CI (CI installs it)."""
    path = shutil.which(name)
    if path:
        return path
    message = f"{name} not found: apt-get install {package}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def is_listening(port: int) -> bool:
    """A TCP socket in LISTEN state on PORT (IPv4 or IPv6), without connecting to it:
    a probe connection would start a mailserver process."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[1].rsplit(":", 1)[1] == f"{port:04X}" and fields[3] == "0A":
                return True
    return False


# -- a throwaway installation ------------------------------------------------------

RECORDER = """#!{python} -IS
# Test handler: records its environment and the message it was given, atomically.
import json, os, sys
{noise}
data = sys.stdin.buffer.read()
env = os.environ
name = "{delivered}/%s.%s.%d" % (env.get("QUEUE_ID", "none"), env.get("RECIPIENT", ""), os.getpid())
with open(name + ".tmp", "w") as f:
    json.dump({{"env": dict(os.environ), "message": data.decode("utf-8", "replace")}}, f)
os.rename(name + ".tmp", name + ".json")
"""

NOISE = """sys.stdout.write("NOISE from a handler on stdout\\n"); sys.stdout.flush()
sys.stderr.write("NOISE from a handler on stderr\\n"); sys.stderr.flush()
os.write(1, b"NOISE on fd 1\\n"); os.write(2, b"NOISE on fd 2\\n")"""


@dataclass
class Delivery:
    env: dict[str, str]
    message: str


@dataclass
class Installation:
    root: Path
    config: Path
    spool: Path
    handlers: Path
    delivered: Path
    log: Path

    def deliveries(self) -> list[Delivery]:
        found = []
        for path in sorted(self.delivered.glob("*.json")):
            data = json.loads(path.read_text())
            found.append(Delivery(env=data["env"], message=data["message"]))
        return found

    def wait_for_deliveries(self, count: int, timeout: float = 20.0) -> list[Delivery]:
        """Handlers run after the final 250, so a test waits for what they record."""
        try:
            wait_until(
                lambda: len(list(self.delivered.glob("*.json"))) >= count,
                timeout,
                f"{count} deliveries in {self.delivered}",
            )
        except AssertionError as e:
            raise AssertionError(f"{e}\n{self.diagnostics()}") from None
        return self.deliveries()

    def diagnostics(self) -> str:
        parts = []
        for path in (self.log, self.root / "xinetd.log", self.root / "activate.log"):
            if path.exists():
                parts.append(f"--- {path.name}:\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)


def make_installation(root: Path, *, certificate: str = "", key: str = "", extra: str = "") -> Installation:
    """config.ini, spool and handlers under ROOT: handlers `sink` (records) and `noisy`
    (writes junk to its stdout and stderr, then records)."""
    root.mkdir(parents=True, exist_ok=True)
    spool, handlers, delivered = root / "spool", root / "handlers", root / "delivered"
    for folder in (spool, handlers, delivered, root / "home"):
        folder.mkdir(exist_ok=True)
    for name, noise in (("sink", ""), ("noisy", NOISE)):
        program = handlers / name
        program.write_text(RECORDER.format(python=PYTHON, delivered=delivered, noise=noise))
        program.chmod(0o755)
    log = root / "mailserver.log"
    config = root / "config.ini"
    config.write_text(
        f"""[server]
hostname = {HOSTNAME}
domains = {DOMAIN}
spool = {spool}
log = {log}
log_level = debug
command_timeout = 30
data_timeout = 30

[tls]
certificate = {certificate}
key = {key}

[handlers]
dir = {handlers}
timeout = 30

[checks]
spf = no
dkim = no
dmarc = no
arc = no

[reply]
transport = outbox
outbox = {root / "outbox"}
require_auth = no
{extra}"""
    )
    return Installation(root, config, spool, handlers, delivered, log)


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """A self-signed P-256 certificate for HOSTNAME and 127.0.0.1, made with the openssl CLI."""
    openssl = require_program("openssl", "openssl")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "2",
            "-subj",
            f"/CN={HOSTNAME}",
            "-addext",
            f"subjectAltName=DNS:{HOSTNAME},IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return cert, key


def client_context(cafile: Path) -> ssl.SSLContext:
    """A client context that really verifies our test certificate."""
    return ssl.create_default_context(cafile=str(cafile))


# -- launchers -----------------------------------------------------------------------


class Launcher:
    """A running inetd-like launcher; stop() ends it and the sessions it started."""

    def __init__(
        self,
        process: subprocess.Popen[bytes],
        port: int,
        log: Path,
        pid_pattern: str,
        config: Path | None = None,
    ) -> None:
        self.process, self.port, self.log, self.pid_pattern = process, port, log, pid_pattern
        self.config = config  # serve mode: its forked sessions carry this config in their command line

    def children(self) -> list[int]:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            text = ""
        pids = [int(pid) for pid in re.findall(self.pid_pattern, text)]
        return pids + (processes_with(self.config) if self.config else [])

    def masters(self) -> list[int]:
        """Serve mode: the running master(s): ours, with no parent of ours (forks have one)."""
        ours = processes_with(self.config) if self.config else []
        parents = {pid: _parent(pid) for pid in ours}
        return [pid for pid, parent in parents.items() if parent and parent not in ours]  # 0: gone meanwhile

    def sessions(self) -> list[int]:
        """Serve mode: the forked sessions running now."""
        ours = processes_with(self.config) if self.config else []
        return [pid for pid in ours if _parent(pid) in ours]

    def stop(self, grace: float = 15.0) -> None:
        """End the launcher, give the sessions (and their handlers) GRACE seconds to end by
        themselves, then kill those still running: each by its own id."""
        for master in self.masters():  # serve mode: stop accepting, let sessions finish
            try:
                os.kill(master, signal.SIGTERM)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        deadline = time.monotonic() + grace
        for pid in self.children():
            while _is_our_session(pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _is_our_session(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass


def processes_with(config: Path | None) -> list[int]:
    """Live mailserver.py processes whose command line names CONFIG."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if str(config).encode() in cmdline and _is_our_session(int(entry.name)):
                found.append(int(entry.name))
    return found


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _is_our_session(pid: int) -> bool:
    """PID is alive and still one of our mailserver.py processes (not a reused pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return str(MAILSERVER).encode() in cmdline and state != "Z"


def parse_xinetd(text: str) -> tuple[str, dict[str, str]]:
    """(service name, {attribute: value}) of a one-service xinetd file; comments skipped."""
    name, attributes = "", {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or line in ("{", "}"):
            continue
        if line.startswith("service "):
            name = line.split(None, 1)[1].strip()
            continue
        key, _, value = line.partition("=")
        attributes[key.strip()] = value.strip()
    return name, attributes


def xinetd_test_config(shipped: str, *, port: int, config: Path, root: Path) -> str:
    """The shipped service file made runnable here, everything else as shipped: a loopback
    high port, the current user, this interpreter and this checkout's mailserver.py."""
    user = pwd.getpwuid(os.geteuid()).pw_name
    group = grp.getgrgid(os.getegid()).gr_name
    rewrite = {
        "port": str(port),
        "user": user,
        "group": group,
        "server": PYTHON,
        "log_type": f"FILE {root / 'xinetd.log'}",
    }
    out = []
    for raw in shipped.splitlines():
        line = raw.strip()
        if line.startswith("#") or not line:
            continue
        if line.startswith("service "):
            out.append("service mailserver-test")
            continue
        if line == "{":
            out += ["{", "\ttype = UNLISTED", "\tbind = 127.0.0.1"]
            continue
        key, sep, value = line.partition("=")
        key = key.strip()
        if sep and key in ("user", "group", "groups") and os.geteuid() != 0:
            continue  # xinetd can switch users only when it runs as root
        if sep and key in rewrite:
            value = rewrite[key]
        elif sep and key == "server_args":
            value = value.replace(INSTALLED_SCRIPT, str(MAILSERVER)).replace(INSTALLED_CONFIG, str(config))
        elif sep and key == "env":
            value = re.sub(r"HOME=\S+", f"HOME={root / 'home'}", value)
            value = value.replace(INSTALLED_VENV_BIN, os.path.dirname(PYTHON))
        out.append(f"\t{key} = {value.strip()}" if sep else line)
    return "\n".join(out) + "\n"


def start_xinetd(
    installation: Installation, *, config: Path | None = None, shipped: Path = SHIPPED_XINETD
) -> Launcher:
    """Real xinetd in the foreground (-dontfork) with the generated config (from SHIPPED)."""
    xinetd = require_program("xinetd", "xinetd")
    root = installation.root
    port = free_port()
    conf = root / "xinetd.conf"
    conf.write_text(
        xinetd_test_config(shipped.read_text(), port=port, config=config or installation.config, root=root)
    )
    log = root / "xinetd.log"
    with open(root / "xinetd.err", "wb") as errors:
        process = subprocess.Popen(
            [xinetd, "-dontfork", "-f", str(conf), "-pidfile", str(root / "xinetd.pid")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    launcher = Launcher(process, port, log, r"START: \S+ pid=(\d+)", config or installation.config)
    try:
        wait_until(lambda: is_listening(port) or process.poll() is not None, 10, "xinetd to listen")
        if process.poll() is not None:
            raise AssertionError(
                "xinetd exited: " + (root / "xinetd.err").read_text() + installation.diagnostics()
            )
    except BaseException:
        launcher.stop()
        raise
    return launcher


def start_socket_activate(
    installation: Installation, *, address: str = "127.0.0.1", accept: bool = True
) -> Launcher:
    """systemd-socket-activate --accept --inetd: what mailserver.socket + mailserver@.service
    do, one process per connection with the connection on stdin/stdout.  ACCEPT false:
    what mailserver-serve.socket + .service do (Accept=no, LISTEN_FDS), `serve`."""
    activate = require_program("systemd-socket-activate", "systemd")
    port = free_port()
    listen = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    log = installation.root / "activate.log"
    with open(log, "wb") as errors:
        process = subprocess.Popen(
            [
                activate,
                *(["--accept", "--inetd"] if accept else []),
                "-l",
                listen,
                PYTHON,
                "-I",
                "-S",
                str(MAILSERVER),
                *([] if accept else ["serve"]),
                "--config",
                str(installation.config),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=errors,
        )
    launcher = Launcher(process, port, log, r"as PID (\d+)", installation.config)
    try:
        wait_until(lambda: is_listening(port) or process.poll() is not None, 10, "systemd-socket-activate")
        if process.poll() is not None:
            raise AssertionError("systemd-socket-activate exited: " + log.read_text())
    except BaseException:
        launcher.stop()
        raise
    return launcher


# -- a client that records the wire ---------------------------------------------------


@dataclass
class Wire:
    """A line-level SMTP client: every line read from the server is kept in `lines`."""

    port: int
    timeout: float = 20.0
    lines: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock: socket.socket = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        self.buffer = b""

    def _readline(self) -> bytes:
        while b"\n" not in self.buffer:
            data = self.sock.recv(65536)
            if not data:
                line, self.buffer = self.buffer, b""
                if line:
                    self.lines.append(line)
                return line
            self.buffer += data
        line, _, self.buffer = self.buffer.partition(b"\n")
        self.lines.append(line + b"\n")
        return line + b"\n"

    def reply(self) -> bytes:
        """One whole (possibly multi-line) reply."""
        text = b""
        while True:
            line = self._readline()
            text += line
            if not line or line[3:4] != b"-":
                return text

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, line: str) -> bytes:
        self.send(line.encode() + b"\r\n")
        return self.reply()

    def starttls(self, context: ssl.SSLContext) -> None:
        assert not self.buffer, "plaintext left unread before the handshake"
        self.sock = context.wrap_socket(self.sock, server_hostname=HOSTNAME)

    def read_to_end(self) -> bytes:
        """Everything up to the server's close (after QUIT nothing more may come)."""
        rest = b""
        while True:
            line = self._readline()
            if not line:
                return rest
            rest += line

    def close(self) -> None:
        self.sock.close()

    def assert_only_smtp(self) -> None:
        bad = [line for line in self.lines if not REPLY_LINE.match(line)]
        assert not bad, f"non-SMTP lines on the wire: {bad!r}"


def send_message(wire: Wire, sender: str, recipient: str, body: str) -> bytes:
    """One transaction on an EHLO'd Wire; the final reply."""
    assert wire.command(f"MAIL FROM:<{sender}>").startswith(b"250"), wire.lines
    assert wire.command(f"RCPT TO:<{recipient}>").startswith(b"250"), wire.lines
    assert wire.command("DATA").startswith(b"354"), wire.lines
    wire.send(body.replace("\n", "\r\n").encode() + b"\r\n.\r\n")
    return wire.reply()


def swaks_server_lines(output: str) -> list[str]:
    """The server's lines in a swaks transcript: '<-  ' plaintext, '<~  ' over TLS, with a
    '*' marking error replies ('<** ', '<~* ')."""
    return [line[4:] for line in output.splitlines() if line[:1] == "<" and line[1:2] in ("-", "~", "*")]
