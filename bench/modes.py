#!/usr/bin/env python3
"""Both modes next to min_smtpd, under the same spawner, in interleaved rounds.

Every server listens on loopback through systemd-socket-activate, as the shipped units
start it:

    min_smtpd  --accept --inetd  python3 -I -S bench/min_smtpd.py MAILDIR   (the floor)
    min_smtpd+fsync              the same with MIN_SMTPD_FSYNC=1: it fsyncs the message
                                 before its 250 (not its folder), as a 250 must mean
    inetd      --accept --inetd  python3 -I -S mailserver.py --config C     (mailserver.socket)
    serve                        python3 -I -S mailserver.py serve --config C
                                 (mailserver-serve.socket: Accept=no, LISTEN_FDS)

mailserver runs with every check on (SPF, DKIM, DMARC, ARC) against a DNS server on
127.0.0.1 (tests/dns_server.py), 2 KB DKIM-signed messages, and a program handler that
writes each message to a folder.  Figures, medians of interleaved rounds:

    refused     one session whose recipient is refused (connect to 221)
    accepted    one message end to end: connect -> the handler's output exists
                (min_smtpd: -> the file is in its Maildir; it checks nothing, runs nothing)
    4 clients   messages per second end to end, 4 clients at once
    CPU/msg     user+sys CPU per message of the server's whole process tree during the
                4-client rounds (utime+stime+cutime+cstime of the process
                systemd-socket-activate runs, /proc/PID/stat: every child and handler
                is reaped inside that tree), the figure that decides throughput on 2 cores

each as a ratio to min_smtpd measured in the same run.  With `--against DIR` a second
serve master runs another checkout's mailserver.py (`serve@against`) in the same rounds.
Needs systemd-socket-activate (Debian: systemd) and the dev requirements (dnslib, for the DNS server).

usage: bench/modes.py [ROUNDS] [--messages N] [--against DIR]
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from _common import PYTHON, ROOT, checked_config

sys.path.insert(0, os.path.join(ROOT, "tests"))
from dns_server import DNSTestServer  # noqa: E402  (test scaffolding, a real DNS server)

DKIM_DATA = os.path.join(ROOT, "tests", "data", "dkim")
SINK = """#!/bin/sh
out="{out}/$QUEUE_ID"
cat > "$out.tmp" && mv "$out.tmp" "$out.eml"
"""
SERVE = """\
[serve]
max_connections = 50
max_per_source = 50
idle_exit = 0
"""


def signed_message(n: int, size: int = 2048) -> bytes:
    import dkim

    head = (
        f"From: Alice <alice@sender.example>\r\nTo: sink@example.org\r\nSubject: bench {n}\r\n"
        f"Message-ID: <{n}.{time.time_ns()}@sender.example>\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\n"
    ).encode()
    line = b"x" * 76 + b"\r\n"
    message = head + line * max(1, (size - len(head)) // len(line))
    with open(os.path.join(DKIM_DATA, "test-rsa2048.pem"), "rb") as f:
        key = f.read()
    signature = dkim.sign(
        message, b"sel", b"sender.example", key, include_headers=[b"from", b"to", b"subject"]
    )
    return bytes(signature) + message


def zone() -> dict:
    with open(os.path.join(DKIM_DATA, "test-rsa2048.pub.b64")) as f:
        public = f.read().strip()
    return {
        "sender.example": [{"TXT": "v=spf1 ip4:127.0.0.1 -all"}],
        "sel._domainkey.sender.example": [{"TXT": f"v=DKIM1; k=rsa; p={public}"}],
        "_dmarc.sender.example": [{"TXT": "v=DMARC1; p=reject"}],
    }


class Server:
    """One systemd-socket-activate'd server on a free loopback port."""

    def __init__(
        self, name: str, argv: list[str], accept: bool, out: str, env: dict[str, str] | None = None
    ) -> None:
        self.name, self.out = name, out
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        flags = ["--accept", "--inetd"] if accept else []
        self.process = subprocess.Popen(
            ["systemd-socket-activate", *flags, "-l", f"127.0.0.1:{self.port}", *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if any(f":{self.port:04X} " in line and " 0A " in line for line in open("/proc/net/tcp")):
                return
            time.sleep(0.02)
        raise RuntimeError(f"{name} does not listen")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def talk(port: int, commands: list[bytes]) -> None:
    """One session: the greeting, then each command and its reply; raises on a bad code."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        reader = sock.makefile("rb")

        def reply() -> bytes:
            while True:
                line = reader.readline()
                if not line:
                    raise ConnectionError("closed")
                if line[3:4] != b"-":
                    return line

        if not reply().startswith(b"220"):
            raise RuntimeError("no greeting")
        for command in commands:
            sock.sendall(command)
            line = reply()
            if line[:1] not in (b"2", b"3") and not command.startswith(b"RCPT TO:<nobody"):
                raise RuntimeError(f"{command[:30]!r}: {line!r}")


def refused(server: Server) -> float:
    started = time.perf_counter()
    talk(server.port, [b"EHLO bench.example\r\n", b"MAIL FROM:<alice@sender.example>\r\n",
                       b"RCPT TO:<nobody@example.org>\r\n", b"QUIT\r\n"])  # fmt: skip
    return (time.perf_counter() - started) * 1000


def send(server: Server, message: bytes) -> None:
    rcpt = b"RCPT TO:<sink@example.org>\r\n" if server.name != "min_smtpd" else b"RCPT TO:<x@example.org>\r\n"
    talk(server.port, [b"EHLO bench.example\r\n", b"MAIL FROM:<alice@sender.example>\r\n", rcpt,
                       b"DATA\r\n", message + b".\r\n", b"QUIT\r\n"])  # fmt: skip


def files(folder: str) -> int:
    return sum(1 for name in os.listdir(folder) if not name.endswith(".tmp"))


def wait_for(folder: str, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while files(folder) < count:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{folder}: {files(folder)} of {count} messages arrived")
        time.sleep(0.0005)


def quiet(server: Server, timeout: float = 10) -> None:
    """Wait until SERVER runs no session (no live child of the process it was started as):
    what one measurement leaves running (a delivery's last fsync, an exit) must not be
    billed to the next server's."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = False
        for name in os.listdir("/proc"):
            try:
                with open(f"/proc/{name}/stat") as f:
                    state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
            except (OSError, ValueError):
                continue
            if int(ppid) == server.process.pid and state != "Z":
                busy = True
                break
        if not busy:
            return
        time.sleep(0.005)


def accepted(server: Server, message: bytes) -> float:
    before = files(server.out)
    started = time.perf_counter()
    send(server, message)
    wait_for(server.out, before + 1)
    return (time.perf_counter() - started) * 1000


def tree_cpu(pid: int) -> float:
    """Seconds of CPU of PID and its reaped descendants (utime, stime, cutime, cstime)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def throughput(server: Server, messages: list[bytes], clients: int = 4) -> float:
    before = files(server.out)
    todo = list(messages)
    lock = threading.Lock()

    def client() -> None:
        while True:
            with lock:
                if not todo:
                    return
                message = todo.pop()
            send(server, message)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wait_for(server.out, before + len(messages))
    return len(messages) / (time.perf_counter() - started)


def cpu_per_message(server: Server, messages: list[bytes]) -> tuple[float, float]:
    """(msgs/s with 4 clients, ms of CPU per message of the server's tree)."""
    cpu = tree_cpu(server.process.pid)
    rate = throughput(server, messages)
    quiet(server)
    time.sleep(0.05)  # the last children reaped
    return rate, (tree_cpu(server.process.pid) - cpu) * 1000 / len(messages)


def main() -> int:
    args = sys.argv[1:]
    count = 40
    if "--messages" in args:
        at = args.index("--messages")
        count = int(args[at + 1])
        del args[at : at + 2]
    against = ""
    if "--against" in args:
        at = args.index("--against")
        against = os.path.abspath(args[at + 1])
        del args[at : at + 2]
    rounds = int(args[0]) if args else 15
    if not shutil.which("systemd-socket-activate"):
        print("bench/modes.py needs systemd-socket-activate (apt-get install systemd)", file=sys.stderr)
        return 69
    root = tempfile.mkdtemp(prefix="mailserver-modes-")
    dns = DNSTestServer()
    dns.serve(zone())
    servers: dict[str, Server] = {}
    try:
        host, port = dns.address
        names = ["inetd", "serve"] + (["serve@against"] if against else [])
        for name in names:
            os.makedirs(f"{root}/out-{name}")
            os.makedirs(f"{root}/{name}/handlers")
            with open(f"{root}/{name}/handlers/sink", "w") as f:
                f.write(SINK.format(out=f"{root}/out-{name}"))
            os.chmod(f"{root}/{name}/handlers/sink", 0o755)
            with open(f"{root}/{name}/config.ini", "w") as f:
                f.write(checked_config(f"{host}:{port}") + SERVE)  # paths relative to it
        script = os.path.join(ROOT, "mailserver.py")
        for maildir in ("Maildir", "Maildir-fsync"):
            for sub in ("tmp", "new", "cur"):
                os.makedirs(f"{root}/{maildir}/{sub}")
        floor_argv = [PYTHON, "-I", "-S", os.path.join(ROOT, "bench", "min_smtpd.py"), f"{root}/Maildir"]
        servers["min_smtpd"] = Server("min_smtpd", floor_argv, True, f"{root}/Maildir/new")
        servers["min_smtpd+fsync"] = Server(
            "min_smtpd+fsync", [*floor_argv[:-1], f"{root}/Maildir-fsync"], True, f"{root}/Maildir-fsync/new",
            env={"MIN_SMTPD_FSYNC": "1"},
        )  # fmt: skip
        servers["inetd"] = Server(
            "inetd",
            [PYTHON, "-I", "-S", script, "--config", f"{root}/inetd/config.ini"],
            True,
            f"{root}/out-inetd",
        )
        servers["serve"] = Server(
            "serve", [PYTHON, "-I", "-S", script, "serve", "--config", f"{root}/serve/config.ini"], False,
            f"{root}/out-serve",
        )  # fmt: skip
        if against:
            theirs = os.path.join(against, "mailserver.py")
            config = f"{root}/serve@against/config.ini"
            servers["serve@against"] = Server(
                "serve@against", [PYTHON, "-I", "-S", theirs, "serve", "--config", config], False,
                f"{root}/out-serve@against",
            )  # fmt: skip
        messages = [signed_message(n) for n in range(count)]
        # warm up: page cache, __pycache__, the serve master's first start, the PSL cache
        for server in servers.values():
            refused(server)
            send(server, messages[0])
        samples: dict[tuple[str, str], list[float]] = {}
        for n in range(rounds):
            for name, server in servers.items():
                samples.setdefault((name, "refused"), []).append(refused(server))
                quiet(server)
                samples.setdefault((name, "accepted"), []).append(accepted(server, messages[n % count]))
                quiet(server)
        rates: dict[str, list[float]] = {}
        cpus: dict[str, list[float]] = {}
        for _ in range(3):  # interleaved too, medians of three
            for name, server in servers.items():
                rate, cpu = cpu_per_message(server, messages)
                rates.setdefault(name, []).append(rate)
                cpus.setdefault(name, []).append(cpu)
        print(f"{rounds} interleaved rounds, medians; all checks on against a loopback DNS server;")
        print(f"2 KB DKIM-signed messages; end to end = until the handler's output exists ({PYTHON})")
        print(f"{'':15} {'refused session':>21} {'accepted, end to end':>26} {'4 clients, msgs/s':>24}"
              f" {'CPU/msg':>20}")  # fmt: skip
        floor_refused = statistics.median(samples[("min_smtpd", "refused")])
        floor_accepted = statistics.median(samples[("min_smtpd", "accepted")])
        floor_rate = statistics.median(rates["min_smtpd"])
        floor_cpu = statistics.median(cpus["min_smtpd"])
        for name in servers:
            r = statistics.median(samples[(name, "refused")])
            a = statistics.median(samples[(name, "accepted")])
            t = statistics.median(rates[name])
            c = statistics.median(cpus[name])
            print(
                f"{name:15} {r:5.1f} ms {r / floor_refused:6.2f}x     {a:8.1f} ms {a / floor_accepted:6.2f}x"
                f"     {t:8.1f} {t / floor_rate:6.2f}x     {c:6.1f} ms {c / floor_cpu:5.2f}x"
            )
        return 0
    finally:
        for server in servers.values():
            server.stop()
        dns.close()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
