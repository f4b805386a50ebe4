"""`mailserver.py listen` over a real TCP socket, with Python's smtplib as the client."""

from __future__ import annotations

import signal
import smtplib
import subprocess
import sys
from email.message import EmailMessage

import pytest
from conftest import MAILSERVER, Server, free_port, wait_for_port, wait_until


def message(subject: str = "hello over tcp") -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "alice@sender.example"
    msg["To"] = "sink@example.org"
    msg["Subject"] = subject
    msg.set_content("Hi.\n")
    return msg


def test_smtplib_sends_a_message_that_the_handler_receives(server: Server, listening: int) -> None:
    with smtplib.SMTP("127.0.0.1", listening, timeout=10) as client:
        code, banner = client.ehlo("client.example")
        assert code == 250 and b"mx.test.example" in banner
        for extension in ("pipelining", "size", "8bitmime", "smtputf8", "enhancedstatuscodes", "chunking"):
            assert client.has_extn(extension)
        refused = client.send_message(message(), "alice@sender.example", ["sink@example.org"])
        assert refused == {}
    runs = wait_until(server.got)
    [(data, env)] = runs
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert b"Subject: hello over tcp" in data
    assert b"Received: from client.example ([127.0.0.1])" in data


def test_refused_recipients_raise_with_exact_codes(server: Server, listening: int) -> None:
    with smtplib.SMTP("127.0.0.1", listening, timeout=10) as client:
        client.ehlo("client.example")
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail(
                "a@sender.example", ["nobody@example.org", "x@elsewhere.example"], b"Subject: x\r\n\r\n"
            )
        assert refused.value.recipients["nobody@example.org"][0] == 550
        assert refused.value.recipients["nobody@example.org"][1].startswith(b"5.1.1")
        assert refused.value.recipients["x@elsewhere.example"][1].startswith(b"5.7.1")


def test_each_verb_over_tcp(server: Server, listening: int) -> None:
    with smtplib.SMTP("127.0.0.1", listening, timeout=10) as client:
        assert client.helo("client.example")[0] == 250
        assert client.ehlo("client.example")[0] == 250
        assert client.noop()[0] == 250
        assert client.rset()[0] == 250
        assert client.verify("sink@example.org")[0] == 252
        assert client.expn("staff")[0] == 502
        assert client.docmd("HELP")[0] == 214
        assert client.docmd("BOGUS")[0] == 500
        assert client.mail("a@sender.example", ["SIZE=999999999999"])[0] == 552
        assert client.mail("a@sender.example", ["BODY=8BITMIME", "SIZE=100"])[0] == 250
        assert client.rcpt("sink@example.org")[0] == 250
        assert client.data(b"Subject: verbs\r\n\r\nok\r\n")[0] == 250
    assert wait_until(server.got)


def test_bdat_over_tcp(server: Server, listening: int) -> None:
    with smtplib.SMTP("127.0.0.1", listening, timeout=10) as client:
        client.ehlo("client.example")
        client.mail("a@sender.example")
        client.rcpt("sink@example.org")
        client.send(b"BDAT 10\r\nSubject: c")
        assert client.getreply()[0] == 250
        client.send(b"BDAT 8 LAST\r\nhunk\r\n\r\n")
        code, text = client.getreply()
        assert code == 250 and text.startswith(b"2.0.0 OK queued as")
    [(data, _)] = wait_until(server.got)
    assert data.endswith(b"Subject: chunk\n\n")


def test_concurrent_connections_each_get_their_own_process(server: Server, listening: int) -> None:
    import threading

    def one(i: int) -> None:
        with smtplib.SMTP("127.0.0.1", listening, timeout=20) as client:
            client.send_message(message(f"parallel {i}"), "a@sender.example", ["sink@example.org"])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wait_until(lambda: len(server.got()) == 8 and server.got())) == 8


def test_ctrl_c_stops_listen_cleanly(server: Server) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(MAILSERVER), "listen", "--port", str(port), "--config", str(server.config)],
        stderr=subprocess.PIPE,
    )
    wait_for_port(port)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    assert proc.stderr and b"Traceback" not in proc.stderr.read()


def test_listen_refuses_a_port_in_use(server: Server, listening: int) -> None:
    result = server.run("listen", "--port", str(listening), timeout=10)
    assert result.returncode == 69
    assert b"cannot listen on 127.0.0.1" in result.stderr


def test_ctrl_c_with_a_session_open_prints_no_traceback(server: Server) -> None:
    """Ctrl-C reaches the terminal's whole process group: sessions must not print tracebacks."""
    import os
    import socket

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, str(MAILSERVER), "listen", "--port", str(port), "--config", str(server.config)],
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    wait_for_port(port)
    with socket.create_connection(("127.0.0.1", port)) as client:
        assert client.recv(100).startswith(b"220")
        client.sendall(b"EHLO x\r\n")
        client.recv(1000)
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    assert proc.stderr and b"Traceback" not in proc.stderr.read()
