"""Organisational domains (the Public Suffix List) and DMARC alignment: their one home.

`organizational_domain("a.b.example.co.uk")` is "example.co.uk"; `aligned(d, from,
strict)` is RFC 7489 3.1's identifier alignment.  DMARC uses them, and so do the
reply rules (a DKIM d= aligned with the sender's domain).

The list is publicsuffixlist's, read through psl.py's compact cache (about a millisecond
a process instead of ~60 ms for `PublicSuffixList()`), loaded on the first lookup, once
per process.  `use_cache_dir(folder)` says where that cache lives (delivery passes
`<spool>/cache`); without one the list is built in memory for the process.
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from .psl import Table

#: The cache file's name in the folder given to use_cache_dir().
CACHE_NAME = "psl.marshal"

_cache_path: str | None = None
_table: Table | None = None


def use_cache_dir(folder: str | None) -> None:
    """Keep the compact list in FOLDER (created if missing; its parent must exist)."""
    global _cache_path, _table
    path = os.path.join(folder, CACHE_NAME) if folder else None
    if path != _cache_path:
        _cache_path, _table = path, None


def table() -> Table:
    """The process's list (loaded, or built, on first use)."""
    global _table
    if _table is None:
        from .psl import load

        _table = load(_cache_path)
    return _table


def organizational_domain(domain: str) -> str:
    """The registered domain of DOMAIN by the Public Suffix List (itself when it is one)."""
    domain = domain.lower().rstrip(".")
    return table().private_suffix(domain) or domain


def aligned(domain: str, from_domain: str, strict: bool) -> bool:
    """Strict: the same domain; relaxed: the same organisational domain."""
    domain, from_domain = domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    if not domain or not from_domain:
        return False
    if strict:
        return domain == from_domain
    return organizational_domain(domain) == organizational_domain(from_domain)
