"""Organisational domains (the Public Suffix List) and DMARC alignment: their one home.

`organizational_domain("a.b.example.co.uk")` is "example.co.uk"; `aligned(d, from,
strict)` is RFC 7489 3.1's identifier alignment.  DMARC uses them, and so do the
reply rules (a DKIM d= aligned with the sender's domain).  One list per process.
"""

from __future__ import annotations

from functools import lru_cache

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


def organizational_domain(domain: str) -> str:
    """The registered domain of DOMAIN by the Public Suffix List (itself when it is one)."""
    domain = domain.lower().rstrip(".")
    return _psl_private_suffix(domain) or domain


@lru_cache(maxsize=1024)
def _psl_private_suffix(domain: str) -> str | None:
    return _psl().privatesuffix(domain)  # type: ignore[no-any-return]


@lru_cache(maxsize=1)
def _psl() -> Any:
    from publicsuffixlist import PublicSuffixList

    return PublicSuffixList()


def aligned(domain: str, from_domain: str, strict: bool) -> bool:
    """Strict: the same domain; relaxed: the same organisational domain."""
    domain, from_domain = domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    if not domain or not from_domain:
        return False
    if strict:
        return domain == from_domain
    return organizational_domain(domain) == organizational_domain(from_domain)
