"""`mailserver.py queue`: --list, --list --failed, --show ID, --retry ID..., --run -v, as an
operator types them (subprocesses on a real spool), and as root with a spool it does not own."""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import pytest
from conftest import Server, dialogue

FLAKY = """#!/bin/sh
cat > /dev/null
[ -e "$(dirname "$0")/../fixed" ] && exit 0
echo upstream down; exit {status}
"""


def failed_message(server: Server) -> str:
    server.add_program("flaky", FLAKY.format(status=65))
    assert b"250 2.0.0" in server.smtp(dialogue("flaky@example.org", "sink@example.org"))
    [queue_id] = server.ids("failed")
    return queue_id


def test_list_failed_shows_what_failed_and_why(server: Server) -> None:
    queue_id = failed_message(server)
    text = server.run("queue", "--list", "--failed").stdout.decode()
    assert queue_id in text and "flaky" in text and "EX_DATAERR" in text and "upstream down" in text
    row = text.split(queue_id)[1].splitlines()[0]
    assert " flaky " in row and "flaky,sink" not in row  # sink succeeded: it is not pending
    assert server.run("queue", "--list").stdout.decode().strip() == "queue is empty"


def test_show_gives_envelope_auth_and_each_handlers_outcome(server: Server) -> None:
    queue_id = failed_message(server)
    result = server.run("queue", "--show", queue_id)
    text = result.stdout.decode()
    assert result.returncode == 0
    assert f"id:          {queue_id}" in text and "folder:      failed/" in text
    assert "sender:      <alice@sender.example>" in text
    assert "recipient:   <flaky@example.org> -> flaky" in text
    assert "auth:        mx.test.example; none" in text
    assert "handler:     sink: done after 1 attempt(s)" in text
    assert "handler:     flaky: failed after 1 attempt(s)" in text and "upstream down" in text
    missing = server.run("queue", "--show", "NOSUCH")
    assert missing.returncode == 66 and b"no message" in missing.stderr
    assert server.run("queue", "--show", "../etc").returncode == 66


def test_retry_moves_it_back_with_a_fresh_window_and_successes_stay_done(server: Server) -> None:
    queue_id = failed_message(server)
    before = len(server.got("sink"))
    (server.root / "fixed").touch()
    result = server.run("queue", "--retry", queue_id)
    assert result.returncode == 0 and b"back in queue/, handlers to run again: flaky" in result.stdout
    assert server.ids("queue") == [queue_id] and server.ids("failed") == []
    state = json.loads((server.spool / "queue" / queue_id / "state.json").read_text())
    assert state["retry_from"] > 0 and state["handlers"]["sink"]["status"] == "done"
    ran = server.run("queue", "--run", "-v")
    assert ran.returncode == 0
    text = ran.stdout.decode()
    assert (
        f"{queue_id}: deleted (flaky=done)" in text
        and "1 tried: 1 done" in text
        and "the queue is empty" in text
    )
    assert len(server.got("sink")) == before  # sink was not run twice
    again = server.run("queue", "--retry", queue_id)
    assert again.returncode == 66 and b"not in failed/" in again.stderr


def test_a_retried_message_gets_the_whole_retry_window_again(server: Server) -> None:
    server.write_config(handlers={"dir": "handlers", "retry_for": "3600"})
    queue_id = failed_message(server)
    envelope = server.spool / "failed" / queue_id / "envelope.json"
    record = json.loads(envelope.read_text())
    record["received_at"] -= 7200  # arrived two hours ago: past retry_for
    envelope.write_text(json.dumps(record))
    server.add_program("flaky", FLAKY.format(status=75))  # now a temporary failure
    server.run("queue", "--retry", queue_id)
    server.run("queue", "--run", "--now")
    assert server.ids("queue") == [queue_id]  # deferred again, not expired


def test_run_verbose_says_what_waits(server: Server) -> None:
    server.add_program("flaky", FLAKY.format(status=75))
    server.smtp(dialogue("flaky@example.org"))
    text = server.run("queue", "--run", "-v").stdout.decode()
    assert "0 tried" in text and "1 waiting, next in" in text


def test_a_missing_spool_is_said_not_an_empty_queue(server: Server) -> None:
    server.write_config(server={"spool": "nowhere"})
    result = server.run("queue", "--list")
    assert (
        result.returncode == 78
        and b"does not exist" in result.stderr
        and b"queue is empty" not in result.stdout
    )


def nobody_or_skip() -> pwd.struct_passwd:
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to the spool's owner")
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no user nobody")


def as_user(user: pwd.struct_passwd, action) -> int:  # type: ignore[no-untyped-def]
    """Run ACTION in a forked child that became USER; its exit status."""
    pid = os.fork()
    if pid == 0:
        try:
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            os._exit(0 if action() else 1)
        except BaseException:
            os._exit(2)
    return os.waitpid(pid, 0)[1] >> 8


def test_as_root_the_queue_works_as_the_spools_owner(server: Server) -> None:
    from inbound.cli.queue import run_as_spool_owner
    from inbound.config import load

    nobody = nobody_or_skip()
    os.chown(server.spool, nobody.pw_uid, nobody.pw_gid)
    config = load(str(server.config))
    pid = os.fork()
    if pid == 0:
        problem = run_as_spool_owner(config)
        ok = not problem and os.geteuid() == nobody.pw_uid and os.getegid() == nobody.pw_gid
        ok = ok and os.environ["HOME"] == nobody.pw_dir
        try:
            os.setuid(0)  # and there is no way back
            ok = False
        except PermissionError:
            pass
        os._exit(0 if ok else 1)
    assert os.waitpid(pid, 0)[1] == 0


def test_queue_run_as_root_runs_handlers_as_the_spools_owner(server: Server, tmp_path: Path) -> None:
    import json as json_module

    nobody = nobody_or_skip()
    if as_user(nobody, lambda: open(json_module.__file__).close() is None) != 0:
        pytest.skip("this interpreter's standard library is not readable by nobody (e.g. under /root)")
    server.add_program(
        "probe", f"#!/bin/sh\ncat > /dev/null\nid -u > {tmp_path}/uid\n[ -e {tmp_path}/second ] || exit 75\n"
    )
    server.smtp(dialogue("probe@example.org"))
    (tmp_path / "second").touch()
    for path in [server.root, *server.root.rglob("*")]:
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    tmp_path.chmod(0o777)
    for parent in tmp_path.parents:  # pytest's folders are root's alone: let nobody through
        if str(parent).startswith("/tmp/pytest-of-"):
            parent.chmod(parent.stat().st_mode | 0o011)
    result = server.run("queue", "--run", "--now")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "uid").read_text().strip() == str(nobody.pw_uid)
    owners = {p.stat().st_uid for p in server.spool.rglob("*")}
    assert owners <= {nobody.pw_uid}
