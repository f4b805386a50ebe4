"""pipe: run any command with the message on stdin, like a program handler in handlers/.

[handler.pipe] settings:

    command = /usr/local/bin/import-mail --quiet   ; required; split like a shell, run without one
    timeout = 120                                  ; seconds

The command gets the message with LF line endings on stdin and, in its environment,
SENDER, RECIPIENT, RECIPIENTS, QUEUE_ID, REMOTE_ADDR, REMOTE_HOST, HELO (they come from
a possibly malicious client: quote them).  Its exit status decides, as for programs:
0 done; 65, 67, 77 refused for good (Reject); 75, anything else, a signal or the time-out:
try again later (TempFail).  Its first line of stderr is kept as the reason.
Copy this file into handlers/ to use it (use one copy per command: pipe.py, pipe2.py ...).
"""

import os

from mailserver import Reject, TempFail

PERMANENT = {65, 67, 77}


def handle(envelope):
    import shlex  # imported here: every connection loads the handlers, few call this one
    import signal
    import subprocess

    from inbound.delivery.runner import recipients_variable

    name = envelope.handler or "pipe"
    argv = shlex.split(envelope.config.get("command", ""))
    if not argv:
        raise TempFail(f"[handler.{name}] command is not set")
    timeout = float(envelope.config.get("timeout", "120") or 120)
    env = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "LANG": "C.UTF-8",
        "HOME": os.environ.get("HOME", "/"),
        "SENDER": envelope.sender,
        "RECIPIENT": envelope.recipient,
        "RECIPIENTS": recipients_variable(envelope.recipients),  # as for programs: see README
        "QUEUE_ID": envelope.queue_id,
        "REMOTE_ADDR": envelope.remote_addr,
        "REMOTE_HOST": envelope.remote_host,
        "HELO": envelope.helo,
    }
    try:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
    except OSError as e:
        raise TempFail(f"cannot run {argv[0]}: {e.strerror}")
    try:
        _, err = process.communicate(envelope.raw.replace(b"\r\n", b"\n"), timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise TempFail(f"{argv[0]} took longer than {timeout:g} s")
    except BaseException:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        raise
    status = process.returncode
    if status == 0:
        return
    lines = err.decode("utf-8", "replace").strip().splitlines()
    detail = f"{argv[0]} exited with {status}" + (f": {lines[0][:300]}" if lines else "")
    if status in PERMANENT:
        raise Reject(detail)
    raise TempFail(detail)
