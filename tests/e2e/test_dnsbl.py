"""[checks] dnsbl: blocklist zones served by the project's own DNS server on 127.0.0.1.
A listed client gets 554 5.7.1 at RCPT (zone and code in the reply) for every recipient
but postmaster@; dnsbl_reject = no only reports; a blocklist that times out lists nobody."""

from __future__ import annotations

import json

from conftest import Server, codes, dialogue, replies

LISTED = "192.0.2.10"


def blocklists(server: Server, dns_server, **checks: str) -> None:  # type: ignore[no-untyped-def]
    host, port = dns_server.address
    dns_server.serve(
        {
            "10.2.0.192.zen.test": [{"A": "127.0.0.4"}],
            "10.2.0.192.slow.test": ["TIMEOUT"],
            "10.2.0.192.error.test": [{"A": "127.255.255.254"}],
        }
    )
    server.write_config(checks={"dns_servers": f"{host}:{port}", "dns_timeout": "1", **checks})


def test_a_listed_client_is_refused_at_rcpt_with_zone_and_code(server: Server, dns_server) -> None:  # type: ignore[no-untyped-def]
    blocklists(server, dns_server, dnsbl="zen.test")
    out = server.smtp(dialogue("sink@example.org", "postmaster@example.org"), remote_addr=LISTED)
    assert replies(out)[3] == (
        b"554 5.7.1 <sink@example.org>: refused: your address 192.0.2.10 is listed by zen.test (127.0.0.4)"
    )
    assert codes(out)[4] == 250  # postmaster@ is always accepted
    assert "listed: zen.test=127.0.0.4" in server.log()
    [queue_id] = [line.split()[-1] for line in out.decode().splitlines() if "queued as" in line]
    assert queue_id


def test_an_unlisted_client_is_not_refused(server: Server, dns_server) -> None:  # type: ignore[no-untyped-def]
    blocklists(server, dns_server, dnsbl="zen.test")
    assert b"250 2.0.0 OK queued" in server.smtp(dialogue(), remote_addr="192.0.2.11")


def test_with_dnsbl_reject_off_a_listing_is_only_reported(server: Server, dns_server) -> None:  # type: ignore[no-untyped-def]
    blocklists(server, dns_server, dnsbl="zen.test, slow.test", dnsbl_reject="no")
    out = server.smtp(dialogue(), remote_addr=LISTED)
    assert b"250 2.0.0 OK queued" in out
    [(_, env)] = server.got()
    assert env["DNSBL"] == "zen.test"
    [queue_id] = server.ids("done") or [env["QUEUE_ID"]]
    del queue_id


def test_a_blocklist_that_times_out_or_answers_an_error_code_lists_nobody(server: Server, dns_server) -> None:  # type: ignore[no-untyped-def]
    blocklists(server, dns_server, dnsbl="slow.test, error.test")
    assert b"250 2.0.0 OK queued" in server.smtp(dialogue(), remote_addr=LISTED)
    assert "dnsbl slow.test: lookup of 192.0.2.10 failed" in server.log()


def test_the_listing_is_kept_in_the_envelope_record(server: Server, dns_server) -> None:  # type: ignore[no-untyped-def]
    blocklists(server, dns_server, dnsbl="zen.test", dnsbl_reject="no")
    server.add_program("slow", "#!/bin/sh\ncat > /dev/null\nexit 75\n")
    server.smtp(dialogue("slow@example.org"), remote_addr=LISTED)
    [queue_id] = server.ids("queue")
    record = json.loads((server.spool / "queue" / queue_id / "envelope.json").read_text())
    assert record["dnsbl"] == ["zen.test=127.0.0.4"]


def test_cached_answers_are_of_the_configured_zones_only(server: Server, dns_server) -> None:  # type: ignore[no-untyped-def]
    blocklists(server, dns_server, dnsbl="zen.test")
    assert b"554 5.7.1" in server.smtp(dialogue(), remote_addr=LISTED)
    assert b"554 5.7.1" in server.smtp(dialogue(), remote_addr=LISTED)  # from the cache, and said so
    assert "listed: zen.test=127.0.0.4 (cached)" in server.log()
    blocklists(server, dns_server, dnsbl="error.test")  # another zone: not the old answer
    assert b"250 2.0.0 OK queued" in server.smtp(dialogue(), remote_addr=LISTED)
    assert (
        "dnsbl error.test answers 127.255.255.254 for 192.0.2.10: the list refuses our queries"
        in server.log()
    )


def test_a_failed_lookup_is_not_cached_as_not_listed(server: Server, dns_server) -> None:  # type: ignore[no-untyped-def]
    blocklists(server, dns_server, dnsbl="slow.test")  # times out: no answer
    assert b"250 2.0.0 OK queued" in server.smtp(dialogue(), remote_addr=LISTED)
    dns_server.serve({"10.2.0.192.slow.test": [{"A": "127.0.0.2"}]})  # the list answers again
    assert b"554 5.7.1" in server.smtp(dialogue(), remote_addr=LISTED)  # asked again, not cached
