"""Handlers (SPEC §5-§6) through real subprocesses of mailserver.py: routing, environment,
exit statuses, timeouts, INLINE, partial failure and retry, the queue, broken handlers."""

from __future__ import annotations

import json
import time

import pytest
from conftest import MESSAGE, Server, codes, dialogue, replies


def mail(
    server: Server,
    *recipients: str,
    sender: str = "alice@sender.example",
    body: bytes = MESSAGE,
    **kw: object,
) -> bytes:
    return server.smtp(dialogue(*recipients, sender=sender, body=body), **kw)  # type: ignore[arg-type]


def state_of(server: Server, folder: str, queue_id: str) -> dict:
    return json.loads((server.spool / folder / queue_id / "state.json").read_text())


COUNTER = """\
#!/bin/sh
echo run >> "$(dirname "$0")/../{name}.runs"
cat > /dev/null
exit {status}
"""


def runs(server: Server, name: str) -> int:
    path = server.root / f"{name}.runs"
    return len(path.read_text().splitlines()) if path.exists() else 0


# -- routing ---------------------------------------------------------------------------


def test_routes_then_addresses_then_local_part_then_catchall(server: Server) -> None:
    server.add_program("routed")
    server.add_program("catcher")
    server.add_python(
        "claims",
        """
        import os
        ADDRESSES = ["team-*@example.org"]
        def handle(envelope):
            open(os.path.join(os.path.dirname(__file__), "..", "claims.got"), "a").write(
                " ".join(envelope.recipients) + "\\n")
    """,
    )
    server.write_config(
        routes={"*@example.net": "routed", "sink@example.org": "routed"},
        handlers={"dir": "handlers", "timeout": "20", "catchall": "catcher"},
    )
    out = mail(
        server,
        "sink@example.org",
        "anyone@example.net",
        "team-red@example.org",
        "sink+x@example.org",
        "stranger@example.org",
    )
    assert codes(out) == [220, 250, 250, 250, 250, 250, 250, 250, 354, 250, 221]
    assert [env["RECIPIENTS"] for _, env in server.got("routed")] == ["sink@example.org anyone@example.net"]
    assert (server.root / "claims.got").read_text() == "team-red@example.org\n"
    assert [env["RECIPIENTS"] for _, env in server.got("sink")] == ["sink+x@example.org"]
    assert [env["RECIPIENTS"] for _, env in server.got("catcher")] == ["stranger@example.org"]


def test_local_part_matching_is_case_insensitive_and_plus_extension_is_exposed(server: Server) -> None:
    mail(server, "SINK+Order-42@Example.ORG")
    [(_, env)] = server.got()
    assert env["RECIPIENT"] == "SINK+Order-42@example.org"
    assert (env["LOCAL"], env["HOST"], env["EXT"]) == ("SINK+Order-42", "example.org", "Order-42")


def test_files_starting_with_underscore_or_dot_and_non_executables_are_not_handlers(server: Server) -> None:
    server.add_program("_hidden")
    server.add_program(".dot")
    (server.handlers / "README").write_text("not a handler")
    out = mail(server, "_hidden@example.org", "README@example.org")
    assert codes(out)[3:5] == [550, 550]


def test_a_script_without_the_executable_bit_is_refused_and_the_log_says_why(server: Server) -> None:
    script = server.add_program("ticket")
    script.chmod(0o644)
    assert codes(mail(server, "ticket@example.org", "nobody@example.org"))[3:5] == [550, 550]
    [line] = [text for text in server.log().splitlines() if "not executable" in text]
    assert "ticket@example.org" in line and f"{script} is not executable (chmod +x" in line


def test_dropping_a_file_in_is_the_whole_deployment(server: Server) -> None:
    assert codes(mail(server, "fresh@example.org"))[3] == 550
    server.add_program("fresh")
    assert codes(mail(server, "fresh@example.org"))[3] == 250
    assert len(server.got("fresh")) == 1


# -- program environment -------------------------------------------------------------------


def test_programs_get_the_qmail_style_environment_and_nothing_else(server: Server) -> None:
    server.write_config(handler__sink={"mirror": "file:///srv/m", "max-size": "3"})
    mail(
        server,
        "sink+ext@example.org",
        "sink@example.net",
        env={"SECRET_TOKEN": "do-not-leak"},
        remote_addr="198.51.100.9",
    )
    [(message, env)] = server.got()
    assert env["SENDER"] == "alice@sender.example"
    assert env["RECIPIENT"] == "sink+ext@example.org"
    assert env["RECIPIENTS"] == "sink+ext@example.org sink@example.net"
    assert env["REMOTE_ADDR"] == "198.51.100.9"
    assert env["HELO"] == "client.example"
    assert env["CONF_MIRROR"] == "file:///srv/m"
    assert env["CONF_MAX_SIZE"] == "3"
    for name in ("SPF_RESULT", "DKIM_RESULT", "DMARC_RESULT", "ARC_RESULT"):
        assert env[name] == "none"
    assert env["AUTHENTICATION_RESULTS"] == "mx.test.example; none"
    assert env["PWD"] == str(server.handlers)
    assert "SECRET_TOKEN" not in env
    assert message.startswith(b"Authentication-Results: mx.test.example; none\n")


def test_null_sender_is_an_empty_sender(server: Server) -> None:
    mail(server, "sink@example.org", sender="")
    [(_, env)] = server.got()
    assert env["SENDER"] == ""


def test_hostile_addresses_reach_programs_without_shell_interpolation(server: Server) -> None:
    evil = "sink+`touch${IFS}pwned`&$HOME|x@example.org"
    out = mail(server, evil)
    assert codes(out)[3] == 250
    [(_, env)] = server.got()
    assert env["RECIPIENT"] == evil
    assert not (server.handlers / "pwned").exists() and not (server.root / "pwned").exists()


SPLIT_RECIPIENTS = """\
#!/bin/sh
# the README's way of reading $RECIPIENTS in a shell
cat > /dev/null
set -f
for r in $RECIPIENTS; do
    case $r in '"'*) r=$(printf '%s\\n' "$r" | sed 's/%20/ /g; s/%25/%/g') ;; esac
    printf '%s\\n' "$r" >> "$(dirname "$0")/../split.txt"
done
"""


def test_recipients_with_spaces_split_unambiguously_in_a_shell(server: Server) -> None:
    """Issue 13: a quoted local part with a space made $RECIPIENTS ambiguous."""
    server.add_program("split", SPLIT_RECIPIENTS)
    server.write_config(handlers={"catchall": "split"})
    recipients = [
        '"john doe"@example.org',
        "plain+x@example.org",
        '"50% off, %20"@example.org',
        '"x"@example.org',
    ]
    out = server.smtp(dialogue(*recipients))
    assert codes(out)[-2:] == [250, 221]
    assert (server.root / "split.txt").read_text().splitlines() == recipients
    from inbound.delivery.runner import recipients_variable, split_recipients

    value = recipients_variable(recipients)
    assert (
        value
        == '"john%20doe"@example.org plain+x@example.org "50%25%20off,%20%2520"@example.org "x"@example.org'
    )
    assert split_recipients(value) == recipients
    assert recipients_variable(["a@example.org", "b@example.org"]) == "a@example.org b@example.org"


def test_program_output_is_logged_with_the_handler_name(server: Server) -> None:
    server.add_program("talker", "#!/bin/sh\necho 'hello from talker'\necho oops >&2\ncat >/dev/null\n")
    mail(server, "talker@example.org")
    log = server.log()
    assert "handler talker: hello from talker" in log
    assert "handler talker: oops" in log


# -- exit statuses --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status, folder",
    [(0, None), (75, "queue"), (1, "queue"), (65, "failed"), (67, "failed"), (77, "failed")],
)
def test_exit_status_decides_done_deferred_or_failed(server: Server, status: int, folder: str | None) -> None:
    server.add_program("worker", COUNTER.format(name="worker", status=status))
    out = mail(server, "worker@example.org")
    assert codes(out)[-2] == 250
    for name in ("queue", "failed", "done"):
        assert len(server.ids(name)) == (1 if name == folder else 0), name


def test_a_program_killed_by_a_signal_is_deferred(server: Server) -> None:
    server.add_program("crasher", "#!/bin/sh\ncat >/dev/null\nkill -9 $$\n")
    mail(server, "crasher@example.org")
    [queue_id] = server.ids("queue")
    assert "signal 9" in state_of(server, "queue", queue_id)["handlers"]["crasher"]["last_error"]


def test_a_program_past_the_timeout_is_killed_with_its_process_group(server: Server) -> None:
    server.write_config(handlers={"dir": "handlers", "timeout": "1"})
    server.add_program(
        "sleeper",
        """\
        #!/bin/sh
        (sleep 1.5; touch "$(dirname "$0")/../grandchild-survived") &
        sleep 30
    """,
    )
    started = time.monotonic()
    mail(server, "sleeper@example.org")
    assert time.monotonic() - started < 10
    [queue_id] = server.ids("queue")
    assert "timed out after 1 s" in state_of(server, "queue", queue_id)["handlers"]["sleeper"]["last_error"]
    time.sleep(2)
    assert not (server.root / "grandchild-survived").exists()


def test_a_program_that_does_not_read_its_input_is_fine(server: Server) -> None:
    server.add_program("lazy", "#!/bin/sh\nexit 0\n")
    big = MESSAGE + (b"x" * 76 + b"\r\n") * 20000  # more than a pipe buffer
    mail(server, "lazy@example.org", body=big)
    assert server.ids("queue") == [] and server.ids("failed") == []


# -- Python handlers ----------------------------------------------------------------------


def test_python_handler_gets_a_parsed_envelope(server: Server) -> None:
    server.write_config(handler__probe={"colour": "blue"})
    server.add_python(
        "probe",
        """
        import json, os
        def handle(envelope):
            out = {"sender": envelope.sender, "recipients": envelope.recipients, "helo": envelope.helo,
                   "remote_addr": envelope.remote_addr, "queue_id": envelope.queue_id,
                   "config": envelope.config, "subject": envelope.subject,
                   "from": [a.address for a in envelope.from_], "to": [a.address for a in envelope.to],
                   "text": envelope.text, "raw_starts": envelope.raw[:22].decode(),
                   "message_subject": str(envelope.message["Subject"])}
            with open(os.path.join(os.path.dirname(__file__), "..", "probe.json"), "w") as f:
                json.dump(out, f)
    """,
    )
    out = mail(server, "probe@example.org", remote_addr="203.0.113.5")
    got = json.loads((server.root / "probe.json").read_text())
    assert got["sender"] == "alice@sender.example"
    assert got["recipients"] == ["probe@example.org"]
    assert got["helo"] == "client.example"
    assert got["remote_addr"] == "203.0.113.5"
    assert got["queue_id"] in replies(out)[5].decode()
    assert got["config"] == {"colour": "blue"}
    assert got["subject"] == got["message_subject"] == "hi"
    assert got["from"] == ["alice@sender.example"] and got["to"] == ["sink@example.org"]
    assert got["text"] == "Hello.\n"
    assert got["raw_starts"] == "Authentication-Results"


@pytest.mark.parametrize(
    "body, folder",
    [
        ("return None", None),
        ("raise TempFail('later')", "queue"),
        ("raise Reject('no thanks')", "failed"),
        ("raise ValueError('bug')", "queue"),
    ],
)
def test_python_handler_outcomes(server: Server, body: str, folder: str | None) -> None:
    server.add_python(
        "py",
        f"""
        from mailserver import Reject, TempFail
        def handle(envelope):
            {body}
    """,
    )
    mail(server, "py@example.org")
    for name in ("queue", "failed"):
        assert len(server.ids(name)) == (1 if name == folder else 0), name


def test_a_python_handler_past_the_timeout_is_deferred(server: Server) -> None:
    server.write_config(handlers={"dir": "handlers", "timeout": "1"})
    server.add_python(
        "slowpy",
        """
        import time
        def handle(envelope):
            time.sleep(30)
    """,
    )
    mail(server, "slowpy@example.org")
    [queue_id] = server.ids("queue")
    assert "timed out" in state_of(server, "queue", queue_id)["handlers"]["slowpy"]["last_error"]


# -- INLINE -----------------------------------------------------------------------------------


def test_inline_reject_becomes_550_and_nothing_is_kept(server: Server) -> None:
    server.add_python(
        "gatekeeper",
        """
        from mailserver import Reject
        INLINE = True
        def handle(envelope):
            if "spam" in envelope.subject:
                raise Reject("we do not want spam")
    """,
    )
    out = mail(server, "gatekeeper@example.org", body=b"Subject: spam spam\r\n\r\nbuy\r\n")
    assert replies(out)[-2] == b"550 5.7.1 Message refused: rejected: we do not want spam"
    assert server.ids("queue") == [] and server.ids("failed") == [] and server.ids("incoming") == []


def test_inline_tempfail_becomes_451(server: Server) -> None:
    server.add_python(
        "busy",
        """
        from mailserver import TempFail
        INLINE = True
        def handle(envelope):
            raise TempFail("database down")
    """,
    )
    out = mail(server, "busy@example.org")
    assert replies(out)[-2].startswith(b"451 4.3.0 Message deferred: temporary failure: database down")
    assert server.ids("queue") == []


def test_inline_success_is_not_run_again_after_the_250(server: Server) -> None:
    server.add_python(
        "once",
        """
        import os
        INLINE = True
        def handle(envelope):
            open(os.path.join(os.path.dirname(__file__), "..", "once.runs"), "a").write("run\\n")
    """,
    )
    out = mail(server, "once@example.org", "sink@example.org")
    assert codes(out)[-2] == 250
    assert runs(server, "once") == 1
    assert len(server.got()) == 1
    assert server.ids("queue") == []


# -- several handlers, retry ----------------------------------------------------------------


def test_partial_failure_is_retried_without_rerunning_the_handler_that_succeeded(server: Server) -> None:
    server.add_program("good", COUNTER.format(name="good", status=0))
    server.add_program("flaky", COUNTER.format(name="flaky", status=75))
    mail(server, "good@example.org", "flaky@example.org")
    [queue_id] = server.ids("queue")
    state = state_of(server, "queue", queue_id)
    assert state["handlers"]["good"]["status"] == "done"
    assert state["handlers"]["flaky"]["status"] == "deferred"
    assert (runs(server, "good"), runs(server, "flaky")) == (1, 1)

    result = server.run("queue", "--run")  # backoff: not due yet
    assert result.returncode == 0 and runs(server, "flaky") == 1

    server.run("queue", "--run", "--now")
    assert (runs(server, "good"), runs(server, "flaky")) == (1, 2)
    assert server.ids("queue") == [queue_id]

    server.add_program("flaky", COUNTER.format(name="flaky", status=0))
    server.run("queue", "--run", "--now")
    assert (runs(server, "good"), runs(server, "flaky")) == (1, 3)
    assert server.ids("queue") == []


def test_duplicate_recipients_run_each_handler_once(server: Server) -> None:
    mail(server, "sink+a@example.org", "sink+b@example.org", "sink+a@example.org")
    [(_, env)] = server.got()
    assert env["RECIPIENTS"] == "sink+a@example.org sink+b@example.org"


def test_queue_list_shows_id_age_recipients_handler_and_last_error(server: Server) -> None:
    server.add_program("flaky", "#!/bin/sh\necho 'upstream unreachable'\nexit 75\n")
    mail(server, "flaky@example.org")
    [queue_id] = server.ids("queue")
    result = server.run("queue", "--list")
    text = result.stdout.decode()
    assert queue_id in text and "flaky@example.org" in text and "flaky" in text
    assert "exit 75 (EX_TEMPFAIL) upstream unreachable" in text


def test_retry_for_expiry_moves_the_message_to_failed(server: Server) -> None:
    server.add_program("flaky", "#!/bin/sh\nexit 75\n")
    server.write_config(handlers={"dir": "handlers", "retry_for": "0.3"})
    mail(server, "flaky@example.org")
    [queue_id] = server.ids("queue")
    time.sleep(0.4)
    server.run("queue", "--run", "--now")
    assert server.ids("queue") == [] and server.ids("failed") == [queue_id]
    assert "retried for" in state_of(server, "failed", queue_id)["expired"]


def test_keep_done_keeps_handled_messages_in_done(server: Server) -> None:
    server.write_config(handlers={"dir": "handlers", "keep_done": "1"})
    out = mail(server, "sink@example.org")
    queue_id = replies(out)[-2].split()[-1].decode()
    assert server.ids("done") == [queue_id]
    assert (server.spool / "done" / queue_id / "message").exists()


# -- broken handlers -------------------------------------------------------------------------


def test_a_handler_with_a_syntax_error_only_stops_its_own_mail(server: Server) -> None:
    server.add_python(
        "broken",
        """
        def handle(envelope)
            pass
    """,
    )
    out = mail(server, "broken@example.org", "sink@example.org")
    assert replies(out)[3].startswith(b"451 4.3.0 <broken@example.org>")
    assert codes(out)[4] == 250
    assert len(server.got()) == 1
    assert "broken.py:2: syntax error" in server.log()


def test_check_reports_a_broken_handler_with_file_and_line(server: Server) -> None:
    server.add_python("broken", "x = 1\nraise RuntimeError('at import')\n")
    server.add_python("nohandle", "X = 1\n")
    result = server.run("check")
    assert result.returncode == 78
    err = result.stderr.decode()
    assert f"{server.handlers / 'broken.py'}:2: import failed: RuntimeError: at import" in err
    assert f"{server.handlers / 'nohandle.py'}:1: no handle(envelope) function" in err


def test_check_prints_the_routes_table(server: Server) -> None:
    server.add_python("claims", "ADDRESSES = ['team-*@example.org']\nINLINE = True\ndef handle(e): pass\n")
    server.write_config(routes={"*@example.net": "sink"})
    result = server.run("check")
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert "*@example.net" in text and "team-*@example.org" in text and "INLINE" in text
    assert "sink[+*]@example.org" in text


def test_check_reports_a_route_to_a_missing_handler(server: Server) -> None:
    server.write_config(routes={"x@example.org": "ghost"})
    result = server.run("check")
    assert result.returncode == 78
    assert "[routes] x@example.org: no handler named 'ghost'" in result.stderr.decode()


# -- malformed MIME to a Python handler ------------------------------------------------------


MALFORMED = (
    b"From: =?utf-8?b?!!broken?= <alice@sender.example>\r\n"
    b"Subject: =?x-unknown-charset?q?caf=E9?= =?utf-8?b?4pyT?=\r\n"
    b'Content-Type: multipart/mixed; boundary="never-closed"\r\n'
    b"\r\n"
    b"--never-closed\r\n"
    b"Content-Type: text/plain; charset=bogus-charset\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"!!!not base64!!!\r\n"
    b"--never-closed\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Disposition: attachment; filename*=utf-8''..%2F..%2Fetc%2Fpasswd\r\n"
    b"\r\n"
    b"data\r\n"
)


def test_malformed_mime_gives_a_python_handler_best_effort_values(server: Server) -> None:
    server.add_python(
        "tolerant",
        """
        import json, os
        def handle(envelope):
            out = {"subject": envelope.subject, "from": [a.address for a in envelope.from_],
                   "text": envelope.text, "attachments": [a.filename for a in envelope.attachments],
                   "defects": len(envelope.defects)}
            with open(os.path.join(os.path.dirname(__file__), "..", "tolerant.json"), "w") as f:
                json.dump(out, f)
    """,
    )
    mail(server, "tolerant@example.org", body=MALFORMED)
    got = json.loads((server.root / "tolerant.json").read_text())
    assert server.ids("queue") == []  # handled: no exception reached the server
    assert "\u2713" in got["subject"]
    assert got["from"] == ["alice@sender.example"]
    assert got["attachments"] == ["passwd"]
    assert got["defects"] > 0


# -- deliver ---------------------------------------------------------------------------------


def test_deliver_runs_a_message_file_through_the_handlers(server: Server) -> None:
    eml = server.root / "m.eml"
    eml.write_bytes(MESSAGE.replace(b"\r\n", b"\n"))
    result = server.run("deliver", "--from", "bob@sender.example", "--to", "sink@example.org", str(eml))
    assert result.returncode == 0, result.stderr
    [(message, env)] = server.got()
    assert env["SENDER"] == "bob@sender.example"
    assert message.endswith(b"Subject: hi\n\nHello.\n")


def test_deliver_reports_temporary_and_refused_outcomes_by_exit_status(server: Server) -> None:
    server.add_program("flaky", "#!/bin/sh\nexit 75\n")
    eml = server.root / "m.eml"
    eml.write_bytes(MESSAGE)
    assert server.run("deliver", "--to", "flaky@example.org", str(eml)).returncode == 75
    assert server.run("deliver", "--to", "nobody@example.org", str(eml)).returncode == 67


def test_deliver_dry_run_prints_routes_and_environment_and_runs_nothing(server: Server) -> None:
    server.write_config(handler__sink={"mirror": "file:///m"})
    result = server.run(
        "deliver", "--dry-run", "--from", "a@b.example", "--to", "sink+x@example.org", "-", input=MESSAGE
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert "route: sink+x@example.org -> sink (local part)" in text
    assert "RECIPIENT=sink+x@example.org" in text and "CONF_MIRROR=file:///m" in text
    assert server.got() == [] and server.ids("queue") == []


def test_parsing_inside_a_handler_keeps_the_handler_timeout(server: Server) -> None:
    server.write_config(handlers={"dir": "handlers", "timeout": "1"})
    server.add_python(
        "parsethensleep",
        """
        import time
        def handle(envelope):
            envelope.text  # arms and disarms the parse deadline
            time.sleep(30)
    """,
    )
    started = time.monotonic()
    mail(server, "parsethensleep@example.org")
    assert time.monotonic() - started < 10
    [queue_id] = server.ids("queue")
    assert "timed out" in state_of(server, "queue", queue_id)["handlers"]["parsethensleep"]["last_error"]


def test_forged_authentication_results_with_our_authserv_id_are_removed(server: Server) -> None:
    forged = (
        b"Authentication-Results: mx.test.example; spf=pass smtp.mailfrom=boss@example.org\r\n"
        b"Authentication-Results: other.example; spf=fail smtp.mailfrom=x@y.example\r\n"
    )
    mail(server, "sink@example.org", body=forged + MESSAGE)
    [(message, env)] = server.got()
    assert message.count(b"mx.test.example;") == 1
    assert message.startswith(b"Authentication-Results: mx.test.example; none\n")
    assert b"Authentication-Results: other.example; spf=fail" in message
    assert env["SPF_RESULT"] == "none"


def test_a_handler_that_catches_every_exception_still_times_out(server: Server) -> None:
    server.write_config(handlers={"dir": "handlers", "timeout": "1"})
    server.add_python(
        "greedy",
        """
        import time
        def handle(envelope):
            for _ in range(30):
                try:
                    time.sleep(1)
                except Exception:
                    pass
    """,
    )
    started = time.monotonic()
    mail(server, "greedy@example.org")
    assert time.monotonic() - started < 10
    [queue_id] = server.ids("queue")
    assert "timed out" in state_of(server, "queue", queue_id)["handlers"]["greedy"]["last_error"]


def test_an_inline_handler_printing_cannot_reach_the_client(server: Server) -> None:
    server.add_python(
        "chatty",
        """
        import os, sys
        INLINE = True
        def handle(envelope):
            print("250 2.0.0 OK queued as FAKE")
            sys.stdout.flush()
            os.write(1, b"250 fake too\\r\\n")
    """,
    )
    out = mail(server, "chatty@example.org")
    assert b"FAKE" not in out and b"fake too" not in out
    assert codes(out) == [220, 250, 250, 250, 354, 250, 221]


def test_programs_leave_no_background_process_behind(server: Server) -> None:
    import subprocess

    server.add_program("forker", "#!/bin/sh\nsleep 1234.5 &\ncat > /dev/null\nexit 0\n")
    started = time.monotonic()
    mail(server, "forker@example.org")
    assert time.monotonic() - started < 4
    assert subprocess.run(["pgrep", "-f", "sleep 1234.5"], capture_output=True).stdout == b""


def test_a_missing_handlers_folder_defers_every_local_address_and_says_so_once(server: Server) -> None:
    server.write_config(handlers={"dir": "no-such-folder"})
    out = server.smtp(dialogue("sink@example.org", "anyone@example.org", "postmaster@example.org"))
    assert codes(out)[:6] == [220, 250, 250, 451, 451, 451]  # EHLO, MAIL, then every RCPT deferred
    assert all(r.startswith(b"451 4.3.0") for r in replies(out)[3:6])
    assert server.ids("queue") == []
    lines = [line for line in server.log().splitlines() if "cannot read the handlers folder" in line]
    assert len(lines) == 1 and "every local address deferred" in lines[0]
    other = server.smtp(dialogue("x@elsewhere.example"))
    assert b"550 5.7.1" in other  # not ours stays not ours
    result = server.run("check")
    assert result.returncode == 78 and b"cannot read the handlers folder" in result.stderr
