"""[limits]: per-client memory shared by every connection process (a file per client
under <spool>/clients/): connection rate per client address, pregreet, and penalties for clients that
ran into the error or probing limits; and the store's hostile cases (corrupt, locked,
huge), none of which may stop mail."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

from conftest import EHLO, Server, codes, dialogue, replies

from inbound.clients import FOLDER, MAX_FILE, MAX_TIMES, ClientMemory

CLIENT = "192.0.2.10"  # the address server.smtp() connects from


def store(server: Server, addr: str = CLIENT) -> Path:
    return server.spool / FOLDER / addr.replace(":", "_")


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


def test_a_corrupt_or_huge_store_file_is_started_afresh_and_mail_flows(server: Server) -> None:
    server.write_config(limits={"rate": "5"})
    for garbage in (b"this is not ours\0" * 100, b"c " + b"1" * (MAX_FILE + 10) + b"\n"):
        store(server).parent.mkdir(exist_ok=True)
        store(server).write_bytes(garbage)
        assert b"250 2.0.0 OK queued" in server.smtp(dialogue())
        assert "is corrupt or too large: starting it afresh" in server.log()
        assert store(server).read_bytes().startswith(b"c ") and store(server).stat().st_size < 100


def test_a_store_file_locked_by_a_slow_process_never_stops_mail(server: Server) -> None:
    server.write_config(limits={"rate": "5"})
    assert codes(server.smtp(b"QUIT\r\n")) == [220, 221]  # the file exists
    holder = os.open(store(server), os.O_RDWR)
    fcntl.flock(holder, fcntl.LOCK_EX)  # a crashed holder's lock would be gone with it
    try:
        started = time.monotonic()
        assert b"250 2.0.0 OK queued" in server.smtp(dialogue())
        assert time.monotonic() - started < 10
    finally:
        os.close(holder)
    assert "is locked by another process: skipped for this connection" in server.log()


def test_the_store_stays_bounded(server: Server) -> None:
    now = [1000.0]
    memory = ClientMemory(str(server.spool), clock=lambda: now[0])
    for _ in range(MAX_TIMES + 500):  # one client's file keeps at most MAX_TIMES times
        now[0] += 0.01
        counted = memory.count_connection("192.0.2.1", 3600)
    assert counted == MAX_TIMES and store(server, "192.0.2.1").stat().st_size < MAX_FILE
    for n in range(300):  # many clients, all gone quiet: swept
        memory.count_connection(f"10.0.{n // 256}.{n % 256}", 60)
    memory.punish("198.51.100.1", "talked first")
    now[0] += 86400 + 61
    assert memory.sweep() == 302  # 300 quiet clients, 192.0.2.1, and the penalty is over
    assert sorted(os.listdir(server.spool / FOLDER)) == []
    memory.punish("198.51.100.2", "talked first", seconds=600)
    memory.count_connection("198.51.100.3", 60)
    assert memory.sweep() == 0 and len(os.listdir(server.spool / FOLDER)) == 2
    assert memory.sweep(keep=1) == 1  # past KEEP the least recently changed go


def test_any_remote_addr_is_a_safe_file_name(server: Server) -> None:
    memory = ClientMemory(str(server.spool))
    for addr in ("../../etc/passwd", "2001:db8::1", "a b\nc", "x" * 300):
        memory.punish(addr, "test")
        assert memory.penalty(addr) == "test"
    names = os.listdir(server.spool / FOLDER)
    assert all("/" not in n and not n.startswith(".") and len(n) < 50 for n in names) and len(names) == 4


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


def test_times_from_the_future_are_void(server: Server) -> None:
    server.write_config(limits={"rate": "2"})
    store(server).parent.mkdir(exist_ok=True)
    ahead = time.time() + 18 * 3600  # a clock stepped back, or a hand edit
    store(server).write_text(f"c {ahead} {ahead} {ahead}\np {ahead} talked before the greeting\n")
    assert codes(server.smtp(b"QUIT\r\n")) == [220, 221]  # neither penalised nor over the rate


def test_a_folder_of_other_files_is_left_alone_by_the_sweep(server: Server) -> None:
    memory = ClientMemory(str(server.spool), clock=lambda: 1000.0)
    memory.count_connection("192.0.2.1", 60)
    (server.spool / FOLDER / "notes.txt").write_text("mine")
    assert ClientMemory(str(server.spool), clock=lambda: 1000.0 + 90000).sweep() == 1
    assert os.listdir(server.spool / FOLDER) == ["notes.txt"]
