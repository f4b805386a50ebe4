"""The Public Suffix List in a compact form: built once, loaded in about a millisecond.

`load(cache_path)` gives a `Table` whose `private_suffix(domain)` answers exactly as
publicsuffixlist's `PublicSuffixList().privatesuffix(domain)` does for text input (its
default options: ICANN and private sections, an unknown TLD counts as a public suffix,
punycoded copies of IDN rules): the registrable domain, lower case, or None for a public
suffix itself or a name with an empty label.  Building `PublicSuffixList()` costs ~60 ms,
which every inetd-mode connection would pay; this module reads the package's own
`public_suffix_list.dat` (found on sys.path without importing the package), groups its
rules by their last label and keeps them in a marshal file, so a later process reads one
file of ~1,600 short strings and turns only the group it needs into a set.

The cache file records the list's path, size, mtime and inode: when the package or its
list is updated it is rebuilt, and replaced atomically (temporary file + rename), so
concurrent processes never read half a file.  When it cannot be written (a read-only
spool) the table is built in memory for this process: slow, still correct.  A cache file
that does not load, or is not ours, is rebuilt.  The cache lives where only the server
writes (the spool); marshal data is trusted as much as the spool is.

This module does no DMARC and no IDNA conversion (U-labels and A-labels are compared as
given, as publicsuffixlist does); orgdomain.py is its one user.
"""

from __future__ import annotations

import marshal
import os
import sys

#: Bump when the cache's layout or the grouping of the rules changes.
FORMAT = 1
DAT_NAME = os.path.join("publicsuffixlist", "public_suffix_list.dat")

Groups = dict[str, str]


class Table:
    """Public suffix rules grouped by their last label, with publicsuffixlist's lookup."""

    def __init__(self, groups: Groups, maxlabel: int, origin: str) -> None:
        self._groups = groups  # {last label: "\n".join(rules)}
        self._sets: dict[str, frozenset[str]] = {}  # groups turned into sets, on first use
        self._maxlabel = maxlabel
        #: "cache", "built+saved", "built" or "built (cache not saved: ...)": for logs and tests
        self.origin = origin

    def _rules(self, tld: str) -> frozenset[str]:
        rules = self._sets.get(tld)
        if rules is None:
            blob = self._groups.get(tld)
            if blob is None:  # an unknown TLD: not remembered, so junk names cannot grow _sets
                return frozenset()
            rules = self._sets[tld] = frozenset(blob.split("\n"))
        return rules

    def _count_public(self, labels: list[str]) -> int:
        """How many trailing labels are public (PublicSuffixList._countpublic, unknown TLDs
        accepted)."""
        count = len(labels)
        if count == 1:
            return 1
        rules = self._rules(labels[-1])  # every candidate below ends in labels[-1]
        for i in range(max(0, count - (self._maxlabel + 1)), count):  # the longest first
            depth = count - i
            candidate = ".".join(labels[-depth:])
            if "!" + candidate in rules:  # an exception: its parent is the public suffix
                return depth - 1
            if "*." + candidate in rules:  # a wildcard: one label more is public
                return depth + 1 if i > 0 else depth
            if candidate in rules:
                return depth
        return 1  # an unknown TLD: the TLD alone is public

    def private_suffix(self, domain: str) -> str | None:
        """The shortest private suffix (registrable domain) of DOMAIN, or None."""
        if not isinstance(domain, str):
            raise TypeError("domain must be str")
        if domain.endswith("."):
            domain = domain[:-1]
        labels = domain.lower().split(".")
        if "" in labels:
            return None
        public = self._count_public(labels)
        if not public or len(labels) < public + 1:
            return None
        return ".".join(labels[-(public + 1) :])


def find_dat(paths: list[str] | None = None) -> str:
    """The path of publicsuffixlist's data file, found without importing the package."""
    for entry in sys.path if paths is None else paths:
        path = os.path.join(entry or ".", DAT_NAME)
        if os.path.isfile(path):
            return path
    import importlib.util  # zip imports and other layouts: ask the import system

    spec = importlib.util.find_spec("publicsuffixlist")
    for entry in (spec and spec.submodule_search_locations) or ():
        return os.path.join(entry, "public_suffix_list.dat")
    raise FileNotFoundError("publicsuffixlist's public_suffix_list.dat not found")


def build(dat_path: str) -> tuple[Groups, int]:
    """The rules of DAT_PATH read as PublicSuffixList._parse reads them, grouped by the last
    label of the names each is tested against; and the most labels of any rule."""
    rules: set[str] = set()
    maxlabel = 0
    with open(dat_path, "rb") as f:
        for line in f:
            rule = line.decode("utf-8", "surrogateescape").lower().split(" ")[0].rstrip()
            if not rule or rule.startswith("//"):
                continue
            maxlabel = max(maxlabel, rule.count(".") + 1)
            rules.add(rule)
            puny = rule.lstrip("!").encode("idna").decode("ascii")  # the punycoded copy
            rules.add("!" + puny if rule[0] == "!" else puny)
    grouped: dict[str, list[str]] = {}
    for rule in rules:
        # "!x.y" is tested as "x.y" and as itself: both last labels lead to it.
        keys = {rule.rpartition(".")[2]}
        if rule.startswith("!"):
            keys.add(rule[1:].rpartition(".")[2])
        for key in keys:
            grouped.setdefault(key, []).append(rule)
    return {key: "\n".join(sorted(group)) for key, group in grouped.items()}, maxlabel


def _write_atomic(path: str, data: bytes) -> None:
    folder = os.path.dirname(path)
    if folder:
        try:
            os.mkdir(folder, 0o750)
        except FileExistsError:
            pass
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def load(cache_path: str | None = None, dat_path: str | None = None) -> Table:
    """A Table from CACHE_PATH when it matches the list, else built from the list (and saved
    to CACHE_PATH when one is given and writable)."""
    if dat_path is None:
        dat_path = find_dat()
    st = os.stat(dat_path)
    key = (FORMAT, dat_path, st.st_size, st.st_mtime_ns, st.st_ino)
    if cache_path:
        try:
            with open(cache_path, "rb") as f:
                cached = marshal.loads(f.read())
            if cached[0] == key and isinstance(cached[1], dict) and isinstance(cached[2], int):
                return Table(cached[1], cached[2], "cache")
        except (OSError, EOFError, ValueError, TypeError, IndexError, KeyError):
            pass  # missing, unreadable or not ours: built again below
    groups, maxlabel = build(dat_path)
    origin = "built"
    if cache_path:
        try:
            _write_atomic(cache_path, marshal.dumps((key, groups, maxlabel)))
            origin = "built+saved"
        except OSError as e:
            origin = f"built (cache not saved: {e})"
    return Table(groups, maxlabel, origin)
