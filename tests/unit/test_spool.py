"""The spool's durability, call by call: what is fsync'ed before the final 250 (the message,
envelope.json, the message's folder, queue/ after the rename: four, in that order) and
after it (a handler's outcome; not the checks' results, which can be computed again)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from conftest import EHLO, MAIL, MESSAGE, RCPT, Server, codes, talk

from inbound import spool


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The path of every fsync'ed descriptor, in order."""
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: Any) -> None:
        number = fd if isinstance(fd, int) else fd.fileno()
        synced.append(os.readlink(f"/proc/self/fd/{number}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_the_250_follows_four_fsyncs_message_envelope_folder_queue(server: Server, fsyncs: list[str]) -> None:
    out, session = talk(server, EHLO + MAIL + RCPT + b"DATA\r\n" + MESSAGE + b".\r\nQUIT\r\n")
    assert codes(out)[-2:] == [250, 221]
    [queue_id] = server.ids("queue")
    folder = server.spool / "incoming" / queue_id
    assert [Path(p) for p in fsyncs] == [
        folder / "message",
        folder / "envelope.json",
        folder,
        server.spool / "queue",
    ]


def test_a_handler_outcome_is_durable_and_the_checks_results_are_not(
    tmp_path: Path, fsyncs: list[str]
) -> None:
    folder = tmp_path / "queue" / "ID"
    folder.mkdir(parents=True)
    state = spool.State()
    state.save(str(folder), durable=False)
    assert fsyncs == []
    state.handler("sink").status = "done"
    state.save(str(folder))
    assert [Path(p) for p in fsyncs] == [folder / f"state.json.tmp{os.getpid()}", folder]
    assert spool.State.load(str(folder)).status("sink") == "done"
