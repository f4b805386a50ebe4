"""DKIM (RFC 6376, RFC 8463) and ARC (RFC 8617) through dkimpy, on the header block only.

dkimpy wants the whole message in memory and canonicalizes copies of it.  Here it gets
the header block alone: `Signed.read()` reads it from the spooled file, finds the body
hashes the signatures need and computes them in one streaming pass (bodyhash.py), and
subclasses of `dkim.DKIM`/`dkim.ARC` take `bh=` from those precomputed hashes
(`verify_sig_process`, the step after the key lookup) while dkimpy checks everything
else, key and header signature included, as it always does.  Memory stays bounded by the
header block (HEADER_CAP) whatever the size of the message, ARC-sealed mail included:
ARC's message signatures hash the body like DKIM's, and the seals do not cover it.

DKIM: at most MAX_DKIM_SIGNATURES signatures are verified (RFC 6376 6.1 allows a limit),
those whose d= aligns with the From domain first, then in header order; they are reported
in header order, and a last `policy` result says how many more were not verified.  Each
is reported with its d=, s=, the start of b= and its result.  RFC 8301: rsa-sha1 and RSA
keys under 1024 bits verify as `policy`, never `pass`.  A signature whose l= leaves part
of the body unsigned is `policy` too (appended content is not authenticated): the
canonicalized length comes from the streaming pass.

ARC: the chain validation result, pass, fail or none.  More than MAX_ARC_SETS sets is
`fail` (RFC 8617 4.2.1) without a lookup.  Only the newest ARC-Message-Signature is
verified, as RFC 8617 5.2 asks (dkimpy would check every older one too, looking up keys
for nothing, and its verdict never depends on them).  Any error of the library is `fail`.

Keys come from our resolver (the message's cache and budget): a failed lookup is
`temperror` for DKIM and `fail` for ARC.  This module is imported only for a message with
a DKIM-Signature or an ARC field; it reports results and decides nothing.
"""

from __future__ import annotations

import base64
import re

from .bodyhash import HEADER_CAP, chunks, hash_body
from .libs import import_dkim
from .orgdomain import aligned
from .results import ARCResult, DKIMResult

dkim = import_dkim()
from dkim.canonicalization import CanonicalizationPolicy  # noqa: E402  (dkimpy, imported just above)
from dkim.crypto import HASH_ALGORITHMS  # noqa: E402
from dkim.util import parse_tag_value  # noqa: E402

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO, Any

    from .bodyhash import BodyKey
    from .resolver import Resolver

#: At most this many DKIM signatures are verified per message.
MAX_DKIM_SIGNATURES = 5
#: RFC 8617 4.2.1: the most ARC sets a chain may have.
MAX_ARC_SETS = 50


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
            raise dkim.DnsTimeoutError(self.problem) from None
        if not records:
            self.problem = f"no key at {text.rstrip('.')}"
            if self.raise_missing:
                raise _KeyMissing(self.problem)
            return None
        if self.raise_missing:
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


def _body_key(sig: dict[bytes, bytes], tlsrpt: bool = False) -> BodyKey | None:
    """The body hash dkimpy would compute for SIG; None when it would stop before (bad c=,
    a= or l=: dkimpy reports those itself).  For a TLS report dkimpy ignores l=."""
    try:
        policy = CanonicalizationPolicy.from_c_value(sig.get(b"c", b"simple/simple"))
        length = None if sig.get(b"l") is None or tlsrpt else int(sig[b"l"])
        return (policy.body_algorithm.name, HASH_ALGORITHMS[sig[b"a"]], length)
    except Exception:
        return None


class _StreamedBody:
    """For dkim.DomainSigner subclasses: bh= is compared with `body_hashes`, computed from
    the file, and dkimpy checks the rest with a copy of the tags without bh= (it checks
    the body only `if b'bh' in sig` and hashes the raw header field, not the tags)."""

    body_hashes: dict[BodyKey, bytes] = {}

    def verify_sig_process(
        self, sig: dict[bytes, bytes], include_headers: list[bytes], sig_header: Any, dnsfunc: Any
    ) -> Any:
        if b"bh" in sig:
            key = _body_key(sig, bool(getattr(self, "tlsrpt", False)))
            if key is not None:
                got = self.body_hashes.get(key)
                if got is None:  # not precomputed: a bug of ours, never a quiet "fail"
                    raise LookupError(f"body hash {key[0]!r} l={key[2]} was not computed")
                expected = base64.b64decode(re.sub(rb"\s+", b"", sig[b"bh"]))  # as dkimpy does
                if got != expected:
                    raise dkim.ValidationError(
                        f"body hash mismatch (got {base64.b64encode(got)!r}, expected {sig[b'bh']!r})"
                    )
                sig = {k: v for k, v in sig.items() if k != b"bh"}
        return super().verify_sig_process(sig, include_headers, sig_header, dnsfunc)  # type: ignore[misc]


class _DKIM(_StreamedBody, dkim.DKIM):  # type: ignore[misc,name-defined]
    """dkim.DKIM on the header block, body hashes from the stream."""


class _ARC(_StreamedBody, dkim.ARC):  # type: ignore[misc,name-defined]
    """dkim.ARC on the header block, body hashes from the stream; older AMS not checked."""

    newest = 0

    def verify_sig(self, sig: dict[bytes, bytes], include_headers: Any, sig_header: Any, dnsfunc: Any) -> Any:
        if b"bh" in sig and sig.get(b"i", b"").strip() != str(self.newest).encode():
            return False  # an older ARC-Message-Signature: RFC 8617 5.2 does not ask for it
        return super().verify_sig(sig, include_headers, sig_header, dnsfunc)


class Signed:
    """One message's header block, its DKIM/ARC verifiers and their body hashes.

    `read(head, complete, body, ...)` takes the header block as read (bodyhash's
    `read_header_block`) and the file positioned at the body, and streams the body once
    for the hashes of the DKIM signatures it will verify (`dkim_order`) and of the newest
    AMS.  A header block that dkimpy cannot parse, or that was longer than HEADER_CAP,
    leaves the verifiers None and the reason in `problem`.
    """

    def __init__(self, head: bytes) -> None:
        self.head = head
        self.problem = ""
        self.dkim: Any = None
        self.arc: Any = None
        self.signatures: list[bytes] = []  # the DKIM-Signature values, in header order
        self.dkim_order: list[int] = []  # the indices to verify
        self.lengths: dict[bytes, int] = {}  # canonicalized body length by c= body name

    @classmethod
    def read(
        cls,
        head: bytes,
        complete: bool,
        body: IO[bytes],
        *,
        with_dkim: bool,
        with_arc: bool,
        from_domain: str,
    ) -> Signed:
        signed = cls(head)
        if not complete:
            signed.problem = f"header block longer than {HEADER_CAP} octets"
            return signed
        keys: list[BodyKey | None] = []
        try:
            if with_dkim:
                tlsrpt = is_tls_report(head)  # RFC 8460 3: its keys may say s=tlsrpt
                signed.dkim = _DKIM(head, logger=_QuietLogger(), minkey=0, tlsrpt=tlsrpt)
                signed.signatures = [v for n, v in signed.dkim.headers if n.lower() == b"dkim-signature"]
                signed.dkim_order = _chosen(signed.signatures, from_domain)
                keys += [_body_key(_tags(signed.signatures[idx]), tlsrpt) for idx in signed.dkim_order]
            if with_arc:
                signed.arc = _ARC(head, logger=_QuietLogger(), minkey=1024, timeout=5)
                signed.arc.newest, arc_fields = signed.arc.sorted_arc_headers()
                for i, (name, value) in arc_fields:
                    if i == signed.arc.newest and name.lower() == b"arc-message-signature":
                        tags = _tags(value)
                        tags.setdefault(b"c", b"relaxed/relaxed")  # as ARC.verify_instance
                        keys.append(_body_key(tags))
        except Exception as e:  # the header block does not parse: we cannot even find signatures
            signed.dkim = signed.arc = None
            signed.problem = f"message does not parse: {e}"
            return signed
        hashes, signed.lengths = hash_body(chunks(body), [key for key in keys if key is not None])
        for verifier in (signed.dkim, signed.arc):
            if verifier is not None:
                verifier.body_hashes = hashes
        return signed


_TLS_REPORT = re.compile(
    rb"^content-type:[ \t]*multipart/report[^\r\n]*(?:\r?\n[ \t][^\r\n]*)*?report-type=\"?tlsrpt\b",
    re.IGNORECASE | re.MULTILINE,
)


def is_tls_report(head: bytes) -> bool:
    """HEAD is an RFC 8460 section 5.3 report: multipart/report; report-type="tlsrpt" (and a
    TLS-Report-Domain field).  Only then may a key with the service type s=tlsrpt verify
    it; for any other mail such a key is a failure (dkimpy's rule, RFC 6376 3.6.1)."""
    lower = head.lower()
    return b"\ntls-report-domain:" in b"\n" + lower and _TLS_REPORT.search(head) is not None


def _tags(value: bytes) -> dict[bytes, bytes]:
    try:
        return dict(parse_tag_value(value))
    except Exception:
        return {}


def _chosen(signatures: list[bytes], from_domain: str) -> list[int]:
    """The indices of the signatures to verify: those aligned with FROM_DOMAIN first."""

    def domain(idx: int) -> str:
        return re.sub(r"\s+", "", _tags(signatures[idx]).get(b"d", b"").decode("utf-8", "replace"))

    order = sorted(range(len(signatures)), key=lambda i: (not aligned(domain(i), from_domain, False), i))
    return sorted(order[:MAX_DKIM_SIGNATURES])


def key_name(signed: Signed, idx: int) -> str:
    """Where the key of signature IDX is (`s._domainkey.d`), "" when a tag is missing."""
    tags = _tags(signed.signatures[idx])
    selector, domain = (
        re.sub(rb"\s+", b"", tags.get(t, b"")).decode("utf-8", "replace") for t in (b"s", b"d")
    )
    return f"{selector}._domainkey.{domain}" if selector and domain else ""


def check_dkim(signed: Signed, resolver: Resolver) -> list[DKIMResult]:
    """Verify the chosen DKIM-Signatures of SIGNED; [] when it has none."""
    if signed.dkim is None:
        return [DKIMResult("permerror", reason=signed.problem)] if signed.problem else []
    results = [_verify_signature(signed, idx, resolver) for idx in signed.dkim_order]
    left = len(signed.signatures) - len(signed.dkim_order)
    if left > 0:
        why = f"{left} more signatures not verified (at most {MAX_DKIM_SIGNATURES} a message)"
        results.append(DKIMResult("policy", reason=why))
    return results


def _verify_signature(signed: Signed, idx: int, resolver: Resolver) -> DKIMResult:
    verifier = signed.dkim
    try:
        tags = parse_tag_value(signed.signatures[idx])
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
        key = _body_key(tags)
        body = signed.lengths.get(key[0], 0) if key else 0
        if body > sig.length:
            return _with(sig, "policy", f"l={sig.length} leaves {body - sig.length} body bytes unsigned")
    return _with(sig, "pass", "")


def _with(sig: DKIMResult, result: str, reason: str) -> DKIMResult:
    sig.result, sig.reason = result, reason
    return sig


def check_arc(signed: Signed, resolver: Resolver) -> ARCResult:
    """ARC chain validation (RFC 8617 5.2): pass, fail or none."""
    if signed.arc is None:
        return ARCResult("fail", reason=signed.problem) if signed.problem else ARCResult("none", 0, "")
    if signed.arc.newest > MAX_ARC_SETS:
        return ARCResult("fail", signed.arc.newest, f"more than {MAX_ARC_SETS} ARC sets (RFC 8617 4.2.1)")
    lookup = _KeyLookup(resolver, raise_missing=False)
    try:
        cv, sets, reason = signed.arc.verify(dnsfunc=lookup)
    except dkim.DKIMException as e:  # as dkim.arc_verify
        cv, sets, reason = dkim.CV_Fail, [], str(e)
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
