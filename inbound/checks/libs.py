"""pyspf and dkimpy, imported without dnspython: every DNS lookup of ours goes to resolver.py.

Both libraries import a DNS package at import time although we never let them use it:

* pyspf 2.0.14 runs `import dns; import dns.resolver; import dns.exception` (else pydns's
  `import DNS`) and fails to import without one of them; its only other DNS use is the
  module global `DNSLookup`, which spf.py points at our resolver.
* dkimpy 1.1.8's `dkim.dnsplug` imports `dns.resolver` (else `DNS`, else `aiodns`) and
  settles for a `get_txt` that raises RuntimeError when none is there; we pass
  `dnsfunc=` to every verification.

dnspython costs ~70 ms per process to import (`dns._features` loads
`importlib.metadata`), more than the rest of a checked session.  So for the length of
the import only, `import_spf()` lets pyspf's probe find a placeholder module (with the
`SPF` type it checks for), and `import_dkim()` makes dkimpy's probes fail as if no DNS
package were installed (`sys.modules[name] = None`, the import system's "not
importable").  pyspf also imports `email.message` for one function we never call: it
gets a stand-in whose Message makes the real one when first used.  The entries are taken
out afterwards, so anyone importing dnspython or the email package later in the process
gets the real one.  Nothing in either library is patched.

The consequence for others in the process: `dkim.verify()` without `dnsfunc=` raises
RuntimeError (pass one), and pyspf asks the system's servers through our resolver.  When
dnspython is already imported (say a handler imported it first), the libraries are
imported as they are.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType
    from typing import Any

_DNS_PACKAGES = ("dns", "dns.resolver", "dns.exception", "DNS", "aiodns")


def _importing(name: str, entries: dict[str, Any]) -> ModuleType:
    """Import NAME with ENTRIES in sys.modules for the length of the import."""
    saved = {key: sys.modules[key] for key in entries if key in sys.modules}
    sys.modules.update(entries)
    try:
        __import__(name)
    finally:
        for key, value in entries.items():
            if sys.modules.get(key) is value:
                del sys.modules[key]
        sys.modules.update(saved)
    return sys.modules[name]


def _dnspython_loaded() -> bool:
    return "dns.resolver" in sys.modules


class _Message:
    """What pyspf gets as `email.message.Message`: making one makes the real one, so its
    `parse_header_spf()` (the one user) works as ever, and a session that never calls it
    does not import the email package (email.message and email.utils, ~4 ms)."""

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        from email.message import Message

        return Message(*args, **kwargs)


def import_spf(lookup: Callable[..., Any]) -> ModuleType:
    """pyspf, with its module-level DNSLookup set to LOOKUP."""
    if "spf" in sys.modules or _dnspython_loaded():
        import spf
    else:
        import types

        placeholder = types.ModuleType("dns", "a stand-in: pyspf's import-time probe only")
        placeholder.rdatatype = types.SimpleNamespace(SPF=99)  # type: ignore[attr-defined]
        entries: dict[str, Any] = dict.fromkeys(("dns", "dns.resolver", "dns.exception"), placeholder)
        if "email.message" not in sys.modules:
            message = types.ModuleType("email.message", "a stand-in: the real one on first use")
            message.Message = _Message  # type: ignore[attr-defined]
            entries["email.message"] = message
        spf = _importing("spf", entries)
    if spf.DNSLookup is not lookup:
        spf.DNSLookup = lookup
    return spf


def import_dkim() -> ModuleType:
    """dkimpy (pass `dnsfunc=` to whatever verifies)."""
    if "dkim" in sys.modules or _dnspython_loaded():
        import dkim

        return dkim
    blocked = {name: None for name in _DNS_PACKAGES if name not in sys.modules}
    return _importing("dkim", blocked)
