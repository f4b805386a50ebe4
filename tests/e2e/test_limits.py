"""[limits]: per-client memory shared by every connection process (a sqlite store under
the spool): connection rate per client address, pregreet, and penalties for clients that
ran into the error or probing limits; and the store's hostile cases (corrupt, locked,
huge), none of which may stop mail."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from conftest import EHLO, Server, codes, dialogue, replies

from inbound.clients import FILENAME, MAX_ROWS, ClientMemory


def store(server: Server) -> Path:
    return server.spool / FILENAME


def test_over_the_rate_a_client_gets_421_at_connect_and_others_do_not(server: Server) -> None:
    server.write_config(limits={"rate": "3", "rate_window": "60"})
    for _ in range(3):
        assert codes(server.smtp(b"QUIT\r\n", remote_addr="192.0.2.5")) == [220, 221]
    out = server.smtp(b"QUIT\r\n", remote_addr="192.0.2.5")
    assert replies(out) == [
        b"421 4.7.0 mx.test.example Too many connections from your address lately, try again later"
    ]
    assert codes(server.smtp(b"QUIT\r\n", remote_addr="192.0.2.6")) == [220, 221]
    assert 'reply="421 4.7.0' in server.log()


def test_the_rate_window_slides(server: Server) -> None:
    server.write_config(limits={"rate": "1", "rate_window": "1"})
    assert codes(server.smtp(b"QUIT\r\n")) == [220, 221]
    assert codes(server.smtp(b"QUIT\r\n")) == [421]
    time.sleep(1.1)
    assert codes(server.smtp(b"QUIT\r\n")) == [220, 221]


def test_a_client_that_talks_first_gets_554_and_is_remembered(server: Server) -> None:
    server.write_config(limits={"pregreet": "0.5"})
    out = server.smtp(EHLO + b"QUIT\r\n", remote_addr="198.51.100.9")  # all of it at once: before the banner
    assert replies(out) == [b"554 5.5.1 mx.test.example Protocol error: you talked before the greeting"]
    later = server.smtp(b"QUIT\r\n", remote_addr="198.51.100.9")
    assert codes(later) == [421]
    assert b"refused for a while (talked before the greeting), try again later" in later


def test_a_memory_kept_only_for_dnsbl_answers_turns_nobody_away(server: Server) -> None:
    server.write_config(limits={"pregreet": "0.5"})
    server.smtp(EHLO + b"QUIT\r\n", remote_addr="198.51.100.9")  # penalised
    server.write_config(checks={"dnsbl": "zen.test", "dns_servers": "127.0.0.1:9", "dns_timeout": "0.2"})
    assert codes(server.smtp(b"QUIT\r\n", remote_addr="198.51.100.9")) == [220, 221]


def test_a_client_that_waits_for_the_banner_is_served(server: Server) -> None:
    import os
    import subprocess
    import sys

    from conftest import MAILSERVER

    server.write_config(limits={"pregreet": "0.3"})
    process = subprocess.Popen(
        [sys.executable, str(MAILSERVER), "--config", str(server.config)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env={**os.environ, "REMOTE_ADDR": "192.0.2.77"},
    )
    assert process.stdout and process.stdin
    banner = process.stdout.readline()  # wait for it, as a client should
    assert banner.startswith(b"220 ")
    out, _ = process.communicate(dialogue(), timeout=30)
    assert b"250 2.0.0 OK queued" in out


def test_a_client_that_ran_into_the_error_limit_is_turned_away_for_a_while(server: Server) -> None:
    server.write_config(limits={"rate": "100"})
    assert codes(server.smtp(b"BOGUS\r\n" * 12, remote_addr="203.0.113.4"))[-1] == 421
    assert codes(server.smtp(b"QUIT\r\n", remote_addr="203.0.113.4")) == [421]
    assert codes(server.smtp(b"QUIT\r\n", remote_addr="203.0.113.5")) == [220, 221]


def test_a_corrupt_store_is_moved_aside_and_mail_flows(server: Server) -> None:
    server.write_config(limits={"rate": "5"})
    store(server).write_bytes(b"this is not a database" * 100)
    assert b"250 2.0.0 OK queued" in server.smtp(dialogue())
    assert list(server.spool.glob(FILENAME + ".broken-*"))
    assert "was unreadable" in server.log()
    sqlite3.connect(store(server)).execute("SELECT count(*) FROM connections").fetchone()


def test_a_store_locked_by_a_crashed_or_slow_process_never_stops_mail(server: Server) -> None:
    server.write_config(limits={"rate": "5"})
    assert codes(server.smtp(b"QUIT\r\n")) == [220, 221]  # the store exists
    holder = sqlite3.connect(store(server), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        started = time.monotonic()
        assert b"250 2.0.0 OK queued" in server.smtp(dialogue())
        assert time.monotonic() - started < 10
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert "skipped" in server.log()


def test_the_store_stays_bounded(server: Server) -> None:
    memory = ClientMemory(str(server.spool), clock=lambda: 1000.0)
    db = memory._open()
    assert db is not None
    db.executemany(
        "INSERT INTO connections VALUES (?, ?)",
        ((f"10.0.{n // 256}.{n % 256}", 999.0) for n in range(MAX_ROWS + 500)),
    )
    memory.count_connection("192.0.2.1", 3600)
    (count,) = db.execute("SELECT count(*) FROM connections").fetchone()
    assert count <= MAX_ROWS
    memory.count_connection("192.0.2.1", 1)  # a short window expires the old rows
    (count,) = db.execute("SELECT count(*) FROM connections").fetchone()
    assert count == 2  # only the two connections inside the window are left


def test_parallel_connections_share_one_count(server: Server) -> None:
    server.write_config(limits={"rate": "4", "rate_window": "60"})
    results: list[list[int]] = []

    def one() -> None:
        results.append(codes(server.smtp(b"QUIT\r\n", remote_addr="192.0.2.99")))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r[0] for r in results) == [220] * 4 + [421] * 4
