"""STARTTLS (RFC 3207): inbound/tls.py on its own over a socketpair, then through real
xinetd with a certificate made by the openssl CLI: smtplib and swaks switch to TLS and
the Received header says ESMTPS; commands pipelined behind STARTTLS are never executed
after the handshake; a broken certificate leaves plaintext mail working."""

from __future__ import annotations

import os
import smtplib
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest
from deploy_support import (
    DOMAIN,
    HOSTNAME,
    REPLY_LINE,
    REPO,
    Installation,
    Launcher,
    Wire,
    client_context,
    make_certificate,
    make_installation,
    require_program,
    send_message,
    start_xinetd,
    swaks_server_lines,
)

from inbound import log
from inbound.smtp import tls
from inbound.smtp.channel import Channel, Closed, Timeout

MESSAGE = "From: Alice <alice@sender.example>\nTo: sink@example.org\nSubject: {subject}\n\n{body}\n"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(cert.pem, key.pem): self-signed for mx.test.example and 127.0.0.1."""
    return make_certificate(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def warnings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The lines tls.py logs as warnings."""
    lines: list[str] = []
    monkeypatch.setattr(log, "warning", lambda message, *args: lines.append(message % args))
    return lines


@pytest.fixture
def pair() -> Iterator[tuple[Channel, socket.socket]]:
    """(server Channel on a connected socket, the client's socket)."""
    server, client = socket.socketpair()
    try:
        yield Channel(server.fileno(), server.fileno()), client
    finally:
        server.close()
        client.close()


def client_handshake(
    client: socket.socket, context: ssl.SSLContext, pool: ThreadPoolExecutor
) -> Future[ssl.SSLSocket]:
    """The client's side of the handshake, in a thread (the server's runs in the test)."""
    client.settimeout(10)
    return pool.submit(context.wrap_socket, client, server_hostname=HOSTNAME)


def start(certificate: tuple[Path, Path], channel: Channel, **kw: float) -> Callable[[Channel], Channel]:
    start_tls = tls.make_starttls(str(certificate[0]), str(certificate[1]), channel, **kw)
    assert start_tls is not None
    return start_tls


# -- make_starttls: when STARTTLS is offered -------------------------------------------------


def test_starttls_is_not_offered_without_a_certificate(pair: tuple[Channel, socket.socket]) -> None:
    channel, _ = pair
    assert tls.make_starttls("", "", channel) is None


def test_starttls_is_not_offered_when_stdin_is_a_pipe(certificate: tuple[Path, Path]) -> None:
    read, write = os.pipe()
    try:
        assert tls.make_starttls(str(certificate[0]), str(certificate[1]), Channel(read, write)) is None
    finally:
        os.close(read)
        os.close(write)


def test_an_unreadable_certificate_is_logged_once_and_not_offered(
    pair: tuple[Channel, socket.socket], certificate: tuple[Path, Path], warnings: list[str], tmp_path: Path
) -> None:
    missing = tmp_path / "missing.pem"
    assert tls.make_starttls(str(missing), str(certificate[1]), pair[0]) is None
    assert len(warnings) == 1 and str(missing) in warnings[0] and "STARTTLS not offered" in warnings[0]


def test_an_invalid_certificate_is_logged_once_and_not_offered(
    pair: tuple[Channel, socket.socket], certificate: tuple[Path, Path], warnings: list[str], tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n")
    assert tls.make_starttls(str(garbage), str(certificate[1]), pair[0]) is None
    assert len(warnings) == 1 and str(garbage) in warnings[0]


def test_a_key_that_does_not_match_the_certificate_is_not_offered(
    pair: tuple[Channel, socket.socket], certificate: tuple[Path, Path], warnings: list[str], tmp_path: Path
) -> None:
    _, other_key = make_certificate(tmp_path)
    assert tls.make_starttls(str(certificate[0]), str(other_key), pair[0]) is None
    assert len(warnings) == 1


def test_the_context_allows_tls_1_2_and_newer_only(certificate: tuple[Path, Path]) -> None:
    context = tls.make_context(str(certificate[0]), str(certificate[1]))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.options & ssl.OP_NO_RENEGOTIATION


def test_importing_the_server_does_not_import_ssl() -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); import inbound, inbound.inetd, inbound.smtp.session;"
        " print('ssl' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, timeout=30
    )
    assert result.stdout.strip() == "False", result.stderr


# -- the handshake and the TLS channel --------------------------------------------------------


def test_the_handshake_gives_a_tls_channel_that_reads_and_writes(
    pair: tuple[Channel, socket.socket], certificate: tuple[Path, Path]
) -> None:
    channel, client = pair
    start_tls = start(certificate, channel)
    with ThreadPoolExecutor(1) as pool:
        future = client_handshake(client, client_context(certificate[0]), pool)
        secure = start_tls(channel)
        tls_client = future.result(10)
    assert isinstance(secure, Channel) and secure is not channel
    assert secure.tls_version == tls_client.version() == "TLSv1.3"
    assert secure.tls_cipher == tls_client.cipher()[0]
    tls_client.sendall(b"EHLO client.example\r\nNOOP\r\n")
    deadline = time.monotonic() + 5
    assert secure.read_line(512, deadline) == b"EHLO client.example\r\n"
    assert secure.read_line(512, deadline) == b"NOOP\r\n"
    secure.write(b"250 2.0.0 OK\r\n")
    assert tls_client.recv(100) == b"250 2.0.0 OK\r\n"
    tls_client.close()
    assert secure.read_line(512, time.monotonic() + 5) == b""  # end of input


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_a_client_older_than_tls_1_2_is_refused(
    pair: tuple[Channel, socket.socket], certificate: tuple[Path, Path]
) -> None:
    channel, client = pair
    start_tls = start(certificate, channel)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    old.minimum_version = old.maximum_version = ssl.TLSVersion.TLSv1_1
    try:
        old.set_ciphers("DEFAULT:@SECLEVEL=0")
    except ssl.SSLError:
        pytest.skip("this OpenSSL cannot even offer TLS 1.1")
    with ThreadPoolExecutor(1) as pool:
        future = client_handshake(client, old, pool)
        with pytest.raises(Closed):
            start_tls(channel)
        with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
            future.result(10)  # the server said so with a protocol_version alert


def test_tls_1_2_offers_no_cbc_suites_and_keeps_aead_ones_for_old_senders(
    pair: tuple[Channel, socket.socket], certificate: tuple[Path, Path]
) -> None:
    context = tls.make_context(str(certificate[0]), str(certificate[1]))
    tls12 = [c["name"] for c in context.get_ciphers() if c["protocol"] == "TLSv1.2"]
    assert tls12 and all("GCM" in name or "CHACHA20" in name for name in tls12), tls12
    channel, client = pair
    start_tls = start(certificate, channel)
    cbc = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    cbc.check_hostname, cbc.verify_mode = False, ssl.CERT_NONE
    cbc.maximum_version = ssl.TLSVersion.TLSv1_2
    cbc.set_ciphers("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256")  # CBC only
    with ThreadPoolExecutor(1) as pool:
        future = client_handshake(client, cbc, pool)
        with pytest.raises(Closed):
            start_tls(channel)
        with pytest.raises(ssl.SSLError):
            future.result(10)


def test_a_tls_1_2_client_with_an_aead_suite_gets_through(
    pair: tuple[Channel, socket.socket], certificate: tuple[Path, Path]
) -> None:
    channel, client = pair
    start_tls = start(certificate, channel)
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.check_hostname, old.verify_mode = False, ssl.CERT_NONE
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    with ThreadPoolExecutor(1) as pool:
        future = client_handshake(client, old, pool)
        secure = start_tls(channel)
        cipher = secure.tls_cipher or ""
        assert secure.tls_version == "TLSv1.2" and ("GCM" in cipher or "CHACHA20" in cipher)
        future.result(10).close()


def test_a_handshake_that_never_comes_ends_at_the_deadline(
    pair: tuple[Channel, socket.socket], certificate: tuple[Path, Path]
) -> None:
    channel, _client = pair  # the client connects and then says nothing
    start_tls = start(certificate, channel, handshake_timeout=0.5)
    began = time.monotonic()
    with pytest.raises(Closed):
        start_tls(channel)
    assert 0.4 < time.monotonic() - began < 3


def test_a_handshake_dripped_byte_by_byte_still_ends_at_the_deadline(
    pair: tuple[Channel, socket.socket], certificate: tuple[Path, Path]
) -> None:
    channel, client = pair
    start_tls = start(certificate, channel, handshake_timeout=1.0)
    stop = threading.Event()

    def drip() -> None:  # the start of a ClientHello, one byte every 0.1 s, forever
        for byte in b"\x16\x03\x01\x02\x00" + b"\x01" * 600:
            if stop.wait(0.1):
                return
            try:
                client.send(bytes([byte]))
            except OSError:
                return

    thread = threading.Thread(target=drip)
    thread.start()
    began = time.monotonic()
    try:
        with pytest.raises(Closed):
            start_tls(channel)
    finally:
        stop.set()
        thread.join()
    assert time.monotonic() - began < 3


def test_plaintext_instead_of_a_client_hello_closes_the_connection(
    pair: tuple[Channel, socket.socket], certificate: tuple[Path, Path]
) -> None:
    channel, client = pair
    start_tls = start(certificate, channel)
    client.sendall(b"RSET\r\nMAIL FROM:<evil@example.net>\r\n")
    with pytest.raises(Closed):
        start_tls(channel)


@pytest.fixture
def secured(
    pair: tuple[Channel, socket.socket], certificate: tuple[Path, Path]
) -> Iterator[tuple[Channel, ssl.SSLSocket]]:
    """(server TLS channel, client TLS socket) after a completed handshake."""
    channel, client = pair
    start_tls = start(certificate, channel)
    with ThreadPoolExecutor(1) as pool:
        future = client_handshake(client, client_context(certificate[0]), pool)
        secure = start_tls(channel)
        tls_client = future.result(10)
    yield secure, tls_client
    tls_client.close()


def test_a_read_returns_what_ssl_has_buffered_without_waiting_for_the_socket(
    secured: tuple[Channel, ssl.SSLSocket],
) -> None:
    secure, tls_client = secured
    secure.READ_SIZE = 4  # one TLS record, read 4 bytes at a time: the rest stays inside SSL
    tls_client.sendall(b"EHLO client.example\r\n")
    began = time.monotonic()
    assert secure.read_line(512, time.monotonic() + 5) == b"EHLO client.example\r\n"
    assert time.monotonic() - began < 1  # not stuck in poll() with the data already decrypted


def test_a_read_with_nothing_to_read_ends_at_the_deadline(secured: tuple[Channel, ssl.SSLSocket]) -> None:
    secure, _ = secured
    began = time.monotonic()
    with pytest.raises(Timeout):
        secure.read_line(512, time.monotonic() + 0.3)
    assert 0.25 < time.monotonic() - began < 2


def test_a_partial_tls_record_does_not_hold_a_read_past_its_deadline(
    secured: tuple[Channel, ssl.SSLSocket],
) -> None:
    secure, tls_client = secured
    with socket.socket(fileno=os.dup(tls_client.fileno())) as raw:  # under the client's TLS layer
        raw.sendall(b"\x17\x03")  # half a record header, then nothing
    began = time.monotonic()
    with pytest.raises(Timeout):
        secure.read_line(512, time.monotonic() + 0.3)
    assert time.monotonic() - began < 2


def test_close_ends_the_connection_though_the_plain_descriptor_is_still_open(
    secured: tuple[Channel, ssl.SSLSocket], pair: tuple[Channel, socket.socket]
) -> None:
    secure, tls_client = secured
    plain_fd = pair[0].rfd
    secure.close()  # type: ignore[attr-defined]
    os.fstat(plain_fd)  # still open: stdin in real life
    tls_client.settimeout(5)
    assert tls_client.recv(100) == b""


def test_writing_to_a_client_that_went_away_raises_closed(secured: tuple[Channel, ssl.SSLSocket]) -> None:
    secure, tls_client = secured
    tls_client.close()
    with pytest.raises(Closed):
        for _ in range(100):
            secure.write(b"250 2.0.0 OK\r\n" * 100)


# -- through real xinetd ------------------------------------------------------------------------


@pytest.fixture
def tls_installation(tmp_path: Path, certificate: tuple[Path, Path]) -> Installation:
    return make_installation(tmp_path, certificate=str(certificate[0]), key=str(certificate[1]))


@pytest.fixture
def xinetd(tls_installation: Installation) -> Iterator[Launcher]:
    launcher = start_xinetd(tls_installation)
    try:
        yield launcher
    finally:
        launcher.stop()


def test_smtplib_starttls_through_xinetd_delivers_with_esmtps(
    tls_installation: Installation, xinetd: Launcher, certificate: tuple[Path, Path]
) -> None:
    with smtplib.SMTP("127.0.0.1", xinetd.port, local_hostname="client.example", timeout=20) as smtp:
        smtp.ehlo()
        assert smtp.has_extn("starttls")
        code, _ = smtp.starttls(context=client_context(certificate[0]))  # verifies our certificate
        assert code == 220
        smtp.ehlo()
        assert not smtp.has_extn("starttls")  # not offered twice
        assert smtp.sock.version() in ("TLSv1.2", "TLSv1.3")  # type: ignore[union-attr]
        smtp.sendmail(
            "alice@sender.example", [f"sink@{DOMAIN}"], MESSAGE.format(subject="tls", body="Secret.")
        )
    [delivery] = tls_installation.wait_for_deliveries(1)
    assert f"by {HOSTNAME} (mailserver) with ESMTPS (TLSv1.3:" in delivery.message
    assert "Secret." in delivery.message
    assert delivery.env["REMOTE_ADDR"] == "127.0.0.1"


def test_swaks_tls_through_xinetd_delivers_with_esmtps(
    tls_installation: Installation, xinetd: Launcher
) -> None:
    swaks = require_program("swaks", "swaks")
    result = subprocess.run(
        [
            swaks, "--tls",
            "--server", "127.0.0.1", "--port", str(xinetd.port),
            "--helo", "swaks.example", "--from", "bob@sender.example", "--to", f"sink@{DOMAIN}",
            "--header", "Subject: swaks over tls", "--body", "Sent by swaks over TLS.", "--timeout", "20",
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, (
        result.stdout + result.stderr + "\n(swaks --tls needs the Debian package libnet-ssleay-perl)"
    )
    assert "<~ " in result.stdout, result.stdout  # '<~' marks replies read over TLS
    assert all(REPLY_LINE.match(line.encode()) for line in swaks_server_lines(result.stdout)), result.stdout
    [delivery] = tls_installation.wait_for_deliveries(1)
    assert "with ESMTPS" in delivery.message and "Sent by swaks over TLS." in delivery.message


def test_commands_pipelined_with_starttls_are_not_executed_after_the_handshake(
    tls_installation: Installation, xinetd: Launcher, certificate: tuple[Path, Path]
) -> None:
    wire = Wire(xinetd.port)
    try:
        wire.reply()
        assert b"250-STARTTLS" in wire.command("EHLO client.example")
        wire.send(b"STARTTLS\r\nRSET\r\nMAIL FROM:<evil@example.net>\r\n")  # one packet
        assert wire.reply().startswith(b"220 2.0.0 ")
        wire.starttls(client_context(certificate[0]))
        # Were RSET and MAIL run after the handshake, their replies would come before NOOP's.
        assert wire.command("NOOP") == b"250 2.0.0 OK\r\n"
        assert wire.command("EHLO client.example").startswith(b"250-")
        assert send_message(wire, "alice@sender.example", f"sink@{DOMAIN}", "Subject: ok\n\nok").startswith(
            b"250 "
        )
        assert wire.command("QUIT").startswith(b"221 ")
        assert wire.read_to_end() == b""
    finally:
        wire.close()
    [delivery] = tls_installation.wait_for_deliveries(1)
    assert delivery.env["SENDER"] == "alice@sender.example"
    assert "evil@example.net" not in delivery.message
    wire.assert_only_smtp()


def test_a_bad_certificate_path_leaves_plaintext_mail_working(
    tmp_path: Path, certificate: tuple[Path, Path]
) -> None:
    installation = make_installation(
        tmp_path, certificate=str(tmp_path / "no-such-cert.pem"), key=str(certificate[1])
    )
    launcher = start_xinetd(installation)
    try:
        with smtplib.SMTP("127.0.0.1", launcher.port, local_hostname="client.example", timeout=20) as smtp:
            smtp.ehlo()
            assert not smtp.has_extn("starttls")
            smtp.sendmail(
                "alice@sender.example", [f"sink@{DOMAIN}"], MESSAGE.format(subject="p", body="Plain.")
            )
        [delivery] = installation.wait_for_deliveries(1)
    finally:
        launcher.stop()
    assert "with ESMTP id" in delivery.message and "Plain." in delivery.message
    assert "no-such-cert.pem" in installation.log.read_text()  # the one warning line
