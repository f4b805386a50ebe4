"""`mailserver.py serve`: a warm master that forks a fresh process per connection.

The master imports the whole stack once (the session, spool, checks with dkimpy, pyspf and
the DNS resolver, the public suffix list, the email parser), then accepts connections and
forks one child per connection.  The child puts the socket on its stdin/stdout and runs
exactly the inetd-mode code (`inetd.serve`): it reads config.ini and the handlers folder
afresh, speaks SMTP, delivers, and exits.  Nothing of one connection survives into the
next, and the master never reads a byte from a client; Postfix's master, Dovecot and
sshd work the same way.

Where the listening socket comes from, in this order:

    systemd Accept=no   LISTEN_PID/LISTEN_FDS, the socket on fd 3 (mailserver-serve.socket)
    xinetd wait = yes   the listening socket is stdin (xinetd/mailserver-serve)
    --listen HOST:PORT  bound here (development, or a plain service manager)

Limits are the master's (`[serve]`): over `max_connections` sessions at once, or
`max_per_source` from one client address, a connection gets `421 4.7.0` from the master
and is closed without a fork.  With a socket from systemd or xinetd, the master exits
after `idle_exit` seconds without a connection (and with no session running): the next
connection starts it again, so an idle host pays nothing.

Signals: SIGTERM and SIGINT stop accepting, let running sessions finish, then exit;
SIGHUP is ignored (config and handlers are read by every child anyway).  Under xinetd
the master also stops when xinetd goes away.  A child's
crash is reaped and logged; the master goes on.  If the master is killed (even
SIGKILL) the children finish their sessions: they need nothing from it.

This module neither speaks SMTP nor touches the spool; the children do.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import socket
import sys
import time

from . import log
from .config import Config, ConfigError, load
from .exits import EX_CONFIG, EX_OK, EX_SOFTWARE, EX_USAGE
from .smtp.replies import render

SD_LISTEN_FDS_START = 3
POLL_SECONDS = 1.0  # how often the master looks at idle_exit while nothing happens
#: Wall-clock bound of one session, handlers included (RuntimeMaxSec= of mailserver@.service):
#: the session's own timeouts bound a client, this bounds everything else.
SESSION_LIMIT = 1800.0


def warm_up(config: Config) -> None:
    """Import, once in the master, what every child would otherwise import again."""
    import email.parser  # noqa: F401  (the Envelope's parser)
    import email.policy  # noqa: F401
    import json  # noqa: F401
    import subprocess  # noqa: F401

    from . import checks, envelope, inetd, policy, spool  # noqa: F401
    from .checks import authres, dkim, dmarc, orgdomain, resolver, spf  # noqa: F401
    from .delivery import deliver, queue, router, runner  # noqa: F401
    from .smtp import session, tls  # noqa: F401

    if config.keeps_client_memory:
        import fcntl  # noqa: F401

        from . import clients, dnsbl  # noqa: F401
    if config.checks.rspamd or config.checks.clamd:  # the scanners' clients, when asked
        import http.client  # noqa: F401

        from .checks import scanners  # noqa: F401
    try:  # the libraries themselves, and the public suffix list
        import dkim as dkimpy  # noqa: F401
        import spf as pyspf  # noqa: F401

        orgdomain.use_cache_dir(os.path.join(config.server.spool, "cache"))  # where children look
        orgdomain.organizational_domain("warm.example")
        rehearse(config)
    except Exception:  # a child will report a broken library the way inetd mode does
        log.exception("serve: warming the check stack failed")


#: A message for the rehearsal: a From, a DKIM-Signature whose key is REHEARSAL_ZONE's (the
#: signature does not match it: verification runs to the RSA step, and fails).
REHEARSAL = (
    b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=warm.example; s=s; t=1;\r\n"
    b"\th=from:to:subject; bh=CIxsj7zgG9SRVRUDIT5CWzGC+CZ37MpX/EiBPnwJkHM=; b=AAAA\r\n"
    b"From: Warm <warm@warm.example>\r\nTo: postmaster@warm.example\r\nSubject: warm\r\n\r\nwarm\r\n"
)
#: What the rehearsal's resolver answers (from memory; any other question is over budget).
REHEARSAL_ZONE = {
    "warm.example": b"v=spf1 ip4:192.0.2.1 -all",
    "s._domainkey.warm.example": b"v=DKIM1; k=rsa; p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQCmyPgi/zDqN9"
    b"3+4CbWWFYgSdH5X8BTTD1tQpz0LSK94cAYFJ3n1AHg57mQHK0vSg9xRLzEohQFqnUWhKb5tfkvZakUEsargMRJSxn56VYKitRDL4"
    b"/wZxriJBsv22Wlc/9vI9/IwcnbvQQeEM4dpQaTUAWl8RhUaj5gtrIQ3VNxswIDAQAB",
    "_dmarc.warm.example": b"v=DMARC1; p=none",
}


def rehearse(config: Config) -> None:
    """Run the checks once on REHEARSAL against REHEARSAL_ZONE (no query leaves the host):
    what they compile, import and specialize on first use (regular expressions, dkimpy's
    and pyspf's parsers, header canonicalization, the RSA step) is then done in the
    master, once, not in every child."""
    from .checks import authenticate, dnswire
    from .checks.forged import remove_forged_results  # noqa: F401  (imported by every delivery)
    from .checks.resolver import Budget, Resolver, Response

    class Offline(Resolver):
        def query(self, name: str | bytes, rdtype: str) -> Response:
            owner = dnswire.plain(self._qname(name))
            if rdtype == "TXT" and owner.lower() in REHEARSAL_ZONE:
                return Response([dnswire.Record(owner, "TXT", (REHEARSAL_ZONE[owner.lower()],))])
            return super().query(name, rdtype)

    authenticate(
        REHEARSAL,
        client_ip="192.0.2.1",
        helo="warm.example",
        mail_from="warm@warm.example",
        settings=config.checks,
        authserv_id=config.server.hostname,
        resolver=Offline([("127.0.0.1", 9)], 0.01, Budget(0, 0, 0)),
    )


def inherited_socket() -> tuple[socket.socket, str] | None:
    """The listening socket systemd (LISTEN_FDS) or xinetd (stdin) handed us, and whose."""
    if os.environ.get("LISTEN_PID") == str(os.getpid()) and os.environ.get("LISTEN_FDS", "0") != "0":
        for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):  # not for the children
            os.environ.pop(name, None)
        return socket.socket(fileno=SD_LISTEN_FDS_START), "systemd"
    try:
        sock = socket.socket(fileno=os.dup(0))
    except OSError:
        return None
    try:
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            return sock, "xinetd"
    except OSError:
        pass
    sock.detach()
    return None


def bind(address: str) -> socket.socket:
    """A listening socket on HOST:PORT ([v6]:PORT for IPv6)."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--listen {address!r}: expected HOST:PORT")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(128)
    return sock


def client_of(conn: socket.socket) -> str:
    try:
        peer = conn.getpeername()
    except OSError:
        return ""
    addr = str(peer[0]) if isinstance(peer, tuple) else ""
    return addr[len("::ffff:") :] if addr.startswith("::ffff:") and "." in addr else addr


class Master:
    """The accept loop: limits, forks, reaping, signals.  One per `serve`."""

    def __init__(self, config: Config, config_path: str, listener: socket.socket, source: str) -> None:
        self.config = config
        self.config_path = config_path
        self.listener = listener
        self.source = source  # systemd | xinetd | listen
        self.children: dict[int, str] = {}  # pid -> client address
        self.started: dict[int, float] = {}  # pid -> when its session began
        self.stopping = False
        self.last_activity = time.monotonic()
        self.parent = os.getppid()  # xinetd: when it goes, so do we (it owns port 25)
        self.wakeup_r, self.wakeup_w = os.pipe()
        os.set_blocking(self.wakeup_r, False)
        os.set_blocking(self.wakeup_w, False)

    # -- signals ----------------------------------------------------------------
    def install_signals(self) -> None:
        signal.set_wakeup_fd(self.wakeup_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes the poll; reaped in the loop
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    def _stop(self, signum: int, frame: object) -> None:
        self.stopping = True

    # -- the loop -------------------------------------------------------------------
    def run(self) -> int:
        settings = self.config.serve
        log.info(
            "serve: master %d listening (%s socket), max_connections=%d max_per_source=%d idle_exit=%g",
            os.getpid(),
            self.source,
            settings.max_connections,
            settings.max_per_source,
            settings.idle_exit if self.source != "listen" else 0,
        )
        self.listener.setblocking(False)
        poller = select.poll()
        poller.register(self.listener.fileno(), select.POLLIN)
        poller.register(self.wakeup_r, select.POLLIN)
        while not self.stopping:
            try:
                events = poller.poll(POLL_SECONDS * 1000)
            except InterruptedError:  # pragma: no cover - PEP 475 retries poll
                events = []
            self._drain_wakeup()
            self.reap()
            self.kill_overdue()
            if self.source == "xinetd" and os.getppid() != self.parent:
                log.info("serve: xinetd is gone, stopping")
                break
            if self.stopping:
                break
            if any(fd == self.listener.fileno() for fd, _ in events):
                self.accept_all()
            elif self._idle_expired():
                log.info(
                    "serve: no connection for %g s, exiting (the next one starts us again)",
                    settings.idle_exit,
                )
                return self.finish()
        log.info("serve: stopping, %d session(s) still running", len(self.children))
        return self.finish()

    def _idle_expired(self) -> bool:
        idle = self.config.serve.idle_exit
        if self.source == "listen" or not idle or self.children:
            return False
        return time.monotonic() - self.last_activity >= idle

    def _drain_wakeup(self) -> None:
        try:
            while os.read(self.wakeup_r, 512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def accept_all(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE, ECONNABORTED...: log, go on with the next one
                if e.errno not in (errno.ECONNABORTED, errno.EPROTO):
                    log.error("serve: accept failed: %s", e)
                return
            self.last_activity = time.monotonic()
            try:
                self.admit(conn)
            finally:
                conn.close()

    def admit(self, conn: socket.socket) -> None:
        """Fork a child for CONN, or refuse it with 421 when a limit is reached."""
        settings = self.config.serve
        client = client_of(conn)
        hostname = self.config.server.hostname
        self.reap()  # a session that just ended must not count
        if len(self.children) >= settings.max_connections:
            log.warning(
                "serve: refused %s: %d sessions running (max_connections)", client, len(self.children)
            )
            self.refuse(conn, render("too_busy", host=hostname))
            return
        same = sum(1 for addr in self.children.values() if addr == client)
        if client and same >= settings.max_per_source:
            log.warning("serve: refused %s: %d sessions from it (max_per_source)", client, same)
            self.refuse(conn, render("too_many_from_you", host=hostname))
            return
        try:
            pid = os.fork()
        except OSError as e:
            log.error("serve: cannot fork for %s: %s", client, e)
            self.refuse(conn, render("unavailable", host=hostname))
            return
        if pid == 0:
            self.child(conn)  # never returns
        self.children[pid] = client
        self.started[pid] = time.monotonic()

    @staticmethod
    def refuse(conn: socket.socket, reply: bytes) -> None:
        """One 421 line without waiting for a client that does not read, then close."""
        try:
            conn.setblocking(False)
            conn.send(reply)
            conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def child(self, conn: socket.socket) -> None:
        """In the forked child: become an inetd-mode process on CONN, then exit."""
        status = EX_SOFTWARE
        try:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
                signal.signal(sig, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            os.close(self.wakeup_r)
            os.close(self.wakeup_w)
            self.listener.close()
            conn.setblocking(True)
            os.dup2(conn.fileno(), 0)
            os.dup2(conn.fileno(), 1)
            conn.close()
            from .inetd import serve as serve_connection

            status = serve_connection(self.config_path)
        except BaseException:
            try:
                log.exception("serve: child %d failed", os.getpid())
            except BaseException:
                pass
        finally:
            os._exit(status)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            client = self.children.pop(pid, "?")
            self.started.pop(pid, None)
            if os.WIFSIGNALED(status):
                log.error("serve: session %d (%s) killed by signal %d", pid, client, os.WTERMSIG(status))
            elif os.WIFEXITED(status) and os.WEXITSTATUS(status) not in (EX_OK, EX_CONFIG):
                log.warning("serve: session %d (%s) exited with %d", pid, client, os.WEXITSTATUS(status))

    def kill_overdue(self) -> None:
        now = time.monotonic()
        for pid, began in list(self.started.items()):
            if now - began > SESSION_LIMIT:
                client = self.children.get(pid)
                log.error("serve: session %d (%s) ran over %g s, killed", pid, client, SESSION_LIMIT)
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.started.pop(pid, None)

    def finish(self) -> int:
        """Stop accepting; wait for the running sessions; exit status of the master."""
        self.listener.close()
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends us at once
        while self.children:
            try:
                pid, _ = os.waitpid(-1, 0)
            except ChildProcessError:
                break
            self.children.pop(pid, None)
        log.info("serve: master %d stopped", os.getpid())
        return EX_OK


def main(config_path: str, listen: str | None) -> int:
    """Run the master; the exit status."""
    log.protect_stderr(sockets_only=True)  # under xinetd, stdout and stderr are the listening socket
    try:
        config = load(config_path)
    except ConfigError as e:
        log.setup("syslog")
        log.error("%s", e)
        print(f"mailserver: {e}", file=sys.stderr)
        return EX_CONFIG
    log.setup(config.server.log, config.server.log_level)
    found = inherited_socket() if listen is None else None
    if found is None and listen is None:
        print(
            "mailserver serve: no listening socket: give --listen HOST:PORT, or run under systemd "
            "(Accept=no) or xinetd (wait = yes)",
            file=sys.stderr,
        )
        return EX_USAGE
    if found is not None:
        listener, source = found
    else:
        try:
            listener, source = bind(listen or ""), "listen"
        except (OSError, ValueError) as e:
            print(
                f"mailserver serve: cannot listen on {listen}: {getattr(e, 'strerror', None) or e}",
                file=sys.stderr,
            )
            return EX_USAGE
        print(
            f"mailserver: serving on {listen}, one forked process per connection (Ctrl-C stops)",
            file=sys.stderr,
        )
    if source == "xinetd":  # stdin and stdout were the socket: keep only our duplicate of it
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)
        os.close(null)
    warm_up(config)
    import gc

    gc.collect()
    gc.freeze()  # what the master built stays in pages the children share (copy on write)
    master = Master(config, config_path, listener, source)
    master.install_signals()
    return master.run()
