"""The plain-form scanners of smtp/syntax.py answer as the regular expressions they stand
in front of: for every input they recognise, the expression matches with the same groups;
what they do not recognise goes to the expression.  Random inputs over alphabets made to
hit the edges (dots, hyphens, quotes, brackets, controls, non-ASCII)."""

from __future__ import annotations

import random
import re
import subprocess
import sys

import pytest
from conftest import ROOT

from inbound.smtp import syntax

PATTERNS = {"MAILBOX": syntax.MAILBOX, "HELO_ARG": syntax.HELO_ARG, "PARAM_KEYWORD": syntax.PARAM_KEYWORD}
ALPHABET = list('aZ09.-_@+!~"[]\\ \t') + ["\x00", "\x7f", "\x85", "é", "\u2028", "xn--", ".."]


def samples(seed: int, count: int = 4000) -> list[str]:
    rng = random.Random(seed)
    words = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12))) for _ in range(count)]
    words += [f"{a}@{b}" for a, b in zip(words[::2], words[1::2], strict=False)]
    plausible = list("abz09.-+_") + ["..", ".-", "-."]
    words += [
        "".join(rng.choice(plausible) for _ in range(rng.randint(1, 8)))
        + "@"
        + "".join(rng.choice(plausible) for _ in range(rng.randint(1, 10)))
        for _ in range(count)
    ]
    words += ["a@b", "a.b@c.d.", "a..b@c", ".a@b", "a@-b", "a@b-", "a@b.-c", "x" * 255, "x" * 256, "a-", "-a"]
    words += ['"q"@b', "a@[192.0.2.1]", "a@b@c", "é@b", "a@é", "", "@", "a@", "@b"]
    return words


@pytest.mark.parametrize("name", sorted(PATTERNS))
@pytest.mark.parametrize("seed", range(3))
def test_plain_forms_match_as_the_expression_does(name: str, seed: int) -> None:
    pattern = PATTERNS[name]
    expression = re.compile(pattern.pattern)
    recognised = 0
    for text in samples(seed):
        want = expression.fullmatch(text)
        got = pattern.fullmatch(text)
        assert bool(got) == bool(want), (name, text)
        if want and name == "MAILBOX":
            assert (got.group(1), got.group(2)) == (want.group(1), want.group(2)), text
        recognised += pattern.plain(text) is not None
    assert recognised > 50  # the plain path is taken, not only the expression


def test_an_ordinary_session_never_imports_re() -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
        "from inbound.smtp import syntax\n"
        "assert syntax.HELO_ARG.fullmatch('mail.example.org')\n"
        "assert syntax.check_mailbox('alice.b+tag@Example.ORG.') == ('alice.b+tag', 'Example.ORG.')\n"
        "assert syntax.parse_params('SIZE=100 BODY=8BITMIME') == {'SIZE': '100', 'BODY': '8BITMIME'}\n"
        "print('re' in sys.modules)\n"
        "assert syntax.check_mailbox('\"a b\"@example.org') == ('\"a b\"', 'example.org')\n"
        "print('re' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]


def test_route_patterns_match_as_fnmatch_does() -> None:
    import fnmatch

    from inbound.delivery.router import matches

    rng = random.Random(7)
    letters = list("ab.@*?") + ["[ab]", "[!a]", "x"]
    for _ in range(20000):
        pattern = "".join(rng.choice(letters) for _ in range(rng.randint(0, 7)))
        address = "".join(rng.choice("ab.@x") for _ in range(rng.randint(0, 9)))
        assert matches(address, pattern) == fnmatch.fnmatchcase(address, pattern), (address, pattern)
    assert matches("8ball@example.org", "*@example.org") and not matches("a@example.net", "*@example.org")
