"""Sender authentication of an accepted message: SPF, DKIM, DMARC and ARC.

`authenticate()` runs the checks that `[checks]` turns on and returns an `AuthResults`:
typed results that report what was found and never decide anything.  Turning a result
into a refusal (DMARC p=reject, auto-replies only to authenticated senders) is the
router's business, helped by `AuthResults.dmarc_rejects()` and `.aligned_pass`.
`AuthResults.header_value()` is the RFC 8601 Authentication-Results value handed to
handlers, `.environment()` the SPF_RESULT/DKIM_RESULT/DMARC_RESULT/ARC_RESULT variables,
and `.to_dict()`/`.from_dict()` keep the results in the spool for retries.
`remove_our_authres()` drops Authentication-Results fields that arrived bearing our
authserv-id (RFC 8601 section 5) before anything reads the message.

The checks:

* SPF (RFC 7208, pyspf): the MAIL FROM identity, or for the null sender `<>` the HELO
  identity (postmaster@helo, reported as smtp.helo).  Never the header From.  pyspf's
  limits apply (10 DNS mechanisms, 2 void lookups) and the whole check stops after 20 s.
* DKIM (RFC 6376, RFC 8463, dkimpy): every DKIM-Signature (up to MAX_DKIM_SIGNATURES)
  is verified and reported with its d=, s=, the start of b= and its result.  RFC 8301:
  rsa-sha1 and RSA keys under 1024 bits verify as `policy`, never `pass`.  A signature
  whose l= leaves part of the body unsigned is `policy` too (appended content is not
  authenticated); one whose l= covers the whole body passes.
* ARC (RFC 8617, dkimpy): the chain validation result, pass, fail or none.  Any error of
  the library (malformed d=/s=, ...) is `fail`.
* DMARC (RFC 7489, written here, small): the policy record at the From domain, else at
  its organisational domain (publicsuffixlist); relaxed or strict alignment of the
  passing SPF identity and DKIM d= (adkim/aspf), p/sp, pct.  A message with no From
  field, several From fields, or From addresses in more than one domain is `permerror`
  (RFC 7489 6.6.1 leaves it to the receiver; we evaluate nothing we cannot pin to one
  domain).  A DNS failure of the policy lookup, or of an SPF/DKIM check that could have
  given an aligned pass, is `temperror`.

Every DNS lookup of every check goes through one `inbound.resolver.Resolver` built from
`[checks] dns_servers` and `dns_timeout` (or one passed in).  No exception leaves
`authenticate()`: library and DNS errors become temperror/permerror/fail as each RFC says.

Heavy libraries (dkim, spf, dnspython, publicsuffixlist) are imported inside the
functions that use them, so reading stored results (`from_dict`) stays cheap.  This module
does not write the Authentication-Results field into the message, sign anything, or
refuse mail.
"""

from __future__ import annotations

import contextvars
import email.utils
import ipaddress
import random
import re
from dataclasses import asdict, dataclass, field, fields
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import CheckSettings
    from .resolver import Resolver

__all__ = [
    "ARCResult",
    "AuthResults",
    "DKIMResult",
    "DMARCResult",
    "SPFResult",
    "authenticate",
    "remove_our_authres",
]

#: The result words of RFC 8601 section 2.7 that our results use.
RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "policy")
#: At most this many DKIM signatures are verified per message (RFC 6376 6.1 allows a limit).
MAX_DKIM_SIGNATURES = 20
#: Overall SPF time limit in seconds (RFC 7208 4.6.4 suggests at least 20).
SPF_TIME_LIMIT = 20.0


# ---------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------
@dataclass
class SPFResult:
    """SPF of one identity: `identity` is "mailfrom" or "helo", `sender` what was checked
    (the MAIL FROM address, or the HELO name), `domain` the domain whose policy applied."""

    result: str
    identity: str = "mailfrom"
    sender: str = ""
    domain: str = ""
    reason: str = ""


@dataclass
class DKIMResult:
    """One DKIM-Signature: its tags of note (`b` is the start of b=) and its result."""

    result: str
    domain: str = ""
    selector: str = ""
    b: str = ""
    algorithm: str = ""
    identity: str = ""
    length: int | None = None
    reason: str = ""


@dataclass
class DMARCResult:
    """DMARC for the From domain.  `policy` is what the record asks for this message (p, or
    sp at a subdomain); `disposition` what applies after pct (only set when it fails)."""

    result: str
    from_domain: str = ""
    policy: str = ""
    disposition: str = "none"
    record_domain: str = ""
    pct: int = 100
    spf_aligned: bool = False
    dkim_aligned: bool = False
    reason: str = ""


@dataclass
class ARCResult:
    """ARC chain validation: pass, fail or none; `instances` is the newest i=."""

    result: str
    instances: int = 0
    reason: str = ""


@dataclass
class AuthResults:
    """What the checks found.  A check that was off is None (DKIM: `dkim_checked` False)."""

    spf: SPFResult | None = None
    dkim: list[DKIMResult] = field(default_factory=list)
    dmarc: DMARCResult | None = None
    arc: ARCResult | None = None
    dkim_checked: bool = False
    from_domain: str = ""
    authserv_id: str = ""

    # -- what the router and the handlers read -----------------------------------
    @property
    def dkim_result(self) -> str:
        """pass if any signature passed, else the first signature's result, else none."""
        if any(sig.result == "pass" for sig in self.dkim):
            return "pass"
        return self.dkim[0].result if self.dkim else "none"

    def environment(self) -> dict[str, str]:
        """SPF_RESULT, DKIM_RESULT, DMARC_RESULT, ARC_RESULT ("none" for a check that was off)."""
        return {
            "SPF_RESULT": self.spf.result if self.spf else "none",
            "DKIM_RESULT": self.dkim_result,
            "DMARC_RESULT": self.dmarc.result if self.dmarc else "none",
            "ARC_RESULT": self.arc.result if self.arc else "none",
        }

    def dmarc_rejects(self) -> bool:
        """DMARC failed and the policy that applies to this message is reject."""
        return self.dmarc is not None and self.dmarc.result == "fail" and self.dmarc.disposition == "reject"

    def dkim_aligned_pass(self, from_domain: str | None = None) -> bool:
        """Some DKIM signature passed with d= in relaxed alignment with FROM_DOMAIN
        (default: the message's From domain)."""
        domain = self.from_domain if from_domain is None else from_domain.lower().rstrip(".")
        if not domain:
            return False
        return any(sig.result == "pass" and _aligned(sig.domain, domain, strict=False) for sig in self.dkim)

    @property
    def aligned_pass(self) -> bool:
        """SPF passed, or a DKIM signature aligned with the From domain passed: the sender
        is who it says, so an automatic reply is no backscatter."""
        return bool(self.spf and self.spf.result == "pass") or self.dkim_aligned_pass()

    @property
    def temporary(self) -> bool:
        """Some check ended in temperror: running the checks again later may change the result."""
        results = [r.result for r in (self.spf, self.dmarc, self.arc) if r] + [s.result for s in self.dkim]
        return "temperror" in results

    # -- Authentication-Results (RFC 8601) -----------------------------------------
    def header_value(self, authserv_id: str | None = None) -> str:
        """The Authentication-Results field value, one line."""
        parts = [_pvalue(authserv_id or self.authserv_id or "localhost")]
        if self.spf:
            entry = f"spf={self.spf.result}"
            entry += _reason(self.spf.result, self.spf.reason)
            if self.spf.sender:
                prop = "smtp.helo" if self.spf.identity == "helo" else "smtp.mailfrom"
                entry += f" {prop}={_identity_pvalue(self.spf.sender)}"
            parts.append(entry)
        if self.dkim_checked and not self.dkim:
            parts.append("dkim=none")
        for sig in self.dkim:
            entry = f"dkim={sig.result}" + _reason(sig.result, sig.reason)
            for name, value in (("header.d", sig.domain), ("header.s", sig.selector), ("header.b", sig.b)):
                if value:
                    entry += f" {name}={_pvalue(value)}"
            parts.append(entry)
        if self.dmarc:
            entry = f"dmarc={self.dmarc.result}"
            if self.dmarc.result in ("temperror", "permerror"):
                entry += _reason(self.dmarc.result, self.dmarc.reason)
            if self.dmarc.policy:
                entry += f" (p={self.dmarc.policy} dis={self.dmarc.disposition})"
            if self.dmarc.from_domain:
                entry += f" header.from={_identity_pvalue(self.dmarc.from_domain)}"
            parts.append(entry)
        if self.arc:
            parts.append(f"arc={self.arc.result}" + _reason(self.arc.result, self.arc.reason))
        if len(parts) == 1:
            parts.append("none")
        return "; ".join(parts)

    # -- storage --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe plain data; `from_dict` reads it back."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuthResults:
        def build(kind: Any, value: Any) -> Any:
            if not isinstance(value, dict):
                return None
            names = {f.name for f in fields(kind)}
            return kind(**{k: v for k, v in value.items() if k in names})

        return cls(
            spf=build(SPFResult, data.get("spf")),
            dkim=[build(DKIMResult, sig) for sig in data.get("dkim") or [] if isinstance(sig, dict)],
            dmarc=build(DMARCResult, data.get("dmarc")),
            arc=build(ARCResult, data.get("arc")),
            dkim_checked=bool(data.get("dkim_checked", bool(data.get("dkim")))),
            from_domain=str(data.get("from_domain") or ""),
            authserv_id=str(data.get("authserv_id") or ""),
        )


# ---------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------
def authenticate(
    message: bytes,
    *,
    client_ip: str,
    helo: str,
    mail_from: str,
    settings: CheckSettings,
    authserv_id: str,
    resolver: Resolver | None = None,
) -> AuthResults:
    """Run the checks `settings` turns on against MESSAGE (the raw bytes as received).

    CLIENT_IP may be "" (unknown); MAIL_FROM "" is the null sender.  Never raises for
    anything the message, the client or DNS can do.
    """
    fields = header_fields(message)
    from_domain, from_problem = _from_domain(fields)
    results = AuthResults(from_domain=from_domain, authserv_id=authserv_id)
    if not (settings.spf or settings.dkim or settings.dmarc or settings.arc):
        return results
    if resolver is None:
        from .resolver import Resolver

        resolver = Resolver.from_settings(settings)
    if settings.spf:
        try:
            results.spf = check_spf(client_ip, helo, mail_from, resolver)
        except Exception as e:  # a bug of ours or pyspf's must not cost the message
            identity = "mailfrom" if mail_from else "helo"
            results.spf = SPFResult(
                "temperror", identity, mail_from or helo, reason=f"internal error: {type(e).__name__}"
            )
    if settings.dkim:
        results.dkim_checked = True
        try:
            results.dkim = check_dkim(message, resolver)
        except Exception as e:
            results.dkim = [DKIMResult("permerror", reason=f"internal error: {type(e).__name__}")]
    if settings.arc:
        try:
            results.arc = check_arc(message, resolver)
        except Exception as e:
            results.arc = ARCResult("fail", reason=f"internal error: {type(e).__name__}")
    if settings.dmarc:
        try:
            results.dmarc = check_dmarc(
                from_domain, from_problem, results.spf, results.dkim if settings.dkim else [], resolver
            )
        except Exception as e:
            results.dmarc = DMARCResult(
                "temperror", from_domain, reason=f"internal error: {type(e).__name__}"
            )
    return results


# ---------------------------------------------------------------------------------
# SPF
# ---------------------------------------------------------------------------------
_spf_resolver: contextvars.ContextVar[Resolver | None] = contextvars.ContextVar("spf_resolver", default=None)
_SPF_RESULTS = {"unknown": "permerror", "error": "temperror", "ambiguous": "neutral"}


def check_spf(client_ip: str, helo: str, mail_from: str, resolver: Resolver) -> SPFResult:
    """SPF (RFC 7208) of MAIL FROM, or of the HELO name for the null sender."""
    helo = helo.strip()
    if mail_from:
        identity, sender, domain = "mailfrom", mail_from, mail_from.rpartition("@")[2]
    else:
        identity, sender, domain = "helo", helo, helo
    domain = domain.lower().rstrip(".")
    if not sender:
        return SPFResult("none", identity, sender, domain, "no MAIL FROM domain and no HELO name")
    if identity == "helo" and (helo.startswith("[") or _is_ip(helo)):
        return SPFResult("none", identity, sender, domain, "HELO is an address literal")
    ip = _client_ip(client_ip)
    if ip is None:
        return SPFResult("none", identity, sender, domain, "client address unknown")
    spf = _spf_module()
    token = _spf_resolver.set(resolver)
    try:
        query = _SPFQuery(
            i=ip, s=_unquoted(mail_from), h=helo, timeout=resolver.timeout, querytime=SPF_TIME_LIMIT
        )
        result, _code, explanation = query.check()
    except spf.TempError as e:
        result, explanation = "temperror", str(e)
    except (spf.PermError, ValueError, UnicodeError) as e:
        result, explanation = "permerror", str(e)
    finally:
        _spf_resolver.reset(token)
    result = _SPF_RESULTS.get(result, result)
    if result not in RESULTS:
        result, explanation = "permerror", f"unexpected SPF result {result!r}"
    return SPFResult(result, identity, sender, domain, "" if result == "pass" else str(explanation or ""))


def _unquoted(address: str) -> str:
    """ADDRESS with a quoted-string local part as its plain value ("a b"@x -> a b@x), which is
    what the SPF `l` macro expands to."""
    local, at, domain = address.rpartition("@")
    if at and len(local) >= 2 and local[0] == local[-1] == '"':
        local = re.sub(r"\\(.)", r"\1", local[1:-1])
    return f"{local}{at}{domain}" if at else address


def _client_ip(text: str) -> str | None:
    text = text.strip().strip("[]")
    if text.lower().startswith("ipv6:"):
        text = text[5:]
    try:
        address = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        address = address.ipv4_mapped
    return str(address)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
        return True
    except ValueError:
        return False


def _spf_lookup(name: str, qtype: str, strict: Any = True, timeout: Any = None) -> list[Any]:
    """pyspf's DNSLookup over our resolver: the raw answer section, CNAMEs included.

    pyspf follows CNAME chains itself (with its own loop detection, so a loop is a void
    lookup, RFC 1034 3.6.2), which is why the records go to it as they came and not
    resolved; a time-out or server failure is pyspf's TempError.
    """
    import spf

    from .resolver import DNSNameError, DNSTemporaryError

    resolver = _spf_resolver.get()
    if resolver is None:  # someone else in this process using pyspf: leave it as it was
        return list(_spf_original_lookup(name, qtype, strict, timeout))
    try:
        response = resolver.query(name, qtype)
    except DNSNameError:
        return []
    except DNSTemporaryError as e:
        raise spf.TempError(f"DNS {e}") from None
    return [((r.name, r.rdtype), r.value) for r in response.records]


_spf_original_lookup: Any = None
_SPFQuery: Any = None


def _spf_module() -> Any:
    """pyspf, with its DNS lookups going to `_spf_lookup` (done once)."""
    global _spf_original_lookup, _SPFQuery
    import spf

    if _SPFQuery is None:
        _spf_original_lookup = spf.DNSLookup
        spf.DNSLookup = _spf_lookup

        class SPFQuery(spf.query):  # type: ignore[misc,name-defined]
            """pyspf's query with RFC 7208 5.5 for PTR names: a DNS error while looking up
            the addresses of one name skips that name instead of ending the check."""

            def validated_ptrs(self) -> list[str]:
                try:
                    names = self.dns_ptr(self.i)
                except spf.TempError:
                    return []  # 5.5: a DNS error on the PTR lookup: the mechanism does not match
                validated = []
                for name in names[: spf.MAX_PTR]:
                    try:
                        addresses = self.dns_a(name, self.A)
                    except spf.TempError:
                        continue
                    if self.cidrmatch(addresses, self.cidrmax):
                        validated.append(name)
                return validated

        _SPFQuery = SPFQuery
    return spf


# ---------------------------------------------------------------------------------
# DKIM
# ---------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------
# ARC
# ---------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------
# DMARC
# ---------------------------------------------------------------------------------
_DMARC_RECORD = re.compile(r"v\s*=\s*DMARC1\s*(;|$)")
_POLICIES = ("none", "quarantine", "reject")
_DOWNGRADE = {"reject": "quarantine", "quarantine": "none", "none": "none"}


def check_dmarc(
    from_domain: str,
    from_problem: str,
    spf: SPFResult | None,
    dkim_results: list[DKIMResult],
    resolver: Resolver,
    *,
    sample: Any = random.random,
) -> DMARCResult:
    """DMARC (RFC 7489) for FROM_DOMAIN given the SPF and DKIM results."""
    from .resolver import DNSError

    if not from_domain:
        return DMARCResult("permerror", reason=from_problem or "no From domain")
    try:
        record, record_domain = _dmarc_policy(from_domain, resolver)
    except DNSError as e:
        return DMARCResult("temperror", from_domain, reason=f"policy lookup failed: {e}")
    if record is None:
        return DMARCResult("none", from_domain, reason=record_domain)
    tags = record
    at_org = record_domain != from_domain
    policy = tags["sp"] if at_org and tags.get("sp") else tags["p"]
    pct = int(tags.get("pct", "100"))
    strict_spf, strict_dkim = tags.get("aspf") == "s", tags.get("adkim") == "s"
    spf_domain = spf.domain if spf else ""
    spf_aligned = bool(spf and spf.result == "pass" and _aligned(spf_domain, from_domain, strict_spf))
    dkim_aligned = any(
        s.result == "pass" and _aligned(s.domain, from_domain, strict_dkim) for s in dkim_results
    )
    result = DMARCResult(
        "pass",
        from_domain,
        policy=policy,
        record_domain=record_domain,
        pct=pct,
        spf_aligned=spf_aligned,
        dkim_aligned=dkim_aligned,
    )
    if spf_aligned or dkim_aligned:
        return result
    pending = (spf and spf.result == "temperror" and _aligned(spf_domain, from_domain, strict_spf)) or any(
        s.result == "temperror" and _aligned(s.domain, from_domain, strict_dkim) for s in dkim_results
    )
    if pending:
        result.result, result.reason = "temperror", "an aligned SPF or DKIM check failed temporarily"
        return result
    result.result = "fail"
    result.reason = "no aligned SPF or DKIM pass"
    result.disposition = policy if pct >= 100 or sample() * 100 < pct else _DOWNGRADE[policy]
    return result


def _dmarc_policy(from_domain: str, resolver: Resolver) -> tuple[dict[str, str] | None, str]:
    """(tags, domain the record was found at), or (None, why there is none)."""
    org = organizational_domain(from_domain)
    for domain in dict.fromkeys((from_domain, org)):
        records = [
            text
            for raw in resolver.txt("_dmarc." + domain)
            if _DMARC_RECORD.match(text := raw.decode("utf-8", "replace").strip())
        ]
        if len(records) > 1:
            return None, f"several DMARC records at _dmarc.{domain}"
        if records:
            tags = _dmarc_tags(records[0])
            if tags is None:
                return None, f"DMARC record at _dmarc.{domain} has no valid policy"
            return tags, domain
    return None, "no DMARC record"


def _dmarc_tags(text: str) -> dict[str, str] | None:
    tags: dict[str, str] = {}
    for part in text.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags.setdefault(key.strip().lower(), value.strip())
    p, sp = tags.get("p", "").lower(), tags.get("sp", "").lower()
    if p not in _POLICIES or (sp and sp not in _POLICIES):
        if "mailto:" not in tags.get("rua", "").lower():
            return None  # RFC 7489 6.6.3: no DMARC processing
        p, sp = "none", ""  # ... unless there is a report address: as if p=none
    tags["p"], tags["sp"] = p, sp
    pct = tags.get("pct", "100")
    tags["pct"] = pct if pct.isdigit() and 0 <= int(pct) <= 100 else "100"
    for key in ("adkim", "aspf"):
        tags[key] = "s" if tags.get(key, "r").lower() == "s" else "r"
    return tags


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


def _aligned(domain: str, from_domain: str, strict: bool) -> bool:
    domain, from_domain = domain.lower().rstrip("."), from_domain.lower().rstrip(".")
    if not domain or not from_domain:
        return False
    if strict:
        return domain == from_domain
    return organizational_domain(domain) == organizational_domain(from_domain)


# ---------------------------------------------------------------------------------
# Header fields
# ---------------------------------------------------------------------------------
def _header_block(message: bytes) -> tuple[list[bytes], int]:
    """The header lines (each with its line ending) and the offset where the body starts."""
    lines: list[bytes] = []
    pos = 0
    while pos < len(message):
        end = message.find(b"\n", pos)
        end = len(message) if end < 0 else end + 1
        line = message[pos:end]
        if line in (b"\r\n", b"\n"):
            return lines, pos
        lines.append(line)
        pos = end
    return lines, pos


def _fields(lines: list[bytes]) -> list[list[bytes]]:
    """Header lines grouped into fields (a field's first line and its continuations)."""
    fields: list[list[bytes]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1].append(line)
        else:
            fields.append([line])
    return fields


def header_fields(message: bytes) -> list[tuple[str, str]]:
    """(lower-case name, unfolded value) of each header field of MESSAGE, in order."""
    out = []
    for group in _fields(_header_block(message)[0]):
        text = b"".join(group).decode("utf-8", "replace")
        name, sep, value = text.partition(":")
        if sep:
            out.append((name.strip().lower(), re.sub(r"\r?\n", "", value).strip()))
    return out


def _from_domain(fields: list[tuple[str, str]]) -> tuple[str, str]:
    """(the From domain, "") or ("", why there is no single one)."""
    values = [value for name, value in fields if name == "from"]
    if not values:
        return "", "no From header field"
    if len(values) > 1:
        return "", "several From header fields"
    addresses = [addr for _, addr in email.utils.getaddresses(values) if addr]
    domains = {addr.rpartition("@")[2].strip().lower().rstrip(".") for addr in addresses if "@" in addr}
    if not domains or "" in domains:
        return "", "From address without a domain"
    if len(domains) > 1:
        return "", "From addresses in several domains"
    domain = domains.pop()
    if not re.fullmatch(r"[^\s()<>\[\]:;@\\,\"]+", domain):
        return "", "From domain is not a domain name"
    return domain, ""


_AUTHRES_NAME = re.compile(rb"authentication-results[ \t]*:", re.IGNORECASE)


def remove_our_authres(message: bytes, authserv_id: str) -> bytes:
    """MESSAGE without the Authentication-Results fields bearing AUTHSERV_ID (compared
    without regard to case) in its header block; every other byte stays as it was."""
    lines, body_start = _header_block(message)
    ours = authserv_id.strip().lower()
    kept: list[bytes] = []
    removed = False
    for group in _fields(lines):
        match = _AUTHRES_NAME.match(group[0])
        if match:
            value = b"".join(group)[match.end() :].decode("utf-8", "replace")
            if _authserv_id(value).lower() == ours:
                removed = True
                continue
        kept.extend(group)
    if not removed:
        return message
    return b"".join(kept) + message[body_start:]


def _authserv_id(value: str) -> str:
    """The authserv-id at the start of an Authentication-Results value (CFWS skipped)."""
    text = re.sub(r"\s+", " ", value)
    pos = 0
    while pos < len(text):  # skip white space and (nested) comments
        if text[pos] == " ":
            pos += 1
        elif text[pos] == "(":
            depth = 0
            while pos < len(text):
                if text[pos] == "\\":
                    pos += 1
                elif text[pos] == "(":
                    depth += 1
                elif text[pos] == ")":
                    depth -= 1
                    if depth == 0:
                        pos += 1
                        break
                pos += 1
        else:
            break
    text = text[pos:]
    if text.startswith('"'):
        match = re.match(r'"((?:[^"\\]|\\.)*)"', text)
        return re.sub(r"\\(.)", r"\1", match.group(1)) if match else ""
    return re.split(r"[\s;(]", text, maxsplit=1)[0]


_TOKEN = re.compile(r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+")
_ATOM = r"[!#$%&'*+\-/=?^_`{|}~0-9A-Za-z]+"
_LOCAL = rf'(?:{_ATOM}(?:\.{_ATOM})*|"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*")'
_ADDRESS = re.compile(rf"(?:{_LOCAL})?@[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?")


def _pvalue(value: str) -> str:
    """VALUE as an RFC 8601 pvalue: bare when a token or a plain address, else quoted.
    Kept to ASCII (what `authres` parses): anything else becomes "?"."""
    value = value.encode("ascii", "replace").decode("ascii")
    if _TOKEN.fullmatch(value) or _ADDRESS.fullmatch(value):
        return value
    return _quoted(value)


def _identity_pvalue(value: str) -> str:
    """A MAIL FROM address or HELO name as a pvalue: an internationalised domain as its
    A-label; an address whose local part is not ASCII is reported by its domain alone."""
    local, at, domain = value.rpartition("@")
    if not domain.isascii():
        try:
            domain = domain.encode("idna").decode("ascii")
        except UnicodeError:
            pass
    if at and not local.isascii():
        return _pvalue(domain)
    return _pvalue(local + at + domain)


def _quoted(value: str) -> str:
    value = re.sub(r"[\x00-\x1f\x7f]", " ", value.encode("ascii", "replace").decode("ascii"))
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _reason(result: str, reason: str) -> str:
    """` reason="..."` for results worth explaining (not pass/none), else ""."""
    if not reason or result in ("pass", "none"):
        return ""
    reason = " ".join(reason.split()).replace('"', "'").replace("\\", "/")
    if len(reason) > 120:
        reason = reason[:117] + "..."
    return f" reason={_quoted(reason)}"
