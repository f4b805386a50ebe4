"""The compiled config cache (config.load): written by the first load of a file, used by
the next ones for that very content and code, never trusted when it is not ours."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import Server

from inbound import config


def cache_of(server: Server) -> Path:
    return server.spool / "cache" / "config.marshal"


@pytest.fixture
def spooled(server: Server) -> Server:
    server.spool.mkdir(exist_ok=True)
    return server


def no_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path: str) -> config.Config:
        raise AssertionError("parsed again")

    monkeypatch.setattr(config, "parse", refuse)


def test_the_first_load_writes_the_cache_and_the_next_reads_it(
    spooled: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed = config.load(str(spooled.config))
    assert cache_of(spooled).stat().st_mode & 0o777 == 0o600  # it may hold secrets
    no_parsing(monkeypatch)
    again = config.load(str(spooled.config))
    assert repr(again) == repr(parsed) and again.is_local_domain("example.org")
    assert again.settings_for("nothing") == {}


def test_a_changed_file_is_parsed_again_even_with_the_same_size_and_time(spooled: Server) -> None:
    config.load(str(spooled.config))
    st = spooled.config.stat()
    text = spooled.config.read_text()
    assert "data_timeout = 60\n" in text
    spooled.config.write_text(text.replace("data_timeout = 60\n", "data_timeout = 61\n"))
    os.utime(spooled.config, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert spooled.config.stat().st_size == st.st_size
    assert config.load(str(spooled.config)).server.data_timeout == 61


def test_a_cache_of_other_code_is_not_used(spooled: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    config.load(str(spooled.config))
    monkeypatch.setattr(config, "_code", lambda: (0, 0))
    parsed = []
    real = config.parse
    monkeypatch.setattr(config, "parse", lambda path: parsed.append(path) or real(path))
    config.load(str(spooled.config))
    assert parsed == [str(spooled.config)]


@pytest.mark.parametrize("mode", [0o622, 0o660, 0o666])
def test_a_cache_others_can_write_is_ignored(
    spooled: Server, monkeypatch: pytest.MonkeyPatch, mode: int
) -> None:
    config.load(str(spooled.config))
    cache_of(spooled).chmod(mode)
    path = str(spooled.config)
    assert config.cached(str(cache_of(spooled)), path, spooled.config.read_bytes()) is None


@pytest.mark.parametrize("junk", [b"", b"junk", b"\xe9\x00\x00"])
def test_a_broken_cache_is_parsed_past(spooled: Server, junk: bytes) -> None:
    config.load(str(spooled.config))
    cache_of(spooled).write_bytes(junk)
    assert config.load(str(spooled.config)).server.hostname == "mx.test.example"


def test_without_a_spool_nothing_is_cached_and_no_spool_is_made(server: Server) -> None:
    server.spool.rmdir()  # the fixture makes one, as an installation has it
    assert config.load(str(server.config)).server.hostname == "mx.test.example"
    assert not server.spool.exists()


def test_a_config_without_hostname_is_not_cached(spooled: Server) -> None:
    spooled.write_config(spooled.config.read_text().replace("hostname = mx.test.example\n", ""))
    config.load(str(spooled.config))
    assert not cache_of(spooled).exists()


def test_the_scan_finds_the_spool_as_configparser_does(tmp_path: Path) -> None:
    data = (
        b"; a comment\n[handlers]\nspool = wrong\n[server]\n  ; indented comment\n"
        b"hostname = mx.example ; inline\nSpool: /var/x # inline\n  continued\n[reply]\nspool = no\n"
    )
    assert config._scan(data) == {"hostname": "mx.example", "spool": "/var/x"}
    assert config._cache_path(str(tmp_path / "c.ini"), data) == "/var/x/cache/config.marshal"


def test_a_process_that_does_not_own_the_spool_keeps_no_cache(spooled: Server) -> None:
    import os

    if os.geteuid() != 0:
        import pytest

        pytest.skip("needs root to stand for another owner")
    os.chown(spooled.spool, 65534, 65534)  # nobody's, as mailserver's is; we are root
    config.load(str(spooled.config))
    assert not cache_of(spooled).exists()  # root running `queue` or `check` leaves no root file
