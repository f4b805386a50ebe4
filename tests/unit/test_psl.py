"""The compact Public Suffix List (checks/psl.py): the same answers as publicsuffixlist's
`PublicSuffixList().privatesuffix()` on the package's own test domains, on names made
around every rule of the installed list, on odd input and on small lists of other
shapes; and the cache's life: written once, used after, rebuilt when the list changes,
in memory when it cannot be written, safe when processes race to build it.
"""

from __future__ import annotations

import marshal
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import publicsuffixlist
import pytest
from publicsuffixlist import PublicSuffixList

from inbound.checks import orgdomain, psl

PACKAGE = Path(publicsuffixlist.__file__).parent
DAT = str(PACKAGE / "public_suffix_list.dat")
ROOT = Path(__file__).resolve().parents[2]

REFERENCE = PublicSuffixList()
TABLE = psl.load(None, DAT)
RULES = sorted(REFERENCE._publicsuffix)  # the rules and their punycoded copies, as the package has them


def mismatches(table: psl.Table, reference: PublicSuffixList, domains: list[str]) -> list[tuple]:
    return [
        (d, want, got)
        for d in domains
        if (want := reference.privatesuffix(d)) != (got := table.private_suffix(d))
    ]


# -- the package's own test domains ------------------------------------------------------
def package_vectors() -> list[tuple[str, str | None]]:
    pattern = re.compile(r"^checkPublicSuffix\(('[^']+'), (null|'[^']+')\);")
    vectors = []
    for line in (PACKAGE / "test_psl.txt").read_text(encoding="utf-8").splitlines():
        if m := pattern.match(line):
            vectors.append((m.group(1).strip("'"), None if m.group(2) == "null" else m.group(2).strip("'")))
    return vectors


@pytest.mark.parametrize(("domain", "expected"), package_vectors())
def test_the_package_test_list_gives_the_same_answers(domain: str, expected: str | None) -> None:
    assert TABLE.private_suffix(domain) == expected == REFERENCE.privatesuffix(domain)


# privatesuffix() expectations of publicsuffixlist/test.py (text input)
TEST_PY = [
    ("www.example.co.jp", "example.co.jp"),
    ("Jp", None),
    ("cO.Jp", None),
    ("eXaMpLe.cO.Jp", "example.co.jp"),
    (".example.com", None),
    ("www..invalid", None),
    ("", None),
    ("example.com.", "example.com"),
    ("www.example.香港", "example.香港"),
    ("www.example.xn--j6w193g", "example.xn--j6w193g"),
    ("com", None),
    ("example.nagoya.jp", None),
    ("www.example.unknowntld", "example.unknowntld"),
    ("unknowntld", None),
    ("test.example.nagoya.jp", "test.example.nagoya.jp"),
    ("Aaa.Www.Example.Co.Jp", "example.co.jp"),
    ("a." * 10000 + "example.com", "example.com"),
]


@pytest.mark.parametrize(("domain", "expected"), TEST_PY, ids=lambda v: repr(v)[:40])
def test_the_package_test_module_vectors_give_the_same_answers(domain: str, expected: str | None) -> None:
    assert TABLE.private_suffix(domain) == expected == REFERENCE.privatesuffix(domain)


# -- names around every rule of the installed list ---------------------------------------
def around(rule: str) -> list[str]:
    """Names at, below and above one rule."""
    if rule.startswith("!"):
        base = rule[1:]
        parent = base.partition(".")[2]
        return [base, "s." + base, "a.s." + base, parent, "x." + parent, "y.x." + parent]
    if rule.startswith("*."):
        base = rule[2:]
        return [base, "w." + base, "a.w." + base, "b.a.w." + base]
    return [rule, "sub." + rule, "a.b." + rule, rule.partition(".")[2] or rule]


AROUND_RULES = [d for rule in RULES for d in around(rule)]


def test_names_around_every_rule_give_the_same_answers() -> None:
    assert len(AROUND_RULES) > 40000
    assert mismatches(TABLE, REFERENCE, AROUND_RULES) == []


def test_upper_case_and_a_final_dot_give_the_same_answers() -> None:
    variants = [v for d in AROUND_RULES for v in (d.upper(), d + ".", d.title() + ".")]
    assert mismatches(TABLE, REFERENCE, variants) == []


def test_idn_rules_in_u_a_and_mixed_forms_give_the_same_answers() -> None:
    idn = [r for r in RULES if not r.isascii()]
    assert len(idn) > 400
    domains = []
    for rule in idn:
        for d in around(rule):
            labels = d.split(".")
            a = [x.encode("idna").decode("ascii") if x and x != "*" else x for x in labels]
            domains += [d, ".".join(a), ".".join(a).upper(), ".".join(a[:-1] + labels[-1:])]
    assert mismatches(TABLE, REFERENCE, domains) == []


def test_random_label_soup_gives_the_same_answers() -> None:
    rng = random.Random(1234)
    pool = sorted({x for r in RULES for x in r.lstrip("!").split(".")} | {"*", "!x", "WwW", "İ", "Ⅻ", ""})
    domains = [".".join(rng.choice(pool) for _ in range(rng.randint(1, 8))) for _ in range(20000)]
    assert mismatches(TABLE, REFERENCE, domains) == []


ODD = [
    "example.com..",
    ".",
    "..",
    "a..com",
    " example.com",
    "exa mple.com",
    "*.example.com",
    "!x.com",
    "www.ck",
    "!www.ck",
    "foo.bar.ck",
    "www.example。com",
    "www.İstanbul.bel.tr",
    "ß.de",
    "www.個人.香港",
    "ÉCOLE.FR",
    "\udcff.com",
    "a\nb.com",
    "x." * 20 + "kobe.jp",
    "CITY.KOBE.JP",
]


@pytest.mark.parametrize("domain", ODD, ids=repr)
def test_odd_names_give_the_same_answers(domain: str) -> None:
    assert TABLE.private_suffix(domain) == REFERENCE.privatesuffix(domain)


def test_organizational_domain_is_the_name_itself_for_a_public_suffix() -> None:
    assert orgdomain.organizational_domain("Mail.Example.CO.UK.") == "example.co.uk"
    assert orgdomain.organizational_domain("co.uk") == "co.uk"
    assert orgdomain.organizational_domain("unknowntld") == "unknowntld"


# -- lists of other shapes (rule corner cases) -------------------------------------------
LISTS = {
    "wiki": "com\n*.foo.com\n*.jp\n*.hokkaido.jp\n*.tokyo.jp\n!pref.hokkaido.jp\n!metro.tokyo.jp\n",
    "exception_below_wildcard": "invalid\n*.invalid\n!test.invalid\n",
    "wildcard_only_tld": "*.bd\n",
    "idn": "example\n例.example\n",
    "odd": "!x\n!!y\n*\n*.*.z\nz\n  leading.space\ntrail.com // comment\nUPPER.Case\r\n例.例\n!例.例\n",
    "deep": "a.b.c.d.e.f.g.h\n*.q.r.s.t.u.v.w.x\n!p.q.r.s.t.u.v.w.x\n",
}


@pytest.mark.parametrize("name", sorted(LISTS))
def test_lists_of_other_shapes_give_the_same_answers(name: str, tmp_path: Path) -> None:
    dat = tmp_path / "list.dat"
    dat.write_bytes(LISTS[name].encode("utf-8"))
    reference = PublicSuffixList(dat.read_bytes().splitlines(keepends=True))
    table = psl.load(str(tmp_path / "cache" / "psl.marshal"), str(dat))
    rules = sorted(reference._publicsuffix)
    labels = sorted({x for r in rules for x in r.split(".")} | {"x", "y", "z", "!x", "*"})
    domains = [d for r in rules for d in around(r)]
    domains += [a + "." + b for a in labels for b in labels]
    domains += [a + "." + b + "." + c for a in labels[:12] for b in labels for c in labels]
    domains += [d.upper() for d in domains] + [d + "." for d in domains]
    assert mismatches(table, reference, domains) == []
    assert psl.load(str(tmp_path / "cache" / "psl.marshal"), str(dat)).origin == "cache"


# -- the cache's life --------------------------------------------------------------------
@pytest.fixture
def dat_copy(tmp_path: Path) -> str:
    path = tmp_path / "pkg" / "public_suffix_list.dat"
    path.parent.mkdir()
    path.write_bytes(Path(DAT).read_bytes())
    return str(path)


def test_the_cache_is_written_once_then_read(dat_copy: str, tmp_path: Path) -> None:
    cache = str(tmp_path / "spool" / "cache" / "psl.marshal")
    os.mkdir(tmp_path / "spool")
    built = psl.load(cache, dat_copy)
    assert built.origin == "built+saved"
    assert os.listdir(os.path.dirname(cache)) == ["psl.marshal"]  # no temporary file left
    read = psl.load(cache, dat_copy)
    assert read.origin == "cache"
    assert read._groups == built._groups and read._maxlabel == built._maxlabel


def test_the_cache_is_rebuilt_when_the_list_changes(dat_copy: str, tmp_path: Path) -> None:
    cache = str(tmp_path / "psl.marshal")
    assert psl.load(cache, dat_copy).private_suffix("a.b.zz-test.com") == "zz-test.com"
    with open(dat_copy, "ab") as f:
        f.write(b"\nzz-test.com\n")
    table = psl.load(cache, dat_copy)
    assert table.origin == "built+saved"
    assert table.private_suffix("a.b.zz-test.com") == "b.zz-test.com"
    assert psl.load(cache, dat_copy).origin == "cache"


def test_the_cache_is_rebuilt_when_the_list_is_replaced_with_the_same_size_and_time(
    dat_copy: str, tmp_path: Path
) -> None:
    cache = str(tmp_path / "psl.marshal")
    psl.load(cache, dat_copy)
    st = os.stat(dat_copy)
    new = dat_copy + ".new"
    Path(new).write_bytes(Path(dat_copy).read_bytes().replace(b"\ncom\n", b"\nmoc\n", 1))
    os.utime(new, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.replace(new, dat_copy)  # a new inode, as a package upgrade leaves it
    assert psl.load(cache, dat_copy).origin == "built+saved"


@pytest.mark.parametrize(
    "junk", [b"", b"garbage", b"\xff" * 100, marshal.dumps([1, 2]), marshal.dumps(("k", {}, 1)), None]
)
def test_a_broken_cache_is_rebuilt(dat_copy: str, tmp_path: Path, junk: bytes | None) -> None:
    cache = tmp_path / "psl.marshal"
    good = psl.load(str(cache), dat_copy)
    data = cache.read_bytes()
    cache.write_bytes(data[: len(data) // 2] if junk is None else junk)  # None: truncated
    table = psl.load(str(cache), dat_copy)
    assert table.origin == "built+saved" and table._groups == good._groups


def test_an_unwritable_cache_falls_back_to_memory(dat_copy: str, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    for cache in (blocker / "psl.marshal", tmp_path / "missing" / "cache" / "psl.marshal"):
        table = psl.load(str(cache), dat_copy)
        assert table.origin.startswith("built (cache not saved")
        assert table.private_suffix("www.example.co.uk") == "example.co.uk"
    assert sorted(os.listdir(tmp_path)) == ["not-a-dir", "pkg"]


def test_the_list_is_found_without_importing_the_package() -> None:
    assert psl.find_dat([str(PACKAGE.parent)]) == DAT
    assert psl.find_dat(["/nonexistent", str(PACKAGE.parent)]) == DAT
    assert psl.find_dat(["/nonexistent"]) == DAT  # the import system's answer


def _isolated(code: str) -> str:
    """CODE in `python -I -S` with the checkout and the venv's packages on sys.path."""
    prelude = f"import sys; sys.path[:0] = [{str(ROOT)!r}]; sys.path.append({str(PACKAGE.parent)!r})\n"
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", prelude + code], capture_output=True, text=True, check=True
    )
    return result.stdout.strip()


def test_a_process_reading_the_cache_imports_nothing_of_the_package(tmp_path: Path) -> None:
    code = (
        "from inbound.checks import orgdomain\n"
        f"orgdomain.use_cache_dir({str(tmp_path / 'cache')!r})\n"
        "print(orgdomain.organizational_domain('WWW.Example.co.uk.'), orgdomain.table().origin)\n"
        "heavy = ('publicsuffixlist', 'encodings.idna', 'importlib.util')\n"
        "print(sorted(m for m in heavy if m in sys.modules))\n"
    )
    first = _isolated(code).splitlines()
    assert first[0] == "example.co.uk built+saved"
    assert _isolated(code).splitlines() == ["example.co.uk cache", "[]"]


def test_processes_racing_to_build_the_cache_all_answer(dat_copy: str, tmp_path: Path) -> None:
    cache = str(tmp_path / "psl.marshal")
    code = (
        f"import sys; sys.path[:0] = [{str(ROOT)!r}]\nfrom inbound.checks import psl\n"
        f"print(psl.load({cache!r}, {dat_copy!r}).private_suffix('a.example.co.uk'))"
    )
    argv = [sys.executable, "-I", "-S", "-c", code]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) for _ in range(4)]
    assert [p.communicate()[0].strip() for p in procs] == ["example.co.uk"] * 4
    assert sorted(os.listdir(tmp_path)) == ["pkg", "psl.marshal"]
    assert psl.load(cache, dat_copy).origin == "cache"
