"""DMARC (RFC 7489), written here, small.

The policy record at the From domain, else at its organisational domain (the Public
Suffix List); relaxed or strict alignment of the passing SPF identity and DKIM d=
(adkim/aspf), p/sp, pct.  When the From fields name several domains (`From: victim@a,
me@b`, or several From fields), each is evaluated and the worst result stands, as RFC
7489 6.6.1 asks: a failure with p=reject anywhere is a failure with p=reject
(`check_dmarc_from`).  No From field, or no domain at all, is `permerror`.  A DNS failure
of the policy lookup, or of an SPF/DKIM check that could have given an aligned pass, is
`temperror`.

Organisational domains and alignment are orgdomain.py's (the reply rules use them
too).  This module reports; it refuses nothing.
"""

from __future__ import annotations

import random
import re

from .orgdomain import aligned, organizational_domain
from .results import DKIMResult, DMARCResult, SPFResult

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .resolver import Resolver

_DMARC_RECORD = re.compile(r"v\s*=\s*DMARC1\s*(;|$)")
_POLICIES = ("none", "quarantine", "reject")
_DOWNGRADE = {"reject": "quarantine", "quarantine": "none", "none": "none"}
#: From domains of one message that are evaluated (each costs up to two TXT lookups).
MAX_FROM_DOMAINS = 10


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
    spf_aligned = bool(spf and spf.result == "pass" and aligned(spf_domain, from_domain, strict_spf))
    dkim_aligned = any(
        s.result == "pass" and aligned(s.domain, from_domain, strict_dkim) for s in dkim_results
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
    pending = (spf and spf.result == "temperror" and aligned(spf_domain, from_domain, strict_spf)) or any(
        s.result == "temperror" and aligned(s.domain, from_domain, strict_dkim) for s in dkim_results
    )
    if pending:
        result.result, result.reason = "temperror", "an aligned SPF or DKIM check failed temporarily"
        return result
    result.result = "fail"
    result.reason = "no aligned SPF or DKIM pass"
    result.disposition = policy if pct >= 100 or sample() * 100 < pct else _DOWNGRADE[policy]
    return result


def check_dmarc_from(
    from_domains: list[str],
    from_problem: str,
    spf: SPFResult | None,
    dkim_results: list[DKIMResult],
    resolver: Resolver,
    *,
    sample: Any = random.random,
) -> DMARCResult:
    """DMARC for a message whose From fields name FROM_DOMAINS (RFC 7489 6.6.1): each domain
    is evaluated and the worst result stands -- a failure with the strictest disposition,
    then temperror, permerror (FROM_PROBLEM: several From fields, an address without a
    domain), none, and pass only when every domain passes.  More than MAX_FROM_DOMAINS
    domains are not looked up: that is a failure with disposition reject."""
    if not from_domains:
        return DMARCResult("permerror", reason=from_problem or "no From domain")
    if len(from_domains) > MAX_FROM_DOMAINS:
        return DMARCResult(
            "fail",
            from_domains[0],
            policy="reject",
            disposition="reject",
            reason=f"From names {len(from_domains)} domains, more than the {MAX_FROM_DOMAINS} we evaluate",
        )
    results = [check_dmarc(domain, "", spf, dkim_results, resolver, sample=sample) for domain in from_domains]
    if from_problem:
        results.append(DMARCResult("permerror", reason=from_problem))
    worst = max(results, key=_severity)
    if len(results) > 1:
        worst.reason = f"{worst.reason or worst.result}; the worst of From domains {', '.join(from_domains)}"
        if from_problem and worst.result != "permerror":
            worst.reason += f" ({from_problem})"
    return worst


def _severity(result: DMARCResult) -> int:
    if result.result == "fail":
        return 10 + _POLICIES.index(result.disposition) if result.disposition in _POLICIES else 10
    return {"temperror": 4, "permerror": 3, "none": 2}.get(result.result, 0)


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
