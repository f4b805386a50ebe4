"""The one address parser (inbound/addresses.py): what the Envelope shows of From is what the
DMARC check evaluated, whatever the field looks like; linear in time."""

from __future__ import annotations

import random
import time

import pytest

from inbound.addresses import display_name, domains, parse
from inbound.checks.headers import from_domains, header_fields
from inbound.envelope import Envelope

TRICKY = [
    "alice@example.com",
    "Alice <alice@example.com>",
    '"alice@trusted.example" <mallory@evil.example>',
    "victim@p-reject.example, me@evil.example",
    "<me@evil.example> victim@p-reject.example",
    "victim@p-reject.example@evil.example",
    '(") victim@p-reject.example',
    '"(" victim@p-reject.example',
    "g: me@evil.example, victim@p-reject.example;",
    "=?utf-8?q?victim@p-reject.example?= <me@evil.example>",
    "=?utf-8?q?victim@p-reject.example?=",
    "me@evil.example (victim@p-reject.example)",
    "<@p-reject.example:me@evil.example>",
    "Alice alice@example.com",
    '"unterminated <victim@p-reject.example>',
    "<victim@p-reject.example",
    "x <<victim@p-reject.example>>",
    "a.@b.example, .a@c.example, a..b@d.example",
    "me@EVIL.example.",
    "victim@[192.0.2.1]",
    "J\xf6rg <j\xf6rg@b\xfccher.example>",
    "me@evil.example,,, ,victim@p-reject.example",
    "me@evil.example\r\n victim@p-reject.example",
]


def envelope_domains(value: str) -> list[str]:
    raw = f"From: {value}\r\nTo: x@example.org\r\n\r\nbody\r\n".encode()
    env = Envelope(queue_id="Q", sender="", recipients=["x@example.org"], raw=raw)
    return [a.address.rpartition("@")[2].lower().rstrip(".") for a in env.from_]


@pytest.mark.parametrize("value", TRICKY)
def test_the_envelope_shows_only_from_domains_that_dmarc_evaluated(value: str) -> None:
    raw = f"From: {value}\r\n\r\nbody\r\n".encode()
    evaluated, _ = from_domains(header_fields(raw))
    assert set(envelope_domains(value)) <= set(evaluated), (value, evaluated)


def test_fuzzed_from_fields_show_only_evaluated_domains() -> None:
    rng = random.Random(13)
    pieces = ["a", "victim", "@", ".", "example", "evil", ",", ";", ":", "<", ">", '"', "(", ")", "\\", " ",
              "=?utf-8?q?x?=", "[1.2.3.4]", "\r\n ", "é", "g:"]  # fmt: skip
    for _ in range(500):
        value = "".join(rng.choice(pieces) for _ in range(rng.randrange(1, 30)))
        raw = f"From: {value}\r\n\r\nbody\r\n".encode()
        evaluated, _ = from_domains(header_fields(raw))
        assert set(envelope_domains(value)) <= set(evaluated), (value, evaluated)


def test_addresses_names_and_domains() -> None:
    [box] = parse('"Doe, John" (the boss) <john@example.com>')
    assert (box.name, box.address, box.domain) == ("Doe, John", "john@example.com", "example.com")
    assert [b.address for b in parse("Alice alice@example.org")] == ['"Alice alice"@example.org']
    assert [b.address for b in parse('"john"@x.example, "john doe"@x.example')] == [
        "john@x.example",
        '"john doe"@x.example',
    ]
    assert [b.address for b in parse("<a@b.example> c@d.example")] == ["a@b.example", "c@d.example"]
    assert [b.address for b in parse("undisclosed-recipients:;, <>")] == []
    assert domains("a@b.example@C.Example., x") == (["b.example", "c.example"], True)


def test_display_names_decode_encoded_words_in_text_charsets_only() -> None:
    assert display_name("=?utf-8?q?J=C3=B6rg?= =?utf-8?q?_M=C3?= =?utf-8?b?vGxsZXI=?=") == "Jörg Müller"
    assert display_name("=?iso-8859-1?q?Ren=E9e?= Dupont") == "Renée Dupont"
    assert display_name("a =?utf-8?q?b?= c") == "a b c"
    assert display_name("=?punycode?q?abc-xyz?=") == "abc-xyz"  # not decoded as punycode
    assert display_name("=?utf-8?q?broken") == "=?utf-8?q?broken"


def test_parsing_is_linear_in_the_field() -> None:
    """The stdlib's header parser takes 0.5 s for 8 KB of `"a"a"a...` (and recursion on
    nested comments); the check path reads From fields of up to 256 KB.  Linear: four
    times the field costs about four times the CPU (quadratic would be 16), and the
    largest stays far below a second or two of our own CPU time."""
    shapes = [
        lambda n: ", ".join(f"a@d{i}.example" for i in range(n // 4)),  # distinct domains
        lambda n: '"' + '"a' * n,
        lambda n: "(" * n,
        lambda n: "a@b," * (n // 2),
        lambda n: "<" * (2 * n),
        lambda n: "=?utf-8?q?a?= " * (n // 7),
    ]

    def cost(value: str) -> float:
        best = float("inf")
        for _ in range(3):  # the least of three: our CPU, not a loaded machine's noise
            started = time.process_time()
            parse(value)
            domains(value)
            best = min(best, time.process_time() - started)
        return best

    for shape in shapes:
        small, large = cost(shape(25_000)), cost(shape(100_000))
        assert large < 10 * small + 0.05 and large < 5, (shape(8), small, large)
