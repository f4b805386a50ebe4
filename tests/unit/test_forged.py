"""Forged Authentication-Results removed from the spooled file (checks/forged.py): the same
bytes as `remove_our_authres` on the message in memory, streaming, with the file read
only as far as its header block when nothing is ours."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

from inbound.checks import forged
from inbound.checks.authres import remove_our_authres

OURS = "mx.test.example"
FIELDS = [
    b"Return-Path: <a@example.com>\r\n",
    b"Authentication-Results: MX.Test.Example; spf=pass smtp.mailfrom=a@example.com\r\n",
    b"Authentication-Results: other.example; dkim=pass header.d=example.com\r\n",
    b"authentication-results : (comment) mx.test.example;\r\n\tdkim=pass header.d=bank.example\r\n",
    b'Authentication-Results: "mx.test.example" 1; none\r\n',
    b"Authentication-Results: mx.test.example.evil; none\r\n",
    b"Authentication-Results:\r\n mx.test.example; none\r\n",
    b"Subject: hi  \r\n",
    b"X-Long: " + b"y" * 70_000 + b"\r\n",
    b"Authentication-Results: (" + b"c" * 70_000 + b") mx.test.example; none\r\n",
]
BODY = b"\r\nAuthentication-Results: mx.test.example; spf=pass\r\nbody  \r\n" + b"z" * 300_000


def cleaned_file(tmp_path: Path, message: bytes) -> tuple[bool, bytes]:
    path = tmp_path / "message"
    path.write_bytes(message)
    changed = forged.remove_forged_results(str(path), OURS)
    return changed, path.read_bytes()


@pytest.mark.parametrize("seed", range(40))
def test_the_file_is_cleaned_exactly_as_the_bytes_are(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    fields = [rng.choice(FIELDS) for _ in range(rng.randint(0, 8))]
    message = b"".join(fields) + (BODY if rng.random() < 0.8 else b"")
    if rng.random() < 0.2:
        message = message.replace(b"\r\n", b"\n")
    expected = remove_our_authres(message, OURS)
    changed, got = cleaned_file(tmp_path, message)
    assert got == expected
    assert changed == (expected != message)
    assert [p.name for p in tmp_path.iterdir()] == ["message"]  # no temporary file left


def test_a_message_without_our_fields_is_left_alone_and_read_only_to_its_body(tmp_path: Path) -> None:
    message = b"Subject: x\r\nAuthentication-Results: other; none\r\n\r\n" + b"body\r\n" * 100_000
    path = tmp_path / "message"
    path.write_bytes(message)
    before = path.stat()
    assert not forged.remove_forged_results(str(path), OURS)
    assert path.stat().st_ino == before.st_ino and path.read_bytes() == message
    f = io.BytesIO(message)
    assert forged.forged_spans(f, OURS) == []
    assert f.tell() == message.index(b"\r\n\r\n") + 4


def test_our_field_at_the_end_of_a_message_without_a_body_is_removed(tmp_path: Path) -> None:
    changed, got = cleaned_file(tmp_path, b"Subject: x\r\nAuthentication-Results: mx.test.example; none")
    assert changed and got == b"Subject: x\r\n"


def test_our_authserv_id_cannot_hide_behind_a_long_comment(tmp_path: Path) -> None:
    hidden = b"Authentication-Results: (" + b"c" * 70_000 + b") mx.test.example; spf=pass\r\n"
    changed, got = cleaned_file(tmp_path, b"Subject: x\r\n" + hidden + b"\r\nbody\r\n")
    assert changed and got == b"Subject: x\r\n\r\nbody\r\n"
