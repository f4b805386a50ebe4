"""Run one handler on one message and say how it went: done, deferred or failed.

Python handlers are called in this process: returning means done, `TempFail` (or any
other exception, or running past `[handlers] timeout`) means deferred, `Reject` means
failed.  Each call is isolated: whatever a handler raises becomes an Outcome and a log
line, never a crash of the server.

Programs are run the way qmail-command(8) runs them: no shell, the message on stdin
(our headers on top, LF line endings), a clean environment with qmail-style names plus
CONF_<KEY> for the handler's settings, the handlers folder as working directory, in a
process group of their own that is killed whole at the timeout.  stdout and stderr are
logged with the handler's name.  Exit status (sysexits): 0 done; 65, 67, 77 failed; 75
and anything else, a signal or the timeout, deferred.  Everything in the environment
comes from a possibly malicious remote client: quote it if you put it in a command.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from .. import exits, log
from ..outcomes import HandlerTimeout, Outcome, Reject, TempFail
from .router import Handler

TYPE_CHECKING = False  # typing and dataclasses cost start-up time; names for type checkers only
if TYPE_CHECKING:
    import subprocess
    from collections.abc import Iterator

    from ..envelope import Envelope

OUTPUT_LIMIT = 64 * 1024
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"
#: A Python handler ran in this process (mailserver.py then ends it with the full teardown).
python_ran = False


def run_python(handler: Handler, envelope: Envelope, timeout: float) -> Outcome:
    """Call the handler's handle(envelope) under the handler timeout; never raises."""
    global python_ran
    from ..alarm import deadline

    python_ran = True

    assert handler.module is not None
    try:
        with deadline(timeout, HandlerTimeout) as alarm:
            handler.module.handle(envelope)
            alarm.cancel()  # disarm at once: a late alarm must not undo a success
        return Outcome("done")
    except Reject as e:
        return Outcome("failed", f"rejected: {e}" if str(e) else "rejected")
    except TempFail as e:
        return Outcome("deferred", f"temporary failure: {e}" if str(e) else "temporary failure")
    except HandlerTimeout:
        return Outcome("deferred", f"timed out after {timeout:g} s")
    except BaseException as e:  # the handler's one boundary: a handler bug must not take us down
        import traceback

        where = traceback.extract_tb(e.__traceback__)[-1]
        log.exception("handler %s crashed", handler.name)
        return Outcome(
            "deferred",
            f"crashed: {type(e).__name__}: {e} ({os.path.basename(where.filename)}:{where.lineno})",
        )


def program_environment(envelope: Envelope, auth_env: dict[str, str], authres: str) -> dict[str, str]:
    recipient = envelope.recipient
    local, _, host = recipient.rpartition("@")
    ext = local.split("+", 1)[1] if "+" in local else ""
    env = {
        "PATH": SAFE_PATH,
        "LANG": "C.UTF-8",
        "HOME": os.environ.get("HOME", "/"),
        "SENDER": envelope.sender,
        "RECIPIENT": recipient,
        "LOCAL": local,
        "HOST": host,
        "EXT": ext,
        "RECIPIENTS": recipients_variable(envelope.recipients),
        "REMOTE_ADDR": envelope.remote_addr,
        "REMOTE_HOST": envelope.remote_host,
        "HELO": envelope.helo,
        "QUEUE_ID": envelope.queue_id,
        "HANDLER": envelope.handler,
        "AUTHENTICATION_RESULTS": authres,
        "DNSBL": " ".join(envelope.dnsbl),
        "SPAM_SCORE": "",  # '' as SPEC says for "not configured"; the verdicts' own below
        "SPAM_ACTION": "",
        "VIRUS": "",
        "VIRUS_STATUS": "",
        "DUPLICATE": "1" if envelope.duplicate else "",
        "SRS_ORIGINAL": envelope.srs_original,  # a bounce to our SRS address: who it is for
        "SPF_RESULT": "none",
        "DKIM_RESULT": "none",
        "DMARC_RESULT": "none",
        "ARC_RESULT": "none",
        "PYTHON": sys.executable,
        "MAILSERVER": os.path.join(
            os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "mailserver.py"
        ),
    }
    env.update(auth_env)
    if envelope.verdicts is not None:
        env.update(envelope.verdicts.environment())
    if envelope.server_config:
        env["MAILSERVER_CONFIG"] = envelope.server_config.path
    for key, value in envelope.config.items():
        name = "CONF_" + "".join(c if c.isalnum() else "_" for c in key.upper())
        env[name] = value
    return {k: v.replace("\0", "") for k, v in env.items()}


def recipients_variable(recipients: list[str]) -> str:
    """$RECIPIENTS: the addresses separated by single spaces, so a shell can split it.

    Only a quoted local part can hold a space (`"john doe"@example.org`; tabs and line
    breaks cannot occur at all): in an address that starts with a double quote, each `%`
    is written `%25` and each space `%20`.  Every other address is as it came: split on
    spaces, then decode the items that start with `"` (split_recipients)."""
    return " ".join(r.replace("%", "%25").replace(" ", "%20") if r.startswith('"') else r for r in recipients)


def split_recipients(value: str) -> list[str]:
    """The addresses of a $RECIPIENTS value (recipients_variable undone)."""
    import re

    decode = {"%20": " ", "%25": "%"}
    return [
        re.sub("%2[05]", lambda m: decode[m.group()], item) if item.startswith('"') else item
        for item in value.split(" ")
        if item
    ]


def message_lines(prefix: bytes, path: str) -> Iterator[bytes]:
    """The message for a program: prefix + spooled file, CRLF turned into LF."""
    yield prefix.replace(b"\r\n", b"\n")
    with open(path, "rb") as f:
        carry = b""
        while True:
            chunk = f.read(65536)
            if not chunk:
                break
            chunk = carry + chunk
            carry = b"\r" if chunk.endswith(b"\r") else b""
            if carry:
                chunk = chunk[:-1]
            yield chunk.replace(b"\r\n", b"\n")
        if carry:
            yield carry


def run_program(
    handler: Handler,
    envelope: Envelope,
    env: dict[str, str],
    message_path: str,
    prefix: bytes,
    timeout: float,
) -> Outcome:
    import subprocess

    try:
        proc = subprocess.Popen(
            [handler.path],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=os.path.dirname(handler.path),
            start_new_session=True,
            close_fds=True,
        )
    except OSError as e:
        return Outcome("deferred", f"cannot start {handler.path}: {e.strerror}")
    assert proc.stdin and proc.stdout
    output, status, timed_out = converse(proc, message_lines(prefix, message_path), timeout)
    text = b"".join(output).decode("utf-8", "replace")
    for line in text.splitlines()[:200]:
        log.info("%s: handler %s: %s", envelope.queue_id, handler.name, line)
    if timed_out:
        return Outcome("deferred", f"timed out after {timeout:g} s, process group killed")
    last = text.strip().splitlines()[-1][:200] if text.strip() else ""
    if status == 0:
        return Outcome("done")
    if status < 0:
        return Outcome("deferred", exits.describe(status))
    kind = "failed" if exits.is_permanent(status) else "deferred"
    return Outcome(kind, f"{exits.describe(status)} {last}".strip())


def converse(
    proc: subprocess.Popen[bytes], data: Iterator[bytes], timeout: float
) -> tuple[list[bytes], int, bool]:
    """Feed DATA to PROC's stdin and keep (up to OUTPUT_LIMIT of) its stdout until it exits
    or TIMEOUT (0: none) is over, then kill its process group: one thread and one poll()
    over the two pipes and a pidfd (no threads to start; the exit is noticed at once).
    (output, exit status, timed out)."""
    import select

    assert proc.stdin and proc.stdout
    stdin, stdout = proc.stdin.fileno(), proc.stdout.fileno()
    os.set_blocking(stdin, False)
    os.set_blocking(stdout, False)
    pidfd = _pidfd(proc.pid)
    poller = select.poll()
    poller.register(stdin, select.POLLOUT)
    poller.register(stdout, select.POLLIN)
    if pidfd >= 0:
        poller.register(pidfd, select.POLLIN)
    output: list[bytes] = []
    kept = 0
    pending = memoryview(b"")
    feeding = reading = True
    deadline = time.monotonic() + timeout if timeout else None
    timed_out = False
    try:
        while proc.poll() is None:
            wait = -1.0 if pidfd >= 0 else 0.01  # no pidfd: look at the child every 10 ms
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                wait = left if wait < 0 else min(wait, left)
            for fd, _ in poller.poll(None if wait < 0 else wait * 1000):
                if fd == stdin and feeding:
                    pending, feeding = _write_some(stdin, pending, data)
                    if not feeding:
                        poller.unregister(stdin)
                        proc.stdin.close()
                elif fd == stdout and reading:
                    chunk = _read_some(stdout)
                    if chunk is None:
                        continue
                    if not chunk:
                        reading = False
                        poller.unregister(stdout)
                    elif kept < OUTPUT_LIMIT:
                        output.append(chunk[: OUTPUT_LIMIT - kept])
                        kept += len(chunk)
                elif fd == pidfd:
                    poller.unregister(pidfd)
                    pidfd = _close(pidfd)
        if timed_out:
            _kill_group(proc.pid)
        status = proc.wait()
        _kill_group(proc.pid)  # whatever the program left running in its group (`sleep &`) goes with it
        if not proc.stdin.closed:
            proc.stdin.close()
        if reading:  # what it wrote last, with its group gone: the pipe ends at once (or in 5 s)
            os.set_blocking(stdout, True)
            ready = select.poll()
            ready.register(stdout, select.POLLIN)
            end = time.monotonic() + 5
            while kept < OUTPUT_LIMIT and ready.poll(max(end - time.monotonic(), 0) * 1000):
                chunk = os.read(stdout, 65536)
                if not chunk:
                    break
                output.append(chunk[: OUTPUT_LIMIT - kept])
                kept += len(chunk)
    finally:
        _close(pidfd)
        proc.stdout.close()
    return output, status, timed_out


def _pidfd(pid: int) -> int:
    """A descriptor readable when PID exits (Linux 5.3), or -1."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return -1


def _close(fd: int) -> int:
    if fd >= 0:
        os.close(fd)
    return -1


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _write_some(fd: int, pending: memoryview, data: Iterator[bytes]) -> tuple[memoryview, bool]:
    """Write what the pipe takes now; (what is left of the chunk, still feeding)."""
    try:
        while True:
            if not pending:
                chunk = next(data, None)
                if chunk is None:
                    return pending, False
                pending = memoryview(chunk)
            pending = pending[os.write(fd, pending) :]
    except BlockingIOError:
        return pending, True
    except OSError:  # EPIPE: a program need not read its input
        return pending, False


def _read_some(fd: int) -> bytes | None:
    try:
        return os.read(fd, 65536)
    except BlockingIOError:
        return None
