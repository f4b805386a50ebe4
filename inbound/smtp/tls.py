"""STARTTLS (RFC 3207): the server side of the TLS handshake and a Channel that reads and
writes through it.

`make_starttls()` is called once per connection.  It returns None, and STARTTLS is not
offered, when there is nothing to offer: no certificate or key configured, a certificate
or key that cannot be read or loaded (logged as one warning line: a broken certificate
must never stop plaintext mail), or an input that is not a socket (pipes in tests and in
`deliver`).  Otherwise it returns the `start_tls(channel)` callable the session calls
after its "220 2.0.0 Ready to start TLS": it wraps an `ssl.SSLSocket` around a duplicate
of the channel's socket, completes the handshake within a deadline and returns a
TLSChannel, or raises `Closed` when the handshake fails or times out.

The session, not this module, discards plaintext pipelined after STARTTLS and forgets
the EHLO state.  TLS 1.2 is the minimum, with AEAD suites only (TLS12_CIPHERS); no
client certificates are asked for; session tickets are off (every connection is a new
process, so nothing could resume them).

`ssl` is imported here only, so connections without TLS never pay for it.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
from collections.abc import Callable

from .. import log
from .channel import Channel, Closed, Timeout

#: TLS 1.2 suites: the "intermediate" configuration of Mozilla's server-side TLS guide
#: (forward secrecy, AEAD only: no CBC, so no LUCKY13); TLS 1.3 suites are OpenSSL's.
TLS12_CIPHERS = ":".join(
    (
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-CHACHA20-POLY1305",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-CHACHA20-POLY1305",
    )
)
HANDSHAKE_TIMEOUT = 60.0  # seconds for the whole TLS handshake
WRITE_TIMEOUT = 300.0  # seconds one reply may wait for a client that does not read
CLOSE_NOTIFY_TIMEOUT = 0.0  # close(): send our close_notify, do not wait for the client's


class TLSChannel(Channel):
    """A Channel over an established ssl.SSLSocket; reads honour the caller's deadline."""

    def __init__(self, sslsock: ssl.SSLSocket) -> None:
        fd = sslsock.fileno()
        super().__init__(fd, fd)
        self.sslsock = sslsock
        self.tls_version = sslsock.version()
        cipher = sslsock.cipher()
        self.tls_cipher = cipher[0] if cipher else None

    def _recv(self, deadline: float) -> bytes:
        # Decrypted bytes that OpenSSL already holds (pending()) are returned at once; a
        # poll() on the descriptor would not see them.  Otherwise the socket timeout bounds
        # the whole read, partial TLS records included (CPython's ssl module waits for
        # readiness against one deadline per call).
        left = deadline - time.monotonic()
        if left <= 0 and not self.sslsock.pending():
            raise Timeout
        self.sslsock.settimeout(max(left, 0.001))
        try:
            return self.sslsock.recv(self.READ_SIZE)
        except TimeoutError:
            raise Timeout from None
        except ssl.SSLZeroReturnError:  # close_notify: a clean end of input
            return b""
        except (ssl.SSLError, OSError) as e:
            log.info("TLS read failed: %s", e)
            return b""

    def write(self, data: bytes) -> None:
        self.sslsock.settimeout(WRITE_TIMEOUT)
        try:
            self.sslsock.sendall(data)
        except (OSError, ValueError):  # ssl.SSLError and timeouts are OSErrors
            raise Closed from None

    def close(self) -> None:
        """Send close_notify (without waiting for the client's), then shut the connection
        down for every descriptor that shares it (stdin, stdout), so the client sees the
        end at once even while this process goes on to run handlers."""
        self.sslsock.settimeout(CLOSE_NOTIFY_TIMEOUT)
        try:
            self.sslsock.unwrap()
        except (OSError, ValueError):
            pass
        try:
            self.sslsock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sslsock.close()


def make_context(certificate: str, key: str) -> ssl.SSLContext:
    """A server context: TLS 1.2+, our certificate chain, no tickets, no renegotiation.
    Raises OSError or ssl.SSLError when the files cannot be read or do not match."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.options |= ssl.OP_NO_TICKET | ssl.OP_NO_RENEGOTIATION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.num_tickets = 0  # TLS 1.3 tickets: nothing can resume them in a new process
    context.set_ciphers(TLS12_CIPHERS)
    context.load_cert_chain(certificate, key)
    return context


def make_starttls(
    certificate: str, key: str, channel: Channel, *, handshake_timeout: float = HANDSHAKE_TIMEOUT
) -> Callable[[Channel], Channel] | None:
    """The session's start_tls callable, or None when STARTTLS is not to be offered."""
    if not certificate or not key or not channel.is_socket():
        return None
    try:
        context = make_context(certificate, key)
    except (OSError, ssl.SSLError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        log.warning("STARTTLS not offered: cannot load certificate %s / key %s: %s", certificate, key, reason)
        return None

    def start_tls(plain: Channel) -> Channel:
        return handshake(context, plain, handshake_timeout)

    return start_tls


def handshake(context: ssl.SSLContext, plain: Channel, timeout: float) -> TLSChannel:
    """Server-side handshake on a duplicate of the channel's socket, bounded by `timeout`
    seconds in all; any failure closes the duplicate and raises Closed."""
    try:
        sock = socket.socket(fileno=os.dup(plain.rfd))
    except OSError as e:
        log.error("STARTTLS: input is not a usable socket: %s", e)
        raise Closed from None
    sock.settimeout(timeout)
    try:
        sslsock = context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
    except (OSError, ValueError) as e:
        sock.close()
        log.info("TLS handshake failed: %s", e)
        raise Closed from None
    try:
        sslsock.do_handshake()  # one deadline for the whole handshake (the socket timeout)
    except (OSError, ValueError) as e:
        sslsock.close()
        what = "timed out" if isinstance(e, TimeoutError) else f"failed: {e}"
        log.info("TLS handshake %s", what)
        raise Closed from None
    return TLSChannel(sslsock)
