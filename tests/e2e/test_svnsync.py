"""handlers/svnsync.py with real Subversion repositories: a source, a mirror set up with
`svnsync init`, commits in the source, and the handler bringing the mirror up to date."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from conftest import ROOT, Server
from conftest_dns import checks_against

from inbound.config import Config, load
from inbound.delivery.router import load_python
from inbound.envelope import Envelope
from inbound.outcomes import TempFail

pytestmark = pytest.mark.skipif(
    shutil.which("svnsync") is None or shutil.which("svnadmin") is None,
    reason="Subversion is not installed (Debian: apt-get install subversion)",
)

COMMIT_MAIL = (ROOT / "examples" / "mail" / "svn-commit.eml").read_bytes().replace(b"\n", b"\r\n")


def svn(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=30).stdout


@dataclass
class Repos:
    source: Path
    mirror: Path

    @property
    def source_url(self) -> str:
        return self.source.as_uri()

    @property
    def mirror_url(self) -> str:
        return self.mirror.as_uri()

    def commit(self, name: str) -> None:
        svn("svn", "mkdir", "--non-interactive", "-m", f"add {name}", f"{self.source_url}/{name}")

    def youngest(self, which: Path) -> int:
        return int(svn("svnlook", "youngest", str(which)).strip())


@pytest.fixture
def repos(tmp_path: Path) -> Repos:
    """A source with one commit and an initialised, still empty mirror."""
    found = Repos(tmp_path / "source", tmp_path / "mirror")
    svn("svnadmin", "create", str(found.source))
    svn("svnadmin", "create", str(found.mirror))
    hook = found.mirror / "hooks" / "pre-revprop-change"
    hook.write_text("#!/bin/sh\nexit 0\n")
    hook.chmod(0o755)
    svn("svnsync", "initialize", "--non-interactive", found.mirror_url, found.source_url)
    found.commit("trunk")
    return found


@pytest.fixture
def config(server: Server) -> Config:
    return load(str(server.config))


def handler() -> Any:
    loaded = load_python("svnsync", str(ROOT / "handlers" / "svnsync.py"))
    assert not loaded.error, loaded.error
    return loaded.module


SPF_PASS = SimpleNamespace(spf=SimpleNamespace(result="pass", identity="mailfrom"), dkim=[], dmarc=None)


def envelope(
    config: Config, settings: dict[str, str], sender: str = "svn@example.org", auth: Any = SPF_PASS
) -> Envelope:
    return Envelope(
        queue_id="Q1",
        sender=sender,
        recipients=["svnsync@example.org"],
        handler="svnsync",
        config=settings,
        server_config=config,
        raw=COMMIT_MAIL,
        auth=auth,
    )


def settings(repos: Repos, **more: str) -> dict[str, str]:
    return {"mirror": repos.mirror_url, "senders": "build@example.org, SVN@example.org", **more}


def test_commit_mail_brings_the_mirror_to_the_source(repos: Repos, config: Config) -> None:
    repos.commit("branches")
    assert repos.youngest(repos.mirror) == 0
    handler().handle(envelope(config, settings(repos)))
    assert repos.youngest(repos.mirror) == repos.youngest(repos.source) == 2
    repos.commit("tags")
    handler().handle(envelope(config, settings(repos), sender="Build@Example.org"))
    assert repos.youngest(repos.mirror) == 3


def test_mail_from_another_sender_is_ignored(repos: Repos, config: Config) -> None:
    handler().handle(envelope(config, settings(repos), sender="mallory@example.net"))
    handler().handle(envelope(config, {"mirror": repos.mirror_url}))  # no senders configured: nobody
    assert repos.youngest(repos.mirror) == 0


@pytest.mark.parametrize(
    "auth",
    [
        None,  # the checks are off
        SimpleNamespace(spf=SimpleNamespace(result="none"), dkim=[], dmarc=None),  # no SPF record
        SimpleNamespace(spf=SimpleNamespace(result="neutral"), dkim=[], dmarc=SimpleNamespace(result="none")),
        SimpleNamespace(spf=SimpleNamespace(result="pass", identity="helo"), dkim=[], dmarc=None),
        # signed by the forger's own domain, which he also put in From: aligned with From, not the sender
        SimpleNamespace(
            spf=SimpleNamespace(result="none"),
            dkim=[SimpleNamespace(result="pass", domain="evil.example")],
            dmarc=SimpleNamespace(result="pass"),
        ),
    ],
    ids=["checks-off", "spf-none", "spf-neutral", "helo-only", "dkim-of-another-domain"],
)
def test_an_allowed_sender_the_checks_do_not_authenticate_is_ignored(
    repos: Repos, config: Config, auth: Any
) -> None:
    """Issue 13: a forged allow-listed sender whose domain has no SPF, or with checks off,
    ran svnsync."""
    handler().handle(envelope(config, settings(repos), auth=auth))
    assert repos.youngest(repos.mirror) == 0


def test_a_dkim_signature_of_the_senders_domain_is_enough(repos: Repos, config: Config) -> None:
    auth = SimpleNamespace(
        spf=SimpleNamespace(result="none"), dkim=[SimpleNamespace(result="pass", domain="mail.example.org")]
    )
    handler().handle(envelope(config, settings(repos), auth=auth))
    assert repos.youngest(repos.mirror) == 1


@pytest.mark.parametrize(
    "auth",
    [
        SimpleNamespace(spf=SimpleNamespace(result="pass"), dkim=[], dmarc=SimpleNamespace(result="fail")),
        SimpleNamespace(spf=SimpleNamespace(result="fail"), dkim=[], dmarc=SimpleNamespace(result="none")),
        SimpleNamespace(spf=SimpleNamespace(result="softfail"), dkim=[], dmarc=None),
    ],
)
def test_mail_the_checks_contradict_is_ignored(repos: Repos, config: Config, auth: Any) -> None:
    handler().handle(envelope(config, settings(repos), auth=auth))
    assert repos.youngest(repos.mirror) == 0


def test_spf_fail_with_passing_dkim_still_syncs(repos: Repos, config: Config) -> None:
    auth = SimpleNamespace(
        spf=SimpleNamespace(result="fail"),
        dkim=[SimpleNamespace(result="pass", domain="example.org")],
        dmarc=SimpleNamespace(result="pass"),
    )
    handler().handle(envelope(config, settings(repos), auth=auth))
    assert repos.youngest(repos.mirror) == 1


def test_missing_mirror_setting_is_a_temporary_failure(config: Config) -> None:
    with pytest.raises(TempFail, match="mirror is not set"):
        handler().handle(envelope(config, {"senders": "svn@example.org"}))


def test_unreachable_repository_is_a_temporary_failure_with_svnsyncs_reason(
    repos: Repos, config: Config, tmp_path: Path
) -> None:
    gone = (tmp_path / "no-such-repository").as_uri()
    with pytest.raises(TempFail, match=r"svnsync of .* failed: svnsync: E\d+"):
        handler().handle(envelope(config, settings(repos, mirror=gone)))


def test_mirror_locked_by_another_svnsync_is_a_temporary_failure(
    repos: Repos, config: Config, tmp_path: Path
) -> None:
    fake = tmp_path / "fake-svnsync"
    fake.write_text(
        "#!/bin/sh\n"
        'echo "svnsync: E000022: Couldn\'t get lock on destination repos after 10 attempts" >&2\n'
        "echo 'svnsync: run svnsync with --steal-lock' >&2\n"
        "exit 1\n"
    )
    fake.chmod(0o755)
    with pytest.raises(TempFail, match="Couldn't get lock on destination repos after 10 attempts$"):
        handler().handle(envelope(config, settings(repos, svnsync=str(fake))))


def hold_lock(path: str) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o640)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def test_a_second_sync_waits_for_the_first_and_then_runs(
    repos: Repos, config: Config, tmp_path: Path
) -> None:
    lock = str(tmp_path / "sync.lock")
    fd = hold_lock(lock)
    threading.Timer(0.5, os.close, (fd,)).start()
    started = time.monotonic()
    handler().handle(envelope(config, settings(repos, lock=lock, lock_wait="10")))
    assert time.monotonic() - started >= 0.4
    assert repos.youngest(repos.mirror) == 1


def test_a_sync_that_waits_too_long_for_the_lock_is_temporary(
    repos: Repos, config: Config, tmp_path: Path
) -> None:
    lock = str(tmp_path / "sync.lock")
    fd = hold_lock(lock)
    try:
        with pytest.raises(TempFail, match="still running"):
            handler().handle(envelope(config, settings(repos, lock=lock, lock_wait="0.3")))
    finally:
        os.close(fd)
    assert repos.youngest(repos.mirror) == 0


def test_default_lock_lives_in_the_spool(repos: Repos, config: Config) -> None:
    handler().handle(envelope(config, settings(repos)))
    assert [n for n in os.listdir(config.server.spool) if n.startswith("svnsync-") and n.endswith(".lock")]


def test_a_hanging_svnsync_is_killed_at_the_timeout(repos: Repos, config: Config, tmp_path: Path) -> None:
    fake = tmp_path / "slow-svnsync"
    fake.write_text("#!/bin/sh\nsleep 30\n")
    fake.chmod(0o755)
    started = time.monotonic()
    with pytest.raises(TempFail, match="longer than 0.3 s"):
        handler().handle(envelope(config, settings(repos, svnsync=str(fake), timeout="0.3")))
    assert time.monotonic() - started < 5


def test_a_forged_commit_mail_over_smtp_does_not_sync(repos: Repos, server: Server, dns_server: Any) -> None:
    """The whole path: SMTP over pipes, the checks against the real DNS test server, the
    shipped handler.  example.org publishes no SPF record: the forged mail is ignored;
    once it authorises the client, the same mail syncs."""
    shutil.copy(ROOT / "handlers" / "svnsync.py", server.handlers / "svnsync.py")
    server.write_config(
        checks=checks_against(dns_server, arc="no"),
        handler__svnsync={"mirror": repos.mirror_url, "senders": "svn@example.org"},
    )
    mail = COMMIT_MAIL.replace(b"@localhost", b"@example.org")
    dialogue = (
        b"EHLO svn.example.org\r\nMAIL FROM:<svn@example.org>\r\nRCPT TO:<svnsync@example.org>\r\n"
        b"DATA\r\n" + mail + b".\r\nQUIT\r\n"
    )
    dns_server.serve({})
    assert b"\r\n250 2.0.0" in server.smtp(dialogue, remote_addr="203.0.113.9")
    assert repos.youngest(repos.mirror) == 0
    assert "svnsync: ignored mail from <svn@example.org>: not authenticated: SPF is none" in server.log()
    dns_server.serve({"example.org": [{"TXT": "v=spf1 ip4:192.0.2.10 -all"}]})
    assert b"\r\n250 2.0.0" in server.smtp(dialogue, remote_addr="192.0.2.10")
    assert repos.youngest(repos.mirror) == 1
