"""svnsync: bring a Subversion mirror up to date when a commit mail arrives.

Point the source repository's post-commit mail (e.g. svnnotify, mailer.py) at
svnsync@<your domain>; each mail from an allowed sender runs

    svnsync synchronize --non-interactive [options] <mirror>

[handler.svnsync] settings:

    mirror    = file:///var/svn/mirror   ; the mirror's URL (required; svnsync init done)
    senders   = svn@example.org          ; envelope senders that may trigger a sync,
                                         ; comma separated, case-insensitive (empty: none)
    options   =                          ; more svnsync arguments (split like a shell, no shell)
    svnsync   = svnsync                  ; the command
    timeout   = 240                      ; seconds one sync may run (below [handlers] timeout)
    lock_wait = 60                       ; seconds to wait while another sync runs
    lock      =                          ; lock file (default <spool>/svnsync-<hash of mirror>.lock)

Mail from anyone else is ignored (logged, not retried).  An allowed sender must also be
authenticated, since an envelope sender is trivially forged: the handler runs only when
SPF passed for it or a DKIM signature of its own (organisational) domain passed.  With
the checks off ([checks] spf and dkim = no), or for a sender whose domain publishes no
SPF record and does not sign, every mail is ignored with a warning: publish SPF for the
commit mailer or have it sign.  Mail whose sender the checks contradict is ignored too:
DMARC fail, or SPF fail/softfail without a passing DKIM signature.  To be stricter
still, `[handler.svnsync] require = dkim=pass` (SPEC REQUIRE) keeps it from running at
all for mail without a passing DKIM signature: such mail ends in failed/ as
`unauthenticated` instead of being ignored.
Syncs of one mirror never run at once: a second mail waits for the lock (at most
lock_wait seconds) and then syncs too, as it may bring newer revisions.  A sync that
fails (the mirror is locked by another svnsync, the source is unreachable...) raises
TempFail with svnsync's first error line, and the queue tries again later.
"""

import os
import time

from inbound import log
from mailserver import TempFail

# Until [handler.svnsync] names both, its address is deferred (451), never accepted and dropped.
REQUIRED_SETTINGS = ["mirror", "senders"]

# Modules beyond os/time are imported where used: every connection loads the handlers.
DEFAULT_TIMEOUT = 240.0
DEFAULT_LOCK_WAIT = 60.0


def handle(envelope):
    config = envelope.config
    sender = envelope.sender.strip().lower()
    allowed = {s.strip().lower() for s in config.get("senders", "").split(",") if s.strip()}
    if not allowed:
        log.warning("svnsync: ignored mail from <%s>: [handler.svnsync] senders is empty", sender)
        return
    if sender not in allowed:
        log.info("svnsync: ignored mail from <%s>: not one of the allowed senders", sender)
        return
    from inbound.autoreply.rules import sender_unauthenticated  # (here: every connection loads us)

    doubt = sender_unauthenticated(envelope.auth, sender)
    if doubt:
        log.warning("svnsync: ignored mail from <%s>: not authenticated: %s", sender, doubt)
        return
    doubt = contradicted(envelope.auth)
    if doubt:
        log.warning("svnsync: ignored mail from <%s>: %s", sender, doubt)
        return
    mirror = config.get("mirror", "").strip()
    if not mirror:
        raise TempFail("[handler.svnsync] mirror is not set: no repository to synchronise")
    timeout = number(config, "timeout", DEFAULT_TIMEOUT)
    with MirrorLock(lock_path(envelope, mirror), number(config, "lock_wait", DEFAULT_LOCK_WAIT), mirror):
        output = synchronize(config, mirror, timeout)
    revisions = output.count("Committed revision")
    log.info("svnsync: %s synchronised (%d new revision%s)", mirror, revisions, "" if revisions == 1 else "s")


def contradicted(auth) -> str:
    """Why the checks say the sender is forged ('' when they don't, or weren't run)."""
    if auth is None:
        return ""
    dmarc = result_of(getattr(auth, "dmarc", None))
    if dmarc == "fail":
        return "DMARC fail"
    spf = result_of(getattr(auth, "spf", None))
    dkim_pass = any(result_of(s) == "pass" for s in getattr(auth, "dkim", None) or ())
    if spf in ("fail", "softfail") and not dkim_pass:
        return f"SPF {spf} and no passing DKIM signature"
    return ""


def result_of(item) -> str:
    return str(getattr(item, "result", item) or "").lower()


def number(config, key: str, default: float) -> float:
    try:
        return float(config.get(key, default))
    except ValueError:
        raise TempFail(f"[handler.svnsync] {key}: expected a number of seconds, got {config[key]!r}")


def lock_path(envelope, mirror: str) -> str:
    import hashlib

    given = envelope.config.get("lock", "").strip()
    if given:
        return given
    folder = envelope.spool or "/tmp"
    return os.path.join(folder, f"svnsync-{hashlib.sha256(mirror.encode()).hexdigest()[:16]}.lock")


class MirrorLock:
    """flock on PATH, waiting at most WAIT seconds (TempFail after that)."""

    def __init__(self, path: str, wait: float, mirror: str) -> None:
        self.path, self.wait, self.mirror = path, wait, mirror

    def __enter__(self) -> None:
        import fcntl

        try:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        except OSError as e:
            raise TempFail(f"cannot open the lock file {self.path}: {e.strerror}")
        deadline = time.monotonic() + self.wait
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(self.fd)
                    raise TempFail(f"another sync of {self.mirror} is still running after {self.wait:g} s")
                time.sleep(0.1)

    def __exit__(self, *exc) -> None:
        os.close(self.fd)


def synchronize(config, mirror: str, timeout: float) -> str:
    """Run svnsync; its stdout, or TempFail with its first error line."""
    import shlex
    import signal
    import subprocess

    argv = shlex.split(config.get("svnsync", "svnsync")) or ["svnsync"]
    argv += ["synchronize", "--non-interactive", *shlex.split(config.get("options", "")), mirror]
    env = dict(os.environ, LC_ALL="C.UTF-8")
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,  # its own process group: a time-out kills ssh & co too
        )
    except OSError as e:
        raise TempFail(f"cannot run {argv[0]}: {e.strerror}")
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise TempFail(f"svnsync of {mirror} took longer than {timeout:g} s")
    except BaseException:  # the handler's own time-out: leave no svnsync behind
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    if process.returncode != 0:
        lines = [line.strip() for line in err.decode("utf-8", "replace").splitlines() if line.strip()]
        first = lines[0] if lines else f"exit status {process.returncode}"
        raise TempFail(f"svnsync of {mirror} failed: {first[:300]}")
    return out.decode("utf-8", "replace")
