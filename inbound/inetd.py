"""One connection in inetd mode: wire the stages together and run them in order.

This is the composition root of a connection (`serve` forks into the same code).

    connection -> SMTP session -> spool -> (after the client is released) checks and handlers

stdin/stdout are the client (a socket under inetd/xinetd/systemd, pipes in tests).  Nothing
but SMTP replies is ever written to them: if stderr is the same socket it is pointed at
/dev/null first, and logs go to syslog or a file.  A broken config gets `421 4.3.0` and
exit 78.  After the session, stdin and stdout are closed (the client is free to go) and
the accepted messages are delivered in this same process.

The client's address (SPEC §3): getpeername() of stdin when it is a socket, else
$REMOTE_ADDR/$REMOTE_PORT (systemd Accept=yes), $TCPREMOTEIP/$TCPREMOTEPORT (ucspi-tcp),
$REMOTE_HOST (xinetd); else unknown, never assumed to be 127.0.0.1.
"""

from __future__ import annotations

import os
import stat
import time

from . import log
from .config import Config, ConfigError, load
from .exits import EX_CONFIG, EX_OK
from .smtp.channel import Channel
from .smtp.replies import render
from .smtp.session import Client, Session

TYPE_CHECKING = False
if TYPE_CHECKING:  # names for type checkers only; not imported at start-up
    from .clients import ClientMemory
    from .delivery.router import Router
    from .policy import Policy
    from .spool import Incoming, Spool


def private_client_fds() -> tuple[int, int]:
    """Take the client off fds 0 and 1: the session talks over private duplicates, and 0/1
    become /dev/null, so nothing else (a handler's print(), a library) can reach the wire."""
    rfd, wfd = os.dup(0), os.dup(1)
    null = os.open(os.devnull, os.O_RDWR)
    os.dup2(null, 0)
    os.dup2(null, 1)
    os.close(null)
    return rfd, wfd


def _unmapped(addr: str) -> str:
    return addr[len("::ffff:") :] if addr.startswith("::ffff:") and "." in addr else addr


def client_address(fd: int = 0, environ: dict[str, str] | None = None) -> Client:
    """The client: peer of FD when it is a socket, else the spawner's environment.

    xinetd's REMOTE_HOST is the client's *address* (mapped ::ffff:a.b.c.d with IPv6), never
    a name; only ucspi-tcp's TCPREMOTEHOST is a name.
    """
    environ = os.environ if environ is None else environ  # type: ignore[assignment]
    assert environ is not None
    name = environ.get("TCPREMOTEHOST", "")
    try:
        is_socket = stat.S_ISSOCK(os.fstat(fd).st_mode)
    except OSError:
        is_socket = False
    if is_socket:
        import _socket  # the C module: socket.py costs 6 ms of start-up

        try:
            sock = _socket.socket(fileno=os.dup(fd))
            try:
                peer = sock.getpeername()
            finally:
                sock.close()
            if isinstance(peer, tuple) and peer:
                return Client(_unmapped(str(peer[0])), str(peer[1]), name)
        except OSError:
            pass
    addr = environ.get("REMOTE_ADDR") or environ.get("TCPREMOTEIP") or environ.get("REMOTE_HOST") or ""
    port = environ.get("REMOTE_PORT") or environ.get("TCPREMOTEPORT") or ""
    return Client(_unmapped(addr), port, name)


def release_client(*channels: Channel) -> None:
    """Close every descriptor of the connection so the client is free while handlers run."""
    for channel in channels:
        channel.close()


def serve(config_path: str) -> int:
    """inetd mode: one SMTP session on stdin/stdout, then deliver what was accepted."""
    started = time.monotonic()
    rfd, wfd = private_client_fds()
    channel = Channel(rfd, wfd)
    try:
        config = load(config_path)
    except Exception as e:  # ConfigError, or a bug in validation: the client hears 421 either way
        from .config import configured_log

        log.setup(configured_log(config_path))  # where the operator looks, syslog else
        log.error("%s", e if isinstance(e, ConfigError) else f"{config_path}: {type(e).__name__}: {e}")
        channel.write_timeout = 10
        try:
            channel.write(render("config_error"))
        except Exception:
            pass
        return EX_CONFIG
    log.setup(config.server.log, config.server.log_level)
    channel.write_timeout = config.server.command_timeout
    client = client_address(rfd)
    memory = None
    if config.keeps_client_memory:
        from .clients import ClientMemory

        memory = ClientMemory(config.server.spool)
        refusal = turned_away(config, memory, channel, client)
        if refusal:
            log.summary(
                client=client.addr or "unknown", reply=refusal, duration=f"{time.monotonic() - started:.3f}"
            )
            try:
                channel.write((refusal + "\r\n").encode())
            except Exception:
                pass
            return EX_OK
    if config.checks.dnsbl:
        from .dnsbl import lookup

        client.dnsbl = lookup(config, client.addr, memory)
    try:
        session, policy = build_session(config, channel, client)
        summary = session.run()
    except Exception:  # the connection's one boundary: 421, a log line, never a traceback
        log.exception("session failed")
        try:
            channel.write(render("unavailable", host=config.server.hostname))
        except Exception:
            pass
        return EX_OK
    log.summary(
        client=client.addr or "unknown",
        helo=summary.helo,
        sender=",".join(summary.senders),
        recipients=",".join(summary.recipients),
        refused=",".join(summary.refused),
        size=summary.size,
        queue_ids=",".join(summary.queue_ids),
        tls=summary.tls,
        reply=" | ".join(summary.outcomes) or summary.reply,  # each message's final reply
        duration=f"{time.monotonic() - started:.3f}",
    )
    if memory is not None and session.misbehaved and config.turns_clients_away:
        memory.punish(client.addr, session.misbehaved)
    release_client(session.channel, channel)  # the TLS channel (if any) and the plain one
    if session.accepted:
        deliver_accepted(config, policy.router, policy.spool, session.accepted)
    return EX_OK


def turned_away(config: Config, memory: ClientMemory, channel: Channel, client: Client) -> str:
    """The reply that ends this connection before its session ("" to go on): a client
    under a penalty or over `[limits] rate`, or one that talks before the banner."""
    host = config.server.hostname
    if not config.turns_clients_away:
        return ""  # the memory is only the DNSBL cache
    why = memory.penalty(client.addr)
    if why:
        return render("penalized", host=host, why=why).decode().strip()
    count = memory.count_connection(client.addr, config.limits.rate_window, keep=config.limits.rate + 1)
    if config.limits.rate and count > config.limits.rate:
        return render("rate_limited", host=host).decode().strip()
    if config.limits.pregreet and talks_first(channel, config.limits.pregreet):
        memory.punish(client.addr, "talked before the greeting")
        return render("pregreet", host=host).decode().strip()
    return ""


def talks_first(channel: Channel, seconds: float) -> bool:
    """Silence for SECONDS before the banner (RFC 5321 4.3.1: the client waits for it);
    True when the client sent something in that time."""
    import select

    poller = select.poll()
    poller.register(channel.rfd, select.POLLIN)
    deadline = time.monotonic() + seconds
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        if poller.poll(left * 1000):
            early = channel.read_available(deadline)  # b"" when the client just hung up
            channel.unread(early)
            return bool(early)


def build_session(config: Config, channel: Channel, client: Client) -> tuple[Session, Policy]:
    from .delivery.router import Router
    from .policy import Policy
    from .spool import Spool

    spool = Spool(config.server.spool)
    policy = Policy(config, Router(config), spool, client)
    start_tls = None
    if config.tls.certificate and channel.is_socket():
        from .smtp.tls import make_starttls

        start_tls = make_starttls(config.tls.certificate, config.tls.key, channel)
    session = Session(
        channel,
        hostname=config.server.hostname,
        max_message_size=config.server.max_message_size,
        max_recipients=config.server.max_recipients,
        command_timeout=config.server.command_timeout,
        data_timeout=config.server.data_timeout,
        policy=policy,
        spool=spool,
        client=client,
        start_tls=start_tls,
    )
    return session, policy


def deliver_accepted(config: Config, router: Router, spool: Spool, accepted: list[Incoming]) -> None:
    """Run the handlers of each message accepted in this session (handler errors are contained)."""
    from .delivery.queue import Queue

    queue = Queue(config, router, spool)
    for incoming in accepted:
        try:
            queue.deliver_safely(incoming.queue_id)
        finally:
            incoming.release()
