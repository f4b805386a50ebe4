"""Replies (inbound/autoreply/) and the shipped repliers (8ball, echo).

What a reply looks like, every case where RFC 3834 says not to answer, the rate limit
(also across processes), require_auth, DKIM signing, and each transport with real parts:
an outbox folder, a fake sendmail program, an aiosmtpd sink on 127.0.0.1 as smarthost
and as MX host (found through a DNS server on 127.0.0.1).
"""

from __future__ import annotations

import base64
import email
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from email import policy
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import ROOT, Server, Sink, free_port, start_sink

from inbound import log
from inbound.autoreply import ratelimit, send_reply, transports
from inbound.autoreply.compose import reply_subject
from inbound.autoreply.ratelimit import RateLimit
from inbound.autoreply.rules import refusal
from inbound.config import Config, load
from inbound.envelope import Envelope
from inbound.outcomes import TempFail

# -- helpers -------------------------------------------------------------------------------


def mail(headers: dict[str, str] | None = None, body: str = "Is it?\n", **more: str) -> bytes:
    """A message (CRLF) to 8ball@example.org from alice@example.net; HEADERS replace defaults."""
    fields = {
        "From": "Alice <alice@example.net>",
        "To": "8ball@example.org",
        "Subject": "Will it rain?",
        "Date": "Fri, 21 Nov 2025 10:00:00 +0000",
        "Message-ID": "<q1@example.net>",
    }
    fields.update(headers or {})
    fields.update({k.replace("_", "-"): v for k, v in more.items()})
    head = "".join(f"{k}: {v}\r\n" for k, v in fields.items() if v is not None)
    return (head + "\r\n" + body.replace("\n", "\r\n")).encode()


def envelope(
    config: Config,
    data: bytes | None = None,
    *,
    sender: str = "alice@example.net",
    recipients: tuple[str, ...] = ("8ball@example.org",),
    handler: str = "8ball",
    auth: Any = None,
) -> Envelope:
    return Envelope(
        queue_id="Q1",
        sender=sender,
        recipients=list(recipients),
        handler=handler,
        server_config=config,
        raw=mail() if data is None else data,
        auth=auth,
        replier=send_reply,
    )


def fake_auth(spf: str = "none", dkim: tuple[tuple[str, str], ...] = ()) -> SimpleNamespace:
    """Stands in for checks.AuthResults: .spf.result, .dkim[i].result/.domain."""
    return SimpleNamespace(
        spf=SimpleNamespace(result=spf),
        dkim=[SimpleNamespace(result=r, domain=d) for r, d in dkim],
        dmarc=SimpleNamespace(result="none"),
        arc=SimpleNamespace(result="none"),
    )


def parse(data: bytes) -> email.message.EmailMessage:
    """A message as sent (CRLF) parsed with LF line endings, so contents compare as text."""
    return email.message_from_bytes(data.replace(b"\r\n", b"\n"), policy=policy.default)  # type: ignore[return-value]


@pytest.fixture
def configure(server: Server) -> Any:
    """configure(reply={...}, checks={...}) -> a loaded Config (outbox transport by default)."""

    def make(**sections: dict[str, str]) -> Config:
        server.write_config(**sections)
        return load(str(server.config))

    log.setup(str(server.root / "server.log"), "debug")
    return make


@pytest.fixture
def config(configure: Any) -> Config:
    return configure()


def outbox(config: Config) -> list[bytes]:
    folder = Path(config.reply.outbox)
    return [p.read_bytes() for p in sorted(folder.glob("*.eml"))] if folder.exists() else []


# -- what a reply looks like ------------------------------------------------------------------


def test_reply_goes_to_the_envelope_sender_and_threads(config: Config) -> None:
    data = mail(
        {"From": "Someone <someone@example.com>", "Reply-To": "other@example.com"},
        References="<a@x> <b@x>",
    )
    assert send_reply(envelope(config, data, sender="bounces-to@example.net"), "Outlook good.")
    [sent] = outbox(config)
    reply = parse(sent)
    assert reply["To"] == "bounces-to@example.net"
    assert reply["From"] == "8ball@example.org"
    assert reply["Subject"] == "Re: Will it rain?"
    assert reply["In-Reply-To"] == "<q1@example.net>"
    assert reply["References"] == "<a@x> <b@x> <q1@example.net>"
    assert reply["Auto-Submitted"] == "auto-replied"
    assert reply["Message-ID"].endswith("@example.org>")
    assert reply["Date"]
    assert reply["Return-Path"] == "<>"
    assert reply.get_content() == "Outlook good.\n"


@pytest.mark.parametrize(
    "original, expected",
    [
        ("Will it rain?", "Re: Will it rain?"),
        ("Re: Will it rain?", "Re: Will it rain?"),
        ("Re: Re: RE: Will it rain?", "Re: Will it rain?"),
        ("AW: Re[2]: Will it rain?", "Re: Will it rain?"),
        ("re:Will it rain?", "Re: Will it rain?"),
        ("", "Re: your message"),
        ("Rebuild tonight?", "Re: Rebuild tonight?"),
    ],
)
def test_re_prefixes_do_not_stack(original: str, expected: str) -> None:
    assert reply_subject(original) == expected


def test_from_is_the_reply_from_setting_and_sender_overrides_it(configure: Any) -> None:
    config = configure(reply={"from": "8-Ball <oracle@example.org>"})
    assert send_reply(envelope(config), "Yes.")
    assert send_reply(envelope(config, sender="bob@example.net"), "Yes.", sender="magic@example.org")
    froms = {parse(data)["To"]: parse(data)["From"] for data in outbox(config)}
    assert froms == {
        "alice@example.net": "8-Ball <oracle@example.org>",
        "bob@example.net": "magic@example.org",
    }


def test_non_ascii_replies_go_as_7bit(config: Config) -> None:
    assert send_reply(envelope(config, mail({"Subject": "Wird es regnen? ☂"})), "Sehr fraglich – ☂\n" * 3)
    data = outbox(config)[0]
    assert data.isascii()
    reply = parse(data)
    assert reply["Subject"] == "Re: Wird es regnen? ☂"
    assert reply.get_content() == "Sehr fraglich – ☂\n" * 3


def test_html_attachments_and_extra_headers_are_included(config: Config) -> None:
    assert send_reply(
        envelope(config),
        "text",
        subject="Your answer",
        html="<p>html</p>",
        attachments=[
            ("answer.txt", b"yes\n"),
            SimpleNamespace(filename="a.bin", content_type="", data=b"\0"),
        ],
        headers={"X-Answer": "42"},
    )
    reply = parse(outbox(config)[0])
    assert reply["Subject"] == "Your answer"
    assert reply["X-Answer"] == "42"
    assert reply.get_body(("html",)).get_content() == "<p>html</p>\n"
    names = {part.get_filename(): part.get_content() for part in reply.iter_attachments()}
    assert names == {"answer.txt": "yes\n", "a.bin": b"\0"}


def test_a_handler_cannot_redirect_the_reply_with_headers(config: Config) -> None:
    with pytest.raises(ValueError):
        send_reply(envelope(config), "x", headers={"Bcc": "victim@example.com"})
    with pytest.raises(ValueError):
        send_reply(envelope(config), "x", headers={"X-Evil": "a\r\nBcc: victim@example.com"})
    assert outbox(config) == []


# -- when RFC 3834 says no --------------------------------------------------------------------


@pytest.mark.parametrize(
    "sender",
    [
        "",
        "MAILER-DAEMON@example.net",
        "postmaster@example.net",
        "owner-announce@example.net",
        "announce-request@example.net",
        "announce-bounces+alice=example.org@example.net",
        "noreply@example.net",
        "no-reply+123@example.net",
        "do-not-reply@example.net",
        "DoNotReply@example.net",
        "listserv@example.net",
        "majordomo@example.net",
        "bounce-123-alice@mail.example.net",
        "-oQ/tmp/x@example.net",
        "not an address",
    ],
)
def test_no_reply_to_robot_or_null_senders(config: Config, sender: str) -> None:
    assert not send_reply(envelope(config, sender=sender), "x")
    assert outbox(config) == []


@pytest.mark.parametrize(
    "headers",
    [
        {"Auto-Submitted": "auto-replied"},
        {"Auto-Submitted": "auto-generated; owner-email=x@example.net"},
        {"Precedence": "bulk"},
        {"Precedence": "Junk"},
        {"Precedence": "list"},
        {"List-Id": "Announcements <announce.example.net>"},
        {"List-Unsubscribe": "<mailto:announce-request@example.net>"},
        {"List-Post": "<mailto:announce@example.net>"},
        {"X-Mailserver-Auto-Reply": "8ball"},
        {"X-Auto-Response-Suppress": "OOF, AutoReply"},
        {"Content-Type": 'multipart/report; report-type=delivery-status; boundary="b"'},
        {"To": "someone-else@example.org"},
        {"To": "announce@lists.example.net"},
    ],
)
def test_no_reply_to_automatic_list_or_unaddressed_mail(config: Config, headers: dict[str, str]) -> None:
    assert refusal(envelope(config, mail(headers)))
    assert not send_reply(envelope(config, mail(headers)), "x")
    assert outbox(config) == []


def test_auto_submitted_no_is_a_person(config: Config) -> None:
    assert send_reply(envelope(config, mail({"Auto-Submitted": "no"})), "x")


@pytest.mark.parametrize(
    "headers, recipient",
    [
        ({"To": "friend@example.net", "Cc": "8Ball@Example.org"}, "8ball@example.org"),
        ({"To": "8ball@example.org"}, "8ball+urgent@example.org"),
        ({"To": "x@example.net", "Resent-To": "8ball@example.org"}, "8ball@example.org"),
    ],
)
def test_reply_when_our_address_is_in_to_cc_or_resent(config: Config, headers: dict, recipient: str) -> None:
    assert send_reply(envelope(config, mail(headers), recipients=(recipient,)), "x")


# -- rate limit -------------------------------------------------------------------------------


def test_one_reply_per_sender_per_handler_per_day(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1_000_000.0]
    monkeypatch.setattr(ratelimit, "now", lambda: clock[0])
    assert send_reply(envelope(config), "first")
    assert not send_reply(envelope(config, sender="Alice@Example.NET"), "second, same day")
    assert send_reply(envelope(config, handler="echo"), "another handler has its own limit")
    assert send_reply(envelope(config, sender="bob@example.net"), "another sender")
    clock[0] += ratelimit.REPLY_INTERVAL + 1
    assert send_reply(envelope(config), "next day")
    assert len(outbox(config)) == 4


def test_rate_limit_holds_across_processes(config: Config, tmp_path: Path) -> None:
    script = tmp_path / "reply_once.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import sys
            sys.path.insert(0, {str(ROOT)!r})
            from inbound.config import load
            from inbound.envelope import Envelope
            from inbound.autoreply import send_reply
            raw = {mail()!r}
            env = Envelope(queue_id="Q", sender="alice@example.net", recipients=["8ball@example.org"],
                           handler="8ball", server_config=load({config.path!r}), raw=raw)
            print(send_reply(env, "hello"))
            """
        )
    )
    runs = [subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE) for _ in range(3)]
    results = sorted(p.communicate(timeout=30)[0].strip() for p in runs)
    assert results == [b"False", b"False", b"True"]
    assert len(outbox(config)) == 1


def test_a_failed_send_does_not_use_up_the_days_reply(config: Config) -> None:
    limit = RateLimit(config.server.spool, "8ball")
    stamp = limit.reserve("alice@example.net")
    assert stamp is not None and limit.reserve("alice@example.net") is None
    limit.release("alice@example.net", stamp)
    assert limit.reserve("alice@example.net") is not None


def test_the_reply_memory_forgets_old_senders_and_stays_bounded(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 13: the store grew without bound (entries dated ahead of the clock were kept
    forever, and nothing bounded how many senders it held)."""
    import json

    clock = [1_000_000.0]
    monkeypatch.setattr(ratelimit, "now", lambda: clock[0])
    monkeypatch.setattr(ratelimit, "MAX_ENTRIES", 50, raising=False)
    limit = RateLimit(config.server.spool, "8ball")

    def stored() -> dict[str, float]:
        with open(limit.path, encoding="utf-8") as f:
            return json.load(f)  # type: ignore[no-any-return]

    for n in range(200):  # many senders within one day: the newest MAX_ENTRIES are kept
        clock[0] += 1
        assert limit.reserve(f"forged{n}@example.net") is not None
    assert (
        len(stored()) == 50 and "forged199@example.net" in stored() and "forged0@example.net" not in stored()
    )
    assert limit.reserve("forged199@example.net") is None  # the newest still count
    limit._write({**stored(), "ahead@example.net": clock[0] + 10 * ratelimit.REPLY_INTERVAL, "junk": "x"})
    clock[0] += ratelimit.REPLY_INTERVAL + 1  # a day later, one sender asks again
    assert limit.reserve("forged0@example.net") is not None
    assert stored() == {"forged0@example.net": clock[0]}  # the rest expired, never answered again
    clock[0] += ratelimit.REPLY_INTERVAL + 1
    assert limit.reserve("forged0@example.net") is not None and len(stored()) == 1
    clock[0] += 10
    assert limit.reserve("forged0@example.net") is None  # a refused look-up prunes too
    limit.release("forged0@example.net", 0.0)
    assert len(stored()) == 1


# -- require_auth -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "auth, allowed",
    [
        (None, False),
        (fake_auth(spf="pass"), True),
        (fake_auth(spf="softfail"), False),
        (fake_auth(spf="fail", dkim=(("pass", "example.net"),)), True),
        (fake_auth(dkim=(("pass", "mail.example.net"),)), True),
        (fake_auth(dkim=(("fail", "example.net"),)), False),
        (fake_auth(dkim=(("pass", "spammer.example"),)), False),
        (fake_auth(dkim=(("pass", "net"),)), False),
    ],
)
def test_require_auth_needs_spf_pass_or_aligned_dkim(configure: Any, auth: Any, allowed: bool) -> None:
    config = configure(reply={"require_auth": "yes"})
    assert send_reply(envelope(config, auth=auth), "x") is allowed


# -- DKIM -----------------------------------------------------------------------------------


def test_signed_reply_verifies_with_the_public_key(configure: Any, tmp_path: Path) -> None:
    import dkim

    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    der = subprocess.run(
        ["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"], check=True, capture_output=True
    ).stdout
    config = configure(reply={"dkim_domain": "example.org", "dkim_selector": "s1", "dkim_key": str(key)})
    assert send_reply(envelope(config), "Signs point to yes.")
    data = outbox(config)[0]
    assert b"DKIM-Signature:" in data
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)

    def dns(name: bytes, timeout: int = 5) -> bytes:
        return record if name == b"s1._domainkey.example.org." else b""

    assert dkim.verify(data, dnsfunc=dns)
    assert not dkim.verify(data.replace(b"Signs point", b"Signs do not point"), dnsfunc=dns)


def test_ed25519_signed_reply_verifies(configure: Any, tmp_path: Path) -> None:
    import dkim
    import nacl.signing

    signing = nacl.signing.SigningKey.generate()
    key = tmp_path / "ed25519.key"
    key.write_bytes(base64.b64encode(bytes(signing)) + b"\n")
    config = configure(reply={"dkim_domain": "example.org", "dkim_selector": "ed", "dkim_key": str(key)})
    assert send_reply(envelope(config), "Yes.")
    record = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(bytes(signing.verify_key))
    assert dkim.verify(outbox(config)[0], dnsfunc=lambda name, timeout=5: record)


def test_unreadable_dkim_key_is_a_temporary_failure(configure: Any, tmp_path: Path) -> None:
    config = configure(reply={"dkim_domain": "example.org", "dkim_selector": "s", "dkim_key": "missing.pem"})
    with pytest.raises(TempFail, match="dkim_key"):
        send_reply(envelope(config), "x")


# -- transports -------------------------------------------------------------------------------


def test_outbox_leaves_no_temporary_files(config: Config) -> None:
    assert send_reply(envelope(config), "x")
    assert [p.name for p in Path(config.reply.outbox).iterdir() if not p.name.endswith(".eml")] == []


FAKE_SENDMAIL = """\
#!/bin/sh
printf '%s\\n' "$@" > "{out}.argv"
cat > "{out}.eml"
exit {status}
"""


def fake_sendmail(tmp_path: Path, status: int = 0) -> tuple[Path, Path]:
    out = tmp_path / "sendmail-got"
    script = tmp_path / "fake-sendmail"
    script.write_text(FAKE_SENDMAIL.format(out=out, status=status))
    script.chmod(0o755)
    return script, out


def test_sendmail_gets_the_reply_on_stdin_without_a_shell(configure: Any, tmp_path: Path) -> None:
    script, out = fake_sendmail(tmp_path)
    config = configure(reply={"transport": "sendmail", "sendmail": f"{script} -oi -f '<>'"})
    assert send_reply(envelope(config), "It is certain.")
    assert Path(f"{out}.argv").read_text().splitlines() == ["-oi", "-f", "<>", "alice@example.net"]
    data = Path(f"{out}.eml").read_bytes()
    assert b"\r\n" not in data
    assert parse(data)["To"] == "alice@example.net"


def test_sendmail_with_t_reads_the_recipient_from_the_header(configure: Any, tmp_path: Path) -> None:
    script, out = fake_sendmail(tmp_path)
    config = configure(reply={"transport": "sendmail", "sendmail": f"{script} -oi -t"})
    assert send_reply(envelope(config), "x")
    assert Path(f"{out}.argv").read_text().splitlines() == ["-oi", "-t"]


def test_sendmail_tempfail_raises_and_keeps_the_days_reply(configure: Any, tmp_path: Path) -> None:
    script, _ = fake_sendmail(tmp_path, status=75)
    config = configure(reply={"transport": "sendmail", "sendmail": str(script)})
    with pytest.raises(TempFail, match="exited with 75"):
        send_reply(envelope(config), "x")
    script.write_text(FAKE_SENDMAIL.format(out=tmp_path / "again", status=0))
    assert send_reply(envelope(config), "x")  # the retry is not rate-limited away


def test_sendmail_permanent_failure_returns_false(configure: Any, tmp_path: Path) -> None:
    script, _ = fake_sendmail(tmp_path, status=67)
    config = configure(reply={"transport": "sendmail", "sendmail": str(script)})
    assert send_reply(envelope(config), "x") is False


def test_missing_sendmail_is_a_temporary_failure(configure: Any, tmp_path: Path) -> None:
    config = configure(reply={"transport": "sendmail", "sendmail": str(tmp_path / "nope")})
    with pytest.raises(TempFail, match="cannot run"):
        send_reply(envelope(config), "x")


def smtp_config(configure: Any, sink: Sink, **more: str) -> Config:
    reply = {"transport": "smtp", "smtp_host": "127.0.0.1", "smtp_port": str(sink.port), **more}
    return configure(reply=reply)


def test_smtp_smarthost_gets_the_reply_with_a_null_sender(configure: Any, smtp_sink: Sink) -> None:
    config = smtp_config(configure, smtp_sink)
    assert send_reply(envelope(config), "Most likely.")
    [got] = smtp_sink.messages
    assert got.mail_from == "<>" or got.mail_from == ""
    assert got.rcpt_tos == ["alice@example.net"]
    assert parse(got.data).get_content() == "Most likely.\n"


def test_smtp_4xx_is_temporary_and_5xx_permanent(configure: Any, smtp_sink: Sink) -> None:
    config = smtp_config(configure, smtp_sink)
    smtp_sink.data_reply = "451 4.3.0 try later"
    with pytest.raises(TempFail, match="451"):
        send_reply(envelope(config), "x")
    smtp_sink.data_reply = None
    smtp_sink.rcpt_reply = "550 5.1.1 no such user"
    assert send_reply(envelope(config), "x") is False
    assert smtp_sink.messages == []


def test_smtp_unreachable_smarthost_is_temporary(configure: Any) -> None:
    config = configure(reply={"transport": "smtp", "smtp_host": "127.0.0.1", "smtp_port": str(free_port())})
    with pytest.raises(TempFail, match="smarthost"):
        send_reply(envelope(config), "x")


def test_smtp_uses_starttls_and_auth_when_configured(configure: Any, tmp_path: Path) -> None:
    import ssl

    from aiosmtpd.smtp import AuthResult

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))

    def authenticator(server: Any, session: Any, env: Any, mechanism: str, data: Any) -> AuthResult:
        ok = data.login == b"robot" and data.password == b"s3cret"
        return AuthResult(success=ok, handled=False, auth_data=data.login if ok else None)

    sink, controller = start_sink(tls_context=context, authenticator=authenticator)
    try:
        config = smtp_config(configure, sink, smtp_user="robot", smtp_password="s3cret")
        assert send_reply(envelope(config), "x")
        [got] = sink.messages
        assert got.tls and got.login == "robot"
        bad = smtp_config(configure, sink, smtp_user="robot", smtp_password="wrong")
        with pytest.raises(TempFail, match="login"):
            send_reply(envelope(bad, sender="bob@example.net"), "x")
    finally:
        controller.stop()


# -- mx ---------------------------------------------------------------------------------------


@pytest.fixture
def mx_setup(configure: Any, smtp_sink: Sink, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A DNS server on 127.0.0.1 and MX_PORT pointed at the sink; yields serve(zone) -> Config."""
    from dns_server import DNSTestServer

    dns = DNSTestServer()
    monkeypatch.setattr(transports, "MX_PORT", smtp_sink.port)

    def serve(zone: dict[str, list[Any]]) -> Config:
        dns.serve(zone)
        return configure(
            reply={"transport": "mx"},
            checks={"dns_servers": f"127.0.0.1:{dns.port}", "dns_timeout": "2"},
        )

    try:
        yield serve
    finally:
        dns.close()


def test_mx_delivers_to_the_best_mx_that_works(mx_setup: Any, smtp_sink: Sink) -> None:
    config = mx_setup(
        {
            "example.net": [{"MX": [20, "mx2.example.net"]}, {"MX": [10, "mx1.example.net"]}],
            "mx1.example.net": [{"TXT": "no address here"}],
            "mx2.example.net": [{"A": "127.0.0.1"}],
        }
    )
    assert send_reply(envelope(config), "Yes.")
    [got] = smtp_sink.messages
    assert got.rcpt_tos == ["alice@example.net"]


def test_mx_falls_back_to_the_domains_address(mx_setup: Any, smtp_sink: Sink) -> None:
    config = mx_setup({"example.net": [{"A": "127.0.0.1"}]})
    assert send_reply(envelope(config), "Yes.")
    assert len(smtp_sink.messages) == 1


def test_mx_null_mx_and_missing_domain_are_permanent(mx_setup: Any, smtp_sink: Sink) -> None:
    config = mx_setup({"example.net": [{"MX": [0, ""]}]})
    assert send_reply(envelope(config), "x") is False
    assert send_reply(envelope(config, sender="carol@nowhere.example"), "x") is False
    assert smtp_sink.messages == []


def test_mx_4xx_is_temporary(mx_setup: Any, smtp_sink: Sink) -> None:
    config = mx_setup(
        {"example.net": [{"MX": [10, "mx.example.net"]}], "mx.example.net": [{"A": "127.0.0.1"}]}
    )
    smtp_sink.rcpt_reply = "450 4.2.0 greylisted"
    with pytest.raises(TempFail, match="greylisted"):
        send_reply(envelope(config), "x")


# -- the shipped repliers ----------------------------------------------------------------------


def load_handler(name: str) -> Any:
    from inbound.delivery.router import load_python

    handler = load_python(name, str(ROOT / "handlers" / f"{name}.py"))
    assert not handler.error, handler.error
    return handler.module


def test_8ball_answers_the_subject_with_one_of_twenty_answers(config: Config) -> None:
    eightball = load_handler("8ball")
    assert len(set(eightball.ANSWERS)) == 20
    eightball.handle(envelope(config))
    body = parse(outbox(config)[0]).get_content()
    assert "Will it rain?" in body
    assert sum(answer in body for answer in eightball.ANSWERS) == 1


def test_8ball_explains_how_to_ask_when_the_subject_is_empty(config: Config) -> None:
    eightball = load_handler("8ball")
    eightball.handle(envelope(config, mail({"Subject": ""})))
    body = parse(outbox(config)[0]).get_content()
    assert "Subject" in body and not any(answer in body for answer in eightball.ANSWERS)


def test_8ball_stays_silent_on_list_mail(config: Config) -> None:
    load_handler("8ball").handle(envelope(config, mail({"List-Id": "<l.example.net>"})))
    assert outbox(config) == []


def test_echo_reports_envelope_auth_and_mime_tree(config: Config) -> None:
    data = (ROOT / "examples" / "mail" / "attachment.eml").read_bytes().replace(b"\n", b"\r\n")
    auth = fake_auth(spf="pass", dkim=(("pass", "example.net"), ("fail", "other.example")))
    env = envelope(config, data, recipients=("echo@localhost",), handler="echo", auth=auth)
    env.remote_addr, env.helo, env.tls = "192.0.2.7", "client.example.net", "TLSv1.3"
    load_handler("echo").handle(env)
    body = parse(outbox(config)[0]).get_content()
    for expected in (
        "MAIL FROM:   <alice@example.net>",
        "RCPT TO:     <echo@localhost>",
        "192.0.2.7",
        "client.example.net",
        "TLSv1.3",
        "SPF:    pass",
        "DKIM 1: pass (domain=example.net)",
        "DKIM 2: fail (domain=other.example)",
        "    multipart/mixed\n      multipart/alternative\n        text/plain",
        '      text/csv (filename="report.csv", base64, 29 octets)',
    ):
        assert expected in body, expected


def test_reply_without_server_config_is_not_sent() -> None:
    env = Envelope(queue_id="Q", sender="alice@example.net", recipients=["8ball@example.org"], raw=mail())
    assert send_reply(env, "x") is False


def test_threads_share_the_rate_limit(config: Config) -> None:
    results: list[bool] = []
    threads = [
        threading.Thread(target=lambda: results.append(send_reply(envelope(config), "x"))) for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False, False, False, True]
    assert len(outbox(config)) == 1
    assert os.path.exists(os.path.join(config.server.spool, "replies", "8ball.json"))


def test_require_auth_reads_the_real_auth_results(configure: Any) -> None:
    checks = pytest.importorskip("inbound.checks")
    config = configure(reply={"require_auth": "yes"})
    spf_pass = checks.AuthResults(spf=checks.SPFResult("pass", domain="example.net"))
    helo_pass = checks.AuthResults(spf=checks.SPFResult("pass", identity="helo", domain="mx.example.net"))
    dkim_pass = checks.AuthResults(
        spf=checks.SPFResult("softfail"), dkim=[checks.DKIMResult("pass", domain="example.net", selector="s")]
    )
    assert send_reply(envelope(config, auth=spf_pass), "x")
    assert not send_reply(envelope(config, sender="bob@example.net", auth=helo_pass), "x")
    assert send_reply(envelope(config, sender="carol@example.net", auth=dkim_pass), "x")
