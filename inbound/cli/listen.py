"""`mailserver.py listen`: a development stand-in for inetd.

Listens on HOST:PORT (default 127.0.0.1:2525) and starts one `mailserver.py` process per
connection with the connected socket as its stdin and stdout, exactly as inetd does, so
what you try here is what runs on port 25.  Ctrl-C stops it cleanly.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys


def listen(host: str, port: int, config_path: str) -> int:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    script = os.path.join(root, "mailserver.py")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = socket.socket(family, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind((host, port))
    except OSError as e:
        print(f"mailserver: cannot listen on {host}:{port}: {e.strerror}", file=sys.stderr)
        return 69
    server.listen(64)
    server.settimeout(0.5)
    argv = [sys.executable, "-I", "-S", script, "--config", os.path.abspath(config_path)]
    print(
        f"mailserver: listening on {host}:{port}, one process per connection (Ctrl-C stops)",
        file=sys.stderr,
        flush=True,
    )
    children: list[subprocess.Popen[bytes]] = []
    # Ctrl-C and SIGTERM stop us, whatever was inherited (a background job starts with
    # SIGINT ignored, and then Python would never raise KeyboardInterrupt).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while True:
            children = [c for c in children if c.poll() is None]
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.setblocking(True)
                # Its own session: Ctrl-C in the terminal stops the listener, not the sessions.
                child = subprocess.Popen(
                    argv, stdin=conn.fileno(), stdout=conn.fileno(), close_fds=True, start_new_session=True
                )
                children.append(child)
    except KeyboardInterrupt:
        print("\nmailserver: stopping", file=sys.stderr)
    finally:
        server.close()
        for child in children:  # sessions under way get a few seconds to finish, then SIGTERM
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.terminate()
                child.wait()
    return 0
