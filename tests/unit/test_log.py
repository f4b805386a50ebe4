"""The log: one line of printable text per entry, whatever the client sent."""

from __future__ import annotations

from pathlib import Path

from inbound import log


def test_a_log_line_is_one_line_of_printable_text(tmp_path: Path) -> None:
    path = tmp_path / "server.log"
    log.setup(str(path), "debug")
    try:
        log.info("helo=%s", "a\x1b[31mb\x07c\r\nd\u2028e\x85f\x9b\x00\ud8c3 Jörg 日本\tend")
    finally:
        log.setup("")  # closes the file; later tests set up their own log
    [line] = path.read_text(encoding="utf-8").splitlines()
    assert line.endswith("helo=a\\x1b[31mb\\x07c\\r\\nd\\u2028e\\x85f\\x9b\\x00\\ud8c3 Jörg 日本\\tend")
    assert line.isprintable()
