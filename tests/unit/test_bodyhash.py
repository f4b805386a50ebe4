"""Streamed DKIM/ARC body hashes (checks/bodyhash.py, checks/dkim.py) give what dkimpy gives
on the whole message in memory: the canonical body for every small body and chunk size,
across the real chunk boundary, with l= limits; and the same verdict (or exception) for
every signature of randomly made, signed and tampered messages, DKIM and ARC.
"""

from __future__ import annotations

import base64
import collections
import io
import itertools
import random
import re
from typing import Any

import dkim
import nacl.signing
import pytest
from conftest import TEST_DATA
from dkim.canonicalization import CanonicalizationPolicy
from dkim.crypto import HASH_ALGORITHMS

from inbound.checks import bodyhash
from inbound.checks.dkim import Signed

DOMAIN = b"example.com"
RSA_KEY = (TEST_DATA / "dkim" / "test-rsa2048.pem").read_bytes()
ED_SEED = bytes(range(32))
KEYS = {
    b"rsa._domainkey.example.com.": b"v=DKIM1; k=rsa; p="
    + (TEST_DATA / "dkim" / "test-rsa2048.pub.b64").read_text().strip().encode(),
    b"ed._domainkey.example.com.": b"v=DKIM1; k=ed25519; p="
    + base64.b64encode(bytes(nacl.signing.SigningKey(ED_SEED).verify_key)),
}
OUTCOMES: collections.Counter = collections.Counter()


def dnsfunc(missing: tuple[bytes, ...] = ()) -> Any:
    table = {k: v for k, v in KEYS.items() if k not in missing}
    return lambda name, timeout=5: table.get(name)


def outcome(fn: Any) -> tuple:
    try:
        return ("ok", fn())
    except Exception as e:  # the same exception class and message as dkimpy
        assert not isinstance(e, LookupError), e  # would mean a body hash was not computed
        return ("exc", type(e).__name__, str(e))


def streamed(message: bytes, chunk_size: int = bodyhash.CHUNK_SIZE, arc: bool = False) -> Signed:
    f = io.BytesIO(message)
    head, complete = bodyhash.read_header_block(f)
    original = bodyhash.CHUNK_SIZE
    bodyhash.CHUNK_SIZE = chunk_size
    try:
        signed = Signed.read(head, complete, f, with_dkim=not arc, with_arc=arc, from_domain="example.com")
    finally:
        bodyhash.CHUNK_SIZE = original
    assert not signed.problem, signed.problem
    return signed


def dkimpy_canon(raw_body: bytes, relaxed: bool) -> bytes:
    body = dkim.rfc822_parse(b"A: b\r\n\r\n" + raw_body)[1]
    policy = CanonicalizationPolicy.from_c_value(b"simple/relaxed" if relaxed else b"simple/simple")
    return policy.canonicalize_body(body)


def pieces(data: bytes, n: int) -> list[bytes]:
    return [data[i : i + n] for i in range(0, len(data), n)]


# -- canonicalization --------------------------------------------------------------------
SMALL = [
    b"".join(p) for k in range(6) for p in itertools.product([b"a", b" ", b"\t", b"\r", b"\n"], repeat=k)
]


@pytest.mark.parametrize("chunk_size", range(1, 8))
def test_every_small_body_canonicalizes_as_dkimpy_does_in_any_chunks(chunk_size: int) -> None:
    for body in SMALL:
        for relaxed in (False, True):
            got = bodyhash.canonical_body(pieces(body, chunk_size), relaxed)
            assert got == dkimpy_canon(body, relaxed), (body, relaxed)


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 9])
def test_hashes_and_lengths_with_l_match_dkimpy(chunk_size: int) -> None:
    rng = random.Random(chunk_size)
    alphabet = [b"a", b"b", b" ", b"  ", b"\t", b"\r", b"\n", b"\r\n", b"\r\n\r\n", b" \r\n"]
    sha = HASH_ALGORITHMS[b"rsa-sha256"]
    for _ in range(300):
        body = b"".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        keys = [(c, sha, limit) for c in (b"simple", b"relaxed") for limit in (None, 0, 1, 3, 10, 1000)]
        digests, lengths = bodyhash.hash_body(pieces(body, chunk_size), keys)
        for c, constructor, limit in keys:
            canon = dkimpy_canon(body, c == b"relaxed")
            assert lengths[c] == len(canon)
            assert digests[(c, constructor, limit)] == constructor(canon[:limit]).digest()


@pytest.mark.parametrize("n", [65534, 65535, 65536, 65537])
def test_sequences_across_the_real_chunk_boundary(n: int) -> None:
    for tail in [b"\r\n", b" \t\r\n", b"\r\n\r\n\r\n", b"  \r\n \r\nz", b"\r", b"\r\r\n", b"   "]:
        body = b"a" * n + tail + b" \r\n" * 3
        for relaxed in (False, True):
            assert bodyhash.canonical_body(pieces(body, bodyhash.CHUNK_SIZE), relaxed) == dkimpy_canon(
                body, relaxed
            )


def test_a_header_block_over_the_cap_is_not_read_whole() -> None:
    message = b"From: a@example.com\r\nX-Big: " + b"x" * 300_000 + b"\r\n\r\nbody\r\n"
    head, complete = bodyhash.read_header_block(io.BytesIO(message))
    assert not complete and len(head) == bodyhash.HEADER_CAP
    head, complete = bodyhash.read_header_block(io.BytesIO(message), cap=400_000)
    assert complete and head == message[: -len(b"body\r\n")]


# -- signed messages: the same verdicts --------------------------------------------------
TOKENS = [b"word", b"x", b"\xc3\xa9", b" ", b"  ", b"\t", b" \t ", b"\r\n", b"\r\n", b"\n", b"\r"]
TOKENS += [b"\r\n\r\n", b"  \r\n", b"\t\r\n", b"\r\r\n", b". \r\n"]


def random_body(rng: random.Random) -> bytes:
    if rng.random() < 0.1:
        return rng.choice(
            [b"", b"\r\n", b"\r\n\r\n\r\n", b"  ", b" \r\n \r\n", b"x", b"\r", b"\t\r\n", b"a \t"]
        )
    parts = []
    for _ in range(rng.randint(1, 120)):
        r = rng.random()
        if r < 0.03:
            parts.append(b"L" * rng.randint(1000, 5000))
        elif r < 0.05:
            parts.append(rng.choice([b" ", b"\t"]) * rng.randint(2, 3000))
        else:
            parts.append(rng.choice(TOKENS))
    if rng.random() < 0.5:
        parts.append(rng.choice([b"\r\n", b"\n", b" \r\n"]) * rng.randint(1, 6))
    if rng.random() < 0.05:
        parts.insert(0, b"x" * rng.randint(70000, 140000))  # across real chunks
    return b"".join(parts)


def make_message(rng: random.Random, body: bytes) -> bytes:
    eol = b"\r\n" if rng.random() < 0.85 else b"\n"
    fields = [
        b"From: Alice <alice@example.com>",
        b"To: bob@example.org",
        b"Subject: test  %d" % rng.randint(0, 10**6),
        b"Date: Mon, 1 Jan 2024 00:00:00 +0000",
    ]
    return eol.join(fields) + eol + eol + body


def sign(message: bytes, rng: random.Random) -> bytes:
    kind = rng.choice(["rsa", "rsa", "ed", "sha1"])
    algorithm = {"rsa": b"rsa-sha256", "ed": b"ed25519-sha256", "sha1": b"rsa-sha1"}[kind]
    key = base64.b64encode(ED_SEED) if kind == "ed" else RSA_KEY
    canon = (rng.choice([b"simple", b"relaxed"]), rng.choice([b"simple", b"relaxed"]))
    signature = dkim.sign(
        message,
        b"ed" if kind == "ed" else b"rsa",
        DOMAIN,
        key,
        canonicalize=canon,
        signature_algorithm=algorithm,
        length=rng.random() < 0.4,
        include_headers=[b"from", b"to", b"subject"],
    )
    return signature + message


def tamper(message: bytes, how: str, rng: random.Random) -> bytes:
    match = re.search(rb"(?:\A|\n)\r?\n", message)
    head, body = (message[: match.end()], message[match.end() :]) if match else (message, b"")
    if how == "append":
        return message + rng.choice([b"footer\r\n", b"\r\n\r\nmore", b"  \t\r\n", b"x"])
    if how == "truncate" and body:
        return head + body[: rng.randrange(len(body))]
    if how == "flip" and body:
        i = rng.randrange(len(body))
        return head + body[:i] + bytes([body[i] ^ 1]) + body[i + 1 :]
    if how == "body_ws":
        return head + body.replace(b"\r\n", b" \t\r\n", 1) + b"\r\n\r\n"
    if how == "header":
        return re.sub(rb"Subject: test", b"Subject: Test", message, count=1)
    if how == "bad_bh":
        return re.sub(rb"bh=[^;]+;", b"bh=" + b"A" * 43 + b"=;", message, count=1)
    return message


@pytest.mark.parametrize("seed", range(120))
def test_dkim_verdicts_match_dkimpy_on_the_whole_message(seed: int) -> None:
    rng = random.Random(seed)
    message = make_message(rng, random_body(rng))
    for _ in range(rng.randint(1, 3)):
        message = sign(message, rng)
    how = rng.choice(["none", "none", "append", "truncate", "flip", "body_ws", "header", "bad_bh"])
    message = tamper(message, how, rng)
    lookup = dnsfunc((b"ed._domainkey.example.com.",) if rng.random() < 0.05 else ())
    signed = streamed(message, chunk_size=rng.choice([3, 64, 4096, bodyhash.CHUNK_SIZE]))
    reference = dkim.DKIM(message)
    for name in (b"simple", b"relaxed"):
        if name in signed.lengths:
            policy = CanonicalizationPolicy.from_c_value(b"simple/" + name)
            assert signed.lengths[name] == len(policy.canonicalize_body(reference.body))
    count = sum(1 for n, _ in reference.headers if n.lower() == b"dkim-signature")
    for idx in range(count):
        want = outcome(lambda i=idx: dkim.DKIM(message).verify(idx=i, dnsfunc=lookup))
        got = outcome(lambda i=idx: signed.dkim.verify(idx=i, dnsfunc=lookup))
        assert got == want, (idx, how)
        OUTCOMES[want[:2]] += 1


def build_arc(seed: int) -> bytes:
    rng = random.Random(seed)
    message = make_message(rng, random_body(rng))
    if rng.random() < 0.5:
        message = sign(message, rng)
    message = b"Authentication-Results: lists.example.org; spf=pass smtp.mailfrom=example.com\r\n" + message
    message = b"".join(dkim.arc_sign(message, b"rsa", DOMAIN, RSA_KEY, b"lists.example.org")) + message
    if rng.random() < 0.3:  # a list footer between hops: the first AMS breaks
        message += b"-- \r\nfooter\r\n"
    for hop in range(rng.randint(0, 2)):
        server = b"mx%d.example.net" % hop
        message = b"Authentication-Results: " + server + b"; arc=pass\r\n" + message
        message = b"".join(dkim.arc_sign(message, b"rsa", DOMAIN, RSA_KEY, server)) + message
    return tamper(message, rng.choice(["none", "none", "append", "flip", "body_ws", "header"]), rng)


@pytest.mark.parametrize("seed", range(30))
def test_arc_verdicts_match_dkimpy_on_the_whole_message(seed: int) -> None:
    message = build_arc(seed)
    want = dkim.arc_verify(message, dnsfunc=dnsfunc())
    cv, _sets, reason = streamed(message, arc=True).arc.verify(dnsfunc=dnsfunc())
    assert (cv, reason) == (want[0], want[2])
    OUTCOMES[("arc", want[0])] += 1


def test_the_random_cases_cover_every_outcome() -> None:
    if not OUTCOMES:
        pytest.skip("runs after the cases above")
    assert OUTCOMES[("ok", True)] > 20
    assert OUTCOMES[("ok", False)] > 5
    assert OUTCOMES[("exc", "ValidationError")] > 5
    assert OUTCOMES[("arc", dkim.CV_Pass)] > 3
    assert OUTCOMES[("arc", dkim.CV_Fail)] > 3
