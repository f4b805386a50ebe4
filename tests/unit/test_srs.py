"""SRS (inbound/srs.py) against vectors of real implementations: postsrsd's libsrs2 test
(tests/unit/test_srs2.c: secret "tops3cr3t", 2020-01-01 00:01 UTC) and srslib 0.1.5
(computed with it for the same secret and time)."""

from __future__ import annotations

import pytest

from inbound import srs

SECRET = "tops3cr3t"
NOW = 1577836860.0  # 2020-01-01 00:01:00 UTC, postsrsd's faketime
DAY = 86400


def test_srs0_matches_libsrs2() -> None:
    # postsrsd: srs_forward("test@otherdomain.com", "example.com")
    assert (
        srs.encode("test@otherdomain.com", "example.com", SECRET, NOW)
        == "SRS0=vmyz=2W=otherdomain.com=test@example.com"
    )
    assert srs.decode("SRS0=vmyz=2W=otherdomain.com=test@example.com", SECRET, NOW) == "test@otherdomain.com"


def test_srs0_matches_srslib_and_keeps_the_case_of_the_sender() -> None:
    assert (
        srs.encode("Test@OtherDomain.com", "srs.example", SECRET, NOW)
        == "SRS0=vmyz=2W=OtherDomain.com=Test@srs.example"
    )
    tagged = srs.encode("bob+tag@a.example", "srs.example", SECRET, NOW)
    assert tagged == "SRS0=tSde=2W=a.example=bob+tag@srs.example"


def test_a_rewritten_sender_becomes_srs1_to_its_first_hop_as_srslib_writes_it() -> None:
    first = "SRS0=vmyz=2W=otherdomain.com=test@example.com"
    assert (
        srs.encode(first, "fwd.example", SECRET, NOW)
        == "SRS1=JO9m=example.com==vmyz=2W=otherdomain.com=test@fwd.example"
    )
    again = "SRS1=JO9m=example.com==vmyz=2W=otherdomain.com=test@fwd.example"
    assert (
        srs.encode(again, "srs.example", SECRET, NOW)
        == "SRS1=JO9m=example.com==vmyz=2W=otherdomain.com=test@srs.example"
    )
    assert srs.decode(again, SECRET, NOW) == first


def test_the_hash_is_checked_case_insensitively() -> None:
    assert srs.decode("srs0=VMYZ=2w=OTHERDOMAIN.COM=TEST@EXAMPLE.COM", SECRET, NOW) == "TEST@OTHERDOMAIN.COM"


@pytest.mark.parametrize(
    "address",
    [
        "SRS0=vmyA=2W=otherdomain.com=test@example.com",  # hash of something else
        "SRS0=vmy=2W=otherdomain.com=test@example.com",  # hash cut short
        "SRS0=vmyz=2X=otherdomain.com=test@example.com",  # stamp changed
        "SRS0=vmyz=2W=otherdomain.com=eve@example.com",  # sender changed
        "SRS0=vmyz=2W=evil.example=test@example.com",  # host changed
        "SRS1=JO9m=evil.example==vmyz=2W=otherdomain.com=test@fwd.example",
        "SRS0=vmyz=2W@example.com",
        "test@example.com",
    ],
)
def test_forged_or_malformed_addresses_are_refused(address: str) -> None:
    with pytest.raises(srs.SRSError):
        srs.decode(address, SECRET, NOW)


def test_another_secret_does_not_decode() -> None:
    with pytest.raises(srs.SRSError, match="hash"):
        srs.decode("SRS0=vmyz=2W=otherdomain.com=test@example.com", "other", NOW)


def test_an_srs0_address_expires_after_max_age_days() -> None:
    address = srs.encode("alice@sender.example", "srs.example", "s3", NOW)
    assert srs.decode(address, "s3", NOW + srs.MAX_AGE_DAYS * DAY) == "alice@sender.example"
    with pytest.raises(srs.SRSError, match="expired"):
        srs.decode(address, "s3", NOW + (srs.MAX_AGE_DAYS + 1) * DAY)
    with pytest.raises(srs.SRSError, match="expired"):  # from the future: wraps to ~1000 days old
        srs.decode(address, "s3", NOW - DAY)


def test_stamps_are_base32_days_modulo_1024() -> None:
    assert srs.stamp(NOW) == "2W"
    assert srs.stamp(0) == "AA"
    assert srs.stamp(1023 * DAY) == "77"
    assert srs.stamp(1024 * DAY) == "AA"
    assert srs.stamp_age("77", 1024 * DAY) == 1
    with pytest.raises(srs.SRSError):
        srs.stamp_age("1!", NOW)


def test_the_null_sender_and_our_own_domain_are_not_rewritten() -> None:
    assert srs.encode("", "srs.example", SECRET, NOW) == ""
    assert srs.encode("bob@SRS.example", "srs.example", SECRET, NOW) == "bob@SRS.example"
    with pytest.raises(srs.SRSError):
        srs.encode("no-at-sign", "srs.example", SECRET, NOW)


def test_is_srs_tells_a_bounce_address_by_its_local_part() -> None:
    assert srs.is_srs("SRS0=x=y=z=w") and srs.is_srs("srs1+abc") and srs.is_srs("SRS0-a")
    assert not srs.is_srs("srs") and not srs.is_srs("SRS2=x") and not srs.is_srs("srs0x")
