"""DKIM verification (RFC 6376, RFC 8463 ed25519, RFC 8301) through the real DNS server.

Signers: the RFC 8463 Appendix A message (ed25519 and RSA, as printed in the RFC), an
Exim-made ed25519 signature, dkimpy's signer (RSA and ed25519) and a small ed25519
signer written here from RFC 6376/8463 with PyNaCl, so verification is not only checked
against the library that verifies.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Any

import dkim
import nacl.signing
import pytest
from conftest import TEST_DATA
from conftest_dns import make_check_settings

from inbound.checks import AuthResults, authenticate

DATA = TEST_DATA / "dkim"
RFC8463_ED25519_KEY = "v=DKIM1; k=ed25519; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="

MESSAGE = (
    b"From: Alice <alice@example.com>\r\n"
    b"To: bot@example.org\r\n"
    b"Subject: run the job\r\n"
    b"Date: Tue, 01 Apr 2025 10:00:00 +0000\r\n"
    b"Message-ID: <1@example.com>\r\n"
    b"\r\n"
    b"Please run the job.\r\n"
    b"Thanks, Alice\r\n"
)
HEADERS = [b"from", b"to", b"subject", b"date", b"message-id"]


# -- keys and signers ------------------------------------------------------------------
def rsa_key(bits: int) -> tuple[bytes, str]:
    private = (DATA / f"test-rsa{bits}.pem").read_bytes()
    public = (DATA / f"test-rsa{bits}.pub.b64").read_text().strip()
    return private, f"v=DKIM1; k=rsa; p={public}"


ED25519_SEED = bytes(range(32))


def ed25519_key() -> tuple[bytes, str]:
    signing = nacl.signing.SigningKey(ED25519_SEED)
    public = base64.b64encode(bytes(signing.verify_key)).decode()
    return base64.b64encode(ED25519_SEED), f"v=DKIM1; k=ed25519; p={public}"


def dkimpy_sign(
    message: bytes,
    selector: str,
    domain: str,
    key: bytes,
    algorithm: bytes = b"rsa-sha256",
    length: bool = False,
    headers: list[bytes] | None = None,
) -> bytes:
    signature = dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        key,
        signature_algorithm=algorithm,
        include_headers=headers or HEADERS,
        length=length,
    )
    return signature + message


def _relaxed_header(name: bytes, value: bytes) -> bytes:
    value = re.sub(rb"\r\n", b"", value)
    value = re.sub(rb"[ \t]+", b" ", value).strip(b" \t")
    return name.strip().lower() + b":" + value


def _relaxed_body(body: bytes) -> bytes:
    lines = [re.sub(rb"[ \t]+", b" ", line).rstrip(b" ") for line in body.split(b"\r\n")]
    while lines and lines[-1] == b"":
        lines.pop()
    return b"".join(line + b"\r\n" for line in lines)


def hand_sign_ed25519(message: bytes, selector: str, domain: str, seed: bytes) -> bytes:
    """A DKIM-Signature made without dkimpy: relaxed/relaxed, ed25519-sha256 (RFC 8463 3)."""
    head, _, body = message.partition(b"\r\n\r\n")
    fields = {}
    for match in re.finditer(rb"^([^:\r\n]+):(.*?(?:\r\n[ \t].*?)*)(?=\r\n(?![ \t])|\Z)", head, re.M | re.S):
        fields.setdefault(match.group(1).lower(), match.group(2))
    body_hash = base64.b64encode(hashlib.sha256(_relaxed_body(body)).digest()).decode()
    names = [b"from", b"subject", b"to"]
    tags = (
        f"v=1; a=ed25519-sha256; c=relaxed/relaxed; d={domain}; s={selector}; h=from:subject:to; "
        f"bh={body_hash}; b="
    )
    signed = b"".join(_relaxed_header(n, fields[n]) + b"\r\n" for n in names)
    signed += _relaxed_header(b"DKIM-Signature", b" " + tags.encode())
    signature = nacl.signing.SigningKey(seed).sign(hashlib.sha256(signed).digest()).signature
    return b"DKIM-Signature: " + tags.encode() + base64.b64encode(signature) + b"\r\n" + message


# -- running the check -------------------------------------------------------------------
def verify(dns_server: Any, message: bytes, keys: dict[str, str]) -> AuthResults:
    dns_server.serve({name: [{"TXT": value}] for name, value in keys.items()})
    settings = make_check_settings(dns_server, spf=False, dmarc=False, arc=False)
    return authenticate(
        message,
        client_ip="192.0.2.1",
        helo="client.example",
        mail_from="alice@example.com",
        settings=settings,
        authserv_id="mx.test.example",
    )


def results(auth: AuthResults) -> list[tuple[str, str, str]]:
    return [(sig.result, sig.domain, sig.selector) for sig in auth.dkim]


# -- independent signers ----------------------------------------------------------------
def test_rfc8463_message_with_ed25519_and_rsa_signatures_passes_both(dns_server: Any) -> None:
    message = (DATA / "rfc8463-appendix-a.signed.eml").read_bytes()
    auth = verify(
        dns_server,
        message,
        {
            "brisbane._domainkey.football.example.com": RFC8463_ED25519_KEY,
            "test._domainkey.football.example.com": (
                DATA / "rfc8463-test._domainkey.football.example.com.txt"
            )
            .read_text()
            .strip(),
        },
    )
    assert results(auth) == [
        ("pass", "football.example.com", "brisbane"),
        ("pass", "football.example.com", "test"),
    ]
    assert [sig.algorithm for sig in auth.dkim] == ["ed25519-sha256", "rsa-sha256"]
    assert [sig.b for sig in auth.dkim] == ["9/dsDChY", "icKcLSEZ"]


def test_exim_made_ed25519_signature_passes(dns_server: Any) -> None:
    message = (DATA / "exim-ed25519.signed.eml").read_bytes()
    auth = verify(
        dns_server,
        message,
        {
            "sed._domainkey.test.ex": (DATA / "exim-sed._domainkey.test.ex.txt").read_text().strip(),
        },
    )
    assert results(auth) == [("pass", "test.ex", "sed")]


def test_hand_built_ed25519_signature_passes(dns_server: Any) -> None:
    _, record = ed25519_key()
    message = hand_sign_ed25519(MESSAGE, "hand", "example.com", ED25519_SEED)
    auth = verify(dns_server, message, {"hand._domainkey.example.com": record})
    assert results(auth) == [("pass", "example.com", "hand")]


def test_dkimpy_rsa_sha256_signature_passes(dns_server: Any) -> None:
    private, record = rsa_key(2048)
    auth = verify(
        dns_server,
        dkimpy_sign(MESSAGE, "rsa", "example.com", private),
        {"rsa._domainkey.example.com": record},
    )
    assert results(auth) == [("pass", "example.com", "rsa")]
    assert auth.environment()["DKIM_RESULT"] == "pass"


def test_dkimpy_ed25519_signature_passes(dns_server: Any) -> None:
    private, record = ed25519_key()
    message = dkimpy_sign(MESSAGE, "ed", "example.com", private, b"ed25519-sha256")
    auth = verify(dns_server, message, {"ed._domainkey.example.com": record})
    assert results(auth) == [("pass", "example.com", "ed")]


# -- every signature, each with its own result ---------------------------------------------
def test_every_signature_is_verified_not_only_the_first(dns_server: Any) -> None:
    rsa_private, rsa_record = rsa_key(2048)
    ed_private, ed_record = ed25519_key()
    message = dkimpy_sign(MESSAGE, "rsa", "example.com", rsa_private)
    message = dkimpy_sign(message, "ed", "list.example.net", ed_private, b"ed25519-sha256")
    message = hand_sign_ed25519(message, "gone", "example.org", ED25519_SEED)  # no key published
    auth = verify(
        dns_server,
        message,
        {
            "rsa._domainkey.example.com": rsa_record,
            "ed._domainkey.list.example.net": ed_record,
        },
    )
    assert results(auth) == [
        ("permerror", "example.org", "gone"),
        ("pass", "list.example.net", "ed"),
        ("pass", "example.com", "rsa"),
    ]
    assert auth.environment()["DKIM_RESULT"] == "pass"


def test_a_bad_first_signature_does_not_hide_a_good_second_one(dns_server: Any) -> None:
    private, record = rsa_key(2048)
    good = dkimpy_sign(MESSAGE, "rsa", "example.com", private)
    forged = (
        re.sub(
            rb"b=[A-Za-z0-9+/]{8}",
            b"b=AAAAAAAA",
            hand_sign_ed25519(good, "ed", "example.com", ED25519_SEED).split(b"\r\n", 1)[0],
            count=1,
        )
        + b"\r\n"
        + good
    )
    _, ed_record = ed25519_key()
    auth = verify(
        dns_server, forged, {"rsa._domainkey.example.com": record, "ed._domainkey.example.com": ed_record}
    )
    assert results(auth) == [("fail", "example.com", "ed"), ("pass", "example.com", "rsa")]
    assert auth.environment()["DKIM_RESULT"] == "pass"


# -- tampering ----------------------------------------------------------------------------
def test_changed_body_fails_both_rfc8463_signatures(dns_server: Any) -> None:
    message = (
        (DATA / "rfc8463-appendix-a.signed.eml").read_bytes().replace(b"We lost the game", b"We won the game")
    )
    auth = verify(
        dns_server,
        message,
        {
            "brisbane._domainkey.football.example.com": RFC8463_ED25519_KEY,
            "test._domainkey.football.example.com": (
                DATA / "rfc8463-test._domainkey.football.example.com.txt"
            )
            .read_text()
            .strip(),
        },
    )
    assert [sig.result for sig in auth.dkim] == ["fail", "fail"]
    assert all("body hash" in sig.reason for sig in auth.dkim)
    assert auth.environment()["DKIM_RESULT"] == "fail"


@pytest.mark.parametrize("algorithm", [b"rsa-sha256", b"ed25519-sha256"])
def test_changed_signed_header_fails(dns_server: Any, algorithm: bytes) -> None:
    private, record = rsa_key(2048) if algorithm == b"rsa-sha256" else ed25519_key()
    message = dkimpy_sign(MESSAGE, "k", "example.com", private, algorithm)
    tampered = message.replace(b"Subject: run the job", b"Subject: delete everything")
    auth = verify(dns_server, tampered, {"k._domainkey.example.com": record})
    assert results(auth) == [("fail", "example.com", "k")]


def test_added_unsigned_header_still_passes(dns_server: Any) -> None:
    private, record = rsa_key(2048)
    message = b"X-Mailing-List: added later\r\n" + dkimpy_sign(MESSAGE, "rsa", "example.com", private)
    auth = verify(dns_server, message, {"rsa._domainkey.example.com": record})
    assert results(auth) == [("pass", "example.com", "rsa")]


def test_l_tag_covering_the_whole_body_passes_and_is_noted(dns_server: Any) -> None:
    private, record = rsa_key(2048)
    message = dkimpy_sign(MESSAGE, "rsa", "example.com", private, length=True)
    auth = verify(dns_server, message, {"rsa._domainkey.example.com": record})
    assert results(auth) == [("pass", "example.com", "rsa")]
    assert auth.dkim[0].length == len(b"Please run the job.\r\nThanks, Alice\r\n")


def test_content_appended_beyond_l_is_not_a_pass(dns_server: Any) -> None:
    private, record = rsa_key(2048)
    message = dkimpy_sign(MESSAGE, "rsa", "example.com", private, length=True)
    message += b"\r\nP.S. also wire the money to the account below.\r\n"
    auth = verify(dns_server, message, {"rsa._domainkey.example.com": record})
    assert results(auth) == [("policy", "example.com", "rsa")]
    assert "unsigned" in auth.dkim[0].reason
    assert not auth.dkim_aligned_pass("example.com")


# -- RFC 8301 ---------------------------------------------------------------------------------
def test_rsa_sha1_signature_never_passes(dns_server: Any) -> None:
    private, record = rsa_key(2048)
    message = dkimpy_sign(MESSAGE, "rsa", "example.com", private, b"rsa-sha1")
    auth = verify(dns_server, message, {"rsa._domainkey.example.com": record})
    assert results(auth) == [("policy", "example.com", "rsa")]
    assert "sha1" in auth.dkim[0].reason


def test_rsa_key_under_1024_bits_never_passes(dns_server: Any) -> None:
    private, record = rsa_key(512)
    message = dkimpy_sign(MESSAGE, "weak", "example.com", private)
    auth = verify(dns_server, message, {"weak._domainkey.example.com": record})
    assert results(auth) == [("policy", "example.com", "weak")]
    assert "512" in auth.dkim[0].reason


# -- keys and DNS -----------------------------------------------------------------------------
def test_unsigned_message_is_dkim_none(dns_server: Any) -> None:
    auth = verify(dns_server, MESSAGE, {})
    assert auth.dkim == [] and auth.dkim_checked
    assert auth.environment()["DKIM_RESULT"] == "none"
    assert "dkim=none" in auth.header_value("mx.test.example")


def test_missing_key_is_permerror(dns_server: Any) -> None:
    private, _ = rsa_key(2048)
    auth = verify(dns_server, dkimpy_sign(MESSAGE, "rsa", "example.com", private), {})
    assert results(auth) == [("permerror", "example.com", "rsa")]
    assert "no key" in auth.dkim[0].reason


def test_key_lookup_timeout_is_temperror(dns_server: Any) -> None:
    private, _ = rsa_key(2048)
    message = dkimpy_sign(MESSAGE, "rsa", "example.com", private)
    dns_server.serve({"rsa._domainkey.example.com": ["TIMEOUT"]})
    settings = make_check_settings(dns_server, spf=False, dmarc=False, arc=False, dns_timeout=0.3)
    auth = authenticate(message, client_ip="", helo="", mail_from="", settings=settings, authserv_id="mx")
    assert results(auth) == [("temperror", "example.com", "rsa")]


@pytest.mark.parametrize(
    "record",
    ["v=DKIM1; k=rsa; p=not*base64", "v=DKIM1; k=rsa; p=", "v=DKIM1; k=dsa; p=AAAA", "v=DKIM2; p=AAAA"],
    ids=["bad-base64", "revoked", "unknown-k", "bad-version"],
)
def test_unusable_key_record_is_permerror(dns_server: Any, record: str) -> None:
    private, _ = rsa_key(2048)
    message = dkimpy_sign(MESSAGE, "rsa", "example.com", private)
    auth = verify(dns_server, message, {"rsa._domainkey.example.com": record})
    assert results(auth) == [("permerror", "example.com", "rsa")]
    assert "unusable key" in auth.dkim[0].reason


@pytest.mark.parametrize(
    "signature",
    [
        b"DKIM-Signature: v=1; a=rsa-sha256; d=; s=sel; h=from; bh=AAAA; b=AAAA",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=; h=from; bh=AAAA; b=AAAA",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=[192.0.2.1]; s=sel; h=from; bh=AAAA; b=AAAA",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=a..b; h=from; bh=AAAA; b=AAAA",
        b"DKIM-Signature: v=1; a=rsa-sha512; d=example.com; s=sel; h=from; bh=AAAA; b=AAAA",
        b"DKIM-Signature: v=1; d=example.com; s=sel",
        b"DKIM-Signature: this is not a tag list",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=sel; h=from; bh=AAAA; b=AAAA; l=x",
        b"DKIM-Signature: v=1; a=rsa-sha256; d=example.com; s=" + b"x" * 70 + b"; h=from; bh=AAAA; b=AAAA",
    ],
    ids=[
        "empty-d",
        "empty-s",
        "literal-d",
        "empty-label-s",
        "unknown-a",
        "missing-tags",
        "garbage",
        "bad-l",
        "long-label",
    ],
)
def test_malformed_signature_is_permerror_not_an_exception(dns_server: Any, signature: bytes) -> None:
    auth = verify(dns_server, signature + b"\r\n" + MESSAGE, {})
    assert len(auth.dkim) == 1
    assert auth.dkim[0].result == "permerror", auth.dkim[0].reason
    assert auth.header_value("mx.test.example").startswith("mx.test.example; dkim=permerror")


# -- limits: how many signatures, one lookup per key, the file never read whole ----------------
def test_two_hundred_signatures_with_one_key_cost_one_lookup_and_five_verifications(dns_server: Any) -> None:
    private, record = rsa_key(2048)
    signature = dkimpy_sign(MESSAGE, "rsa", "example.com", private)[: -len(MESSAGE)]
    auth = verify(dns_server, signature * 200 + MESSAGE, {"rsa._domainkey.example.com": record})
    assert results(auth)[:5] == [("pass", "example.com", "rsa")] * 5
    assert [(s.result, s.reason) for s in auth.dkim[5:]] == [
        ("policy", "195 more signatures not verified (at most 5 a message)")
    ]
    assert [q[0] for q in dns_server.queries] == ["rsa._domainkey.example.com"]


def test_the_signatures_of_the_from_domain_are_verified_first(dns_server: Any) -> None:
    private, record = rsa_key(2048)
    message = dkimpy_sign(MESSAGE, "rsa", "example.com", private)
    for n in range(8):  # signatures of others on top of the author's
        message = hand_sign_ed25519(message, f"s{n}", f"other{n}.example", ED25519_SEED)
    auth = verify(dns_server, message, {"rsa._domainkey.example.com": record})
    assert results(auth)[:4] == [("permerror", f"other{n}.example", f"s{n}") for n in (7, 6, 5, 4)]
    assert results(auth)[4] == ("pass", "example.com", "rsa")
    assert auth.dkim[5].result == "policy" and auth.dkim_aligned_pass("example.com")


def test_a_file_is_checked_without_being_read_whole(dns_server: Any, tmp_path: Any) -> None:
    private, record = rsa_key(2048)
    body = b"line of the body\r\n" * 20_000
    head, _, _ = MESSAGE.partition(b"\r\n\r\n")
    signed = dkimpy_sign(head + b"\r\n\r\n" + body, "rsa", "example.com", private, length=True)
    path = tmp_path / "message"
    path.write_bytes(signed + b"appended footer\r\n")
    dns_server.serve({"rsa._domainkey.example.com": [{"TXT": record}]})
    settings = make_check_settings(dns_server, spf=False, dmarc=False, arc=False)
    reads: list[int] = []
    real_open = open

    class Counting:
        def __init__(self, f: Any) -> None:
            self.f = f

        def read(self, size: int = -1) -> bytes:
            assert size is not None and 0 < size <= 256 * 1024, size
            data = self.f.read(size)
            reads.append(len(data))
            return data

        def __getattr__(self, name: str) -> Any:
            return getattr(self.f, name)

        def __enter__(self) -> Counting:
            return self

        def __exit__(self, *args: Any) -> None:
            self.f.close()

    import builtins

    builtins.open = lambda *a, **k: Counting(real_open(*a, **k))  # type: ignore[assignment]
    try:
        auth = authenticate(
            str(path), client_ip="", helo="", mail_from="", settings=settings, authserv_id="mx"
        )
    finally:
        builtins.open = real_open
    assert results(auth) == [("policy", "example.com", "rsa")]
    assert "leaves 17 body bytes unsigned" in auth.dkim[0].reason
    assert path.stat().st_size <= sum(reads) <= path.stat().st_size + 16 * 1024  # once, in pieces


def test_more_than_fifty_arc_sets_fail_without_a_lookup(dns_server: Any) -> None:
    sets = b"".join(
        b"ARC-Seal: i=%d; a=rsa-sha256; cv=pass; d=evil.example; s=s%d; b=AAAA\r\n"
        b"ARC-Message-Signature: i=%d; a=rsa-sha256; d=evil.example; s=s%d; h=from; bh=AAAA; b=AAAA\r\n"
        b"ARC-Authentication-Results: i=%d; evil.example; none\r\n" % (i, i, i, i, i)
        for i in range(51, 0, -1)
    )
    dns_server.serve({})
    settings = make_check_settings(dns_server, spf=False, dkim=False, dmarc=False)
    auth = authenticate(
        sets + MESSAGE, client_ip="", helo="", mail_from="", settings=settings, authserv_id="mx"
    )
    assert auth.arc is not None and auth.arc.result == "fail"
    assert "more than 50 ARC sets" in auth.arc.reason
    assert dns_server.queries == []


# -- RFC 8460 TLS reports: keys with the service type s=tlsrpt --------------------------
TLS_REPORT = (
    b"From: tlsrpt@reporter.example\r\n"
    b"To: tls-reports@example.org\r\n"
    b"Subject: Report Domain: example.org Submitter: reporter.example Report-ID: <1@reporter.example>\r\n"
    b"TLS-Report-Domain: example.org\r\n"
    b"TLS-Report-Submitter: reporter.example\r\n"
    b'Content-Type: multipart/report; report-type="tlsrpt";\r\n\tboundary="b"\r\n'
    b"\r\n"
    b"--b\r\nContent-Type: text/plain\r\n\r\nA report.\r\n"
    b"--b\r\nContent-Type: application/tlsrpt+json\r\n\r\n{}\r\n--b--\r\n"
)
TLS_HEADERS = [b"from", b"to", b"subject", b"tls-report-domain", b"content-type"]


def test_a_tls_report_verifies_with_a_tlsrpt_service_key_other_mail_does_not(dns_server: Any) -> None:
    private, record = rsa_key(2048)
    keys = {"tls._domainkey.reporter.example": record.replace("v=DKIM1;", "v=DKIM1; s=tlsrpt;")}
    report = dkimpy_sign(TLS_REPORT, "tls", "reporter.example", private, headers=TLS_HEADERS, length=True)
    assert results(verify(dns_server, report, keys)) == [("pass", "reporter.example", "tls")]
    plain = dkimpy_sign(
        MESSAGE.replace(b"example.com", b"reporter.example"), "tls", "reporter.example", private
    )
    [sig] = verify(dns_server, plain, keys).dkim
    assert sig.result != "pass" and "tlsrpt" in sig.reason  # s=tlsrpt keys sign reports only
    forged = plain.replace(b"Subject:", b"TLS-Report-Domain: example.org\r\nSubject:")  # no report type
    assert verify(dns_server, forged, keys).dkim[0].result != "pass"
