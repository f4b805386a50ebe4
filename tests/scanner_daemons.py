"""Real rspamd and clamd from Debian, started on loopback for the tests, and a misbehaving
stand-in for the hostile cases (a scanner that hangs, resets, or answers garbage).

rspamd runs with a minimal config of its own: one normal worker on 127.0.0.1, the
default actions (reject at 15), DNS pointed at a port where nothing answers and a
three-line TLD list, so it asks nothing of the internet and starts in under a second.
Its GTUBE test is built in: the GTUBE string gets action `reject`.  clamd runs with a
signature database of one line, the EICAR test signature (no download).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
EICAR = rb"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
EICAR_NAME = "Eicar-Test-Signature.UNOFFICIAL"  # clamd's name for a signature of ours

RSPAMD_CONF = """\
options {{
  pidfile = "{root}/rspamd.pid";
  url_tld = "{root}/tld.dat";
  dns {{ nameserver = ["127.0.0.1:9"]; timeout = 0.2s; retransmits = 1; }}
}}
logging {{ type = "file"; filename = "{root}/rspamd.log"; level = "warning"; }}
worker "normal" {{ bind_socket = "127.0.0.1:{port}"; count = 1; }}
actions {{ reject = 15; add_header = 6; greylist = 4; }}
"""

CLAMD_CONF = """\
Foreground yes
LocalSocket {root}/clamd.sock
TCPSocket {port}
TCPAddr 127.0.0.1
DatabaseDirectory {root}
LogFile {root}/clamd.log
PidFile {root}/clamd.pid
TemporaryDirectory {root}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check, process: subprocess.Popen[bytes], what: str, log: Path, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{what} exited {process.returncode}: {log.read_text() if log.exists() else ''}"
            )
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not start within {timeout} s")


class Daemon:
    def __init__(self, process: subprocess.Popen[bytes], address: str, tcp: str = "") -> None:
        self.process = process
        self.address = address  # rspamd: its URL; clamd: its unix socket
        self.tcp = tcp  # clamd: HOST:PORT

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def binary(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if not path:
        pytest.skip(
            f"{name} is not installed (Debian: apt-get install {name.replace('clamd', 'clamav-daemon')})"
        )
    return path


@pytest.fixture(scope="session")
def rspamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A real rspamd's normal worker on 127.0.0.1 (its URL in .address)."""
    exe = binary("rspamd")
    root = tmp_path_factory.mktemp("rspamd")
    (root / "tld.dat").write_text("org\ncom\nexample\n")
    port = free_port()
    (root / "rspamd.conf").write_text(RSPAMD_CONF.format(root=root, port=port))
    args = [exe, "-f", "-c", str(root / "rspamd.conf")]
    if os.geteuid() == 0:
        args.insert(2, "-i")  # rspamd refuses root unless told it is on purpose (a test box)
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def up() -> bool:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /ping HTTP/1.0\r\n\r\n")
            return b"pong" in s.recv(4096)

    wait_for(up, process, "rspamd", root / "rspamd.log")
    daemon = Daemon(process, f"http://127.0.0.1:{port}")
    yield daemon
    daemon.stop()


@pytest.fixture(scope="session")
def clamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A real clamd knowing one signature, EICAR's (unix socket in .address, TCP in .tcp)."""
    exe = binary("clamd")
    root = tmp_path_factory.mktemp("clamd")
    (root / "eicar.ndb").write_text(f"Eicar-Test-Signature:0:*:{EICAR.hex()}\n")
    port = free_port()
    (root / "clamd.conf").write_text(CLAMD_CONF.format(root=root, port=port))
    process = subprocess.Popen(
        [exe, "-c", str(root / "clamd.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    def up() -> bool:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(1)
            s.connect(str(root / "clamd.sock"))
            s.sendall(b"zPING\0")
            return s.recv(16) == b"PONG\0"

    wait_for(up, process, "clamd", root / "clamd.log")
    daemon = Daemon(process, str(root / "clamd.sock"), f"127.0.0.1:{port}")
    yield daemon
    daemon.stop()


class Misbehaving:
    """A TCP server on 127.0.0.1 that reads what it is sent and then, by MODE, hangs
    (answers nothing), resets the connection, or answers GARBAGE and closes."""

    def __init__(self, mode: str, garbage: bytes = b"") -> None:
        self.mode = mode
        self.garbage = garbage
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = int(self.listener.getsockname()[1])
        self.connections: list[socket.socket] = []
        self.closed = threading.Event()
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(conn)
            threading.Thread(target=self.answer, args=(conn,), daemon=True).start()

    def answer(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            conn.recv(65536)  # the start of the request
            if self.mode == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                conn.close()
            elif self.mode == "garbage":
                conn.sendall(self.garbage)
                conn.close()
            else:  # hang: keep reading, never answer
                while self.closed.wait(0.05) is False:
                    try:
                        if not conn.recv(65536):
                            break
                    except TimeoutError:
                        continue
        except OSError:
            pass

    def close(self) -> None:
        self.closed.set()
        self.listener.close()
        for conn in self.connections:
            conn.close()
