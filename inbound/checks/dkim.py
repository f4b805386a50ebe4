"""DKIM (RFC 6376, RFC 8463) and ARC (RFC 8617) through dkimpy, keys from our resolver.

DKIM: every DKIM-Signature (up to MAX_DKIM_SIGNATURES) is verified and reported with its
d=, s=, the start of b= and its result.  RFC 8301: rsa-sha1 and RSA keys under 1024 bits
verify as `policy`, never `pass`.  A signature whose l= leaves part of the body unsigned
is `policy` too (appended content is not authenticated); one whose l= covers the whole
body passes.

ARC: the chain validation result, pass, fail or none.  Any error of the library
(malformed d=/s=, ...) is `fail`.

dkimpy is imported inside the functions, so reading stored results stays cheap.  This
module reports results; it decides nothing.
"""

from __future__ import annotations

import re

from .headers import header_fields
from .results import ARCResult, DKIMResult

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .resolver import Resolver

#: At most this many DKIM signatures are verified per message (RFC 6376 6.1 allows a limit).
MAX_DKIM_SIGNATURES = 20


class _KeyTemporary(Exception):
    """The key lookup failed for now (raised through dkimpy to us)."""


class _KeyMissing(Exception):
    """No usable key record at the selector (raised through dkimpy to us)."""


class _KeyLookup:
    """dkimpy's `dnsfunc` over our resolver.

    For DKIM (`raise_missing`) a missing key or a DNS failure is raised past dkimpy, which
    would otherwise only say False; for ARC it behaves as dkimpy's own: None when there is
    no key, DnsTimeoutError on a failure (the ARC verdict is then fail)."""

    def __init__(self, resolver: Resolver, raise_missing: bool) -> None:
        self.resolver = resolver
        self.raise_missing = raise_missing
        self.problem = ""

    def __call__(self, name: bytes | str, timeout: float = 5) -> bytes | None:
        from .resolver import DNSNameError, DNSTemporaryError

        text = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
        try:
            records = self.resolver.txt(text)
        except DNSNameError:
            records = []
        except DNSTemporaryError as e:
            self.problem = f"key lookup failed: {e}"
            if self.raise_missing:
                raise _KeyTemporary(self.problem) from None
            import dkim

            raise dkim.DnsTimeoutError(self.problem) from None
        if not records:
            self.problem = f"no key at {text.rstrip('.')}"
            if self.raise_missing:
                raise _KeyMissing(self.problem)
            return None
        if self.raise_missing:
            import dkim

            try:
                dkim.evaluate_pk(text, records[0])
            except Exception as e:  # KeyFormatError, binascii.Error, ...: the record is unusable
                self.problem = f"unusable key at {text.rstrip('.')}: {e}"
                raise _KeyMissing(self.problem) from None
        return records[0]


class _QuietLogger:
    """dkimpy logs every failure at error level; our caller reports results instead."""

    def debug(self, *args: Any, **kwargs: Any) -> None:
        pass

    info = warning = error = exception = debug


def check_dkim(message: bytes, resolver: Resolver) -> list[DKIMResult]:
    """Verify every DKIM-Signature of MESSAGE; [] when it has none."""
    import dkim

    try:
        verifier = dkim.DKIM(message, logger=_QuietLogger(), minkey=0, timeout=resolver.timeout)
    except Exception as e:  # the header block does not parse: we cannot even find signatures
        if any(name == "dkim-signature" for name, _ in header_fields(message)):
            return [DKIMResult("permerror", reason=f"message does not parse: {e}")]
        return []
    count = sum(1 for name, _ in verifier.headers if name.lower() == b"dkim-signature")
    return [_verify_signature(verifier, idx, resolver) for idx in range(min(count, MAX_DKIM_SIGNATURES))]


def _verify_signature(verifier: Any, idx: int, resolver: Resolver) -> DKIMResult:
    import dkim
    from dkim.canonicalization import CanonicalizationPolicy
    from dkim.util import parse_tag_value

    raw = [v for n, v in verifier.headers if n.lower() == b"dkim-signature"][idx]
    try:
        tags = parse_tag_value(raw)
    except Exception as e:
        return DKIMResult("permerror", reason=f"malformed signature: {e}")

    def tag(name: bytes) -> str:
        return re.sub(r"\s+", "", tags.get(name, b"").decode("utf-8", "replace"))

    length_text = tag(b"l")
    sig = DKIMResult(
        "permerror",
        domain=tag(b"d").lower(),
        selector=tag(b"s"),
        b=tag(b"b")[:8],
        algorithm=tag(b"a").lower(),
        identity=tag(b"i"),
        length=int(length_text) if length_text.isdigit() else None,
    )
    if not sig.domain or not sig.selector:
        return _with(sig, "permerror", "empty d= or s=")
    lookup = _KeyLookup(resolver, raise_missing=True)
    try:
        valid = verifier.verify(idx=idx, dnsfunc=lookup)
    except _KeyTemporary as e:
        return _with(sig, "temperror", str(e))
    except _KeyMissing as e:
        return _with(sig, "permerror", str(e))
    except dkim.ValidationError as e:
        text = str(e)
        return _with(sig, "fail" if "body hash mismatch" in text else "permerror", text)
    except dkim.DKIMException as e:
        return _with(sig, "permerror", str(e))
    except Exception as e:  # dkimpy on input it did not expect
        return _with(sig, "permerror", f"{type(e).__name__}: {e}")
    if not valid:
        return _with(sig, "fail", lookup.problem or "signature did not verify")
    if sig.algorithm == "rsa-sha1":
        return _with(sig, "policy", "rsa-sha1 is not accepted (RFC 8301)")
    if verifier.ktag == b"rsa" and verifier.keysize < 1024:
        return _with(sig, "policy", f"RSA key of {verifier.keysize} bits, under 1024 (RFC 8301)")
    if sig.length is not None:
        try:
            c_value = tags.get(b"c", b"simple/simple")
            body = CanonicalizationPolicy.from_c_value(c_value).canonicalize_body(verifier.body)
        except Exception:
            body = verifier.body
        if len(body) > sig.length:
            return _with(sig, "policy", f"l={sig.length} leaves {len(body) - sig.length} body bytes unsigned")
    return _with(sig, "pass", "")


def _with(sig: DKIMResult, result: str, reason: str) -> DKIMResult:
    sig.result, sig.reason = result, reason
    return sig


def check_arc(message: bytes, resolver: Resolver) -> ARCResult:
    """ARC chain validation (RFC 8617 5.2): pass, fail or none."""
    import dkim

    lookup = _KeyLookup(resolver, raise_missing=False)
    try:
        cv, sets, reason = dkim.arc_verify(message, logger=_QuietLogger(), dnsfunc=lookup)
    except Exception as e:  # dkimpy raises on some malformed sets (empty d=, bad s=)
        return ARCResult("fail", reason=f"{type(e).__name__}: {e}")
    instances = max((int(s.get("instance", 0)) for s in sets), default=0)
    if cv == dkim.CV_Pass:
        return ARCResult("pass", instances, "")
    if cv == dkim.CV_None:
        return ARCResult("none", 0, "")
    # CV_Fail, or None for a chain an earlier sealer already declared failed
    why = str(reason or "")
    if lookup.problem and lookup.problem not in why:
        why = f"{why} ({lookup.problem})" if why else lookup.problem
    return ARCResult("fail", instances, why)
