"""The typed results of the checks, and how they are stored, read back and exported.

Results report what was found and never decide anything.  Turning a result into a
refusal (DMARC p=reject, auto-replies only to authenticated senders) is the policy's
business, helped by `AuthResults.dmarc_rejects()` and `.aligned_pass`.
`.environment()` gives the SPF_RESULT/DKIM_RESULT/DMARC_RESULT/ARC_RESULT variables,
`.to_dict()`/`.from_dict()` keep the results in state.json for retries, and
`.header_value()` is the RFC 8601 value (authres.py).

Plain classes, not dataclasses: this module is read on every delivery and must stay
cheap to import.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: The result words of RFC 8601 section 2.7 that our results use.
RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "policy")


class _Result:
    """A small record: FIELDS are (name, default) in order; positional or keyword arguments."""

    FIELDS: tuple[tuple[str, Any], ...] = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        if len(args) > len(self.FIELDS):
            raise TypeError(f"{type(self).__name__}: too many arguments")
        for (name, _), value in zip(self.FIELDS, args, strict=False):
            kwargs.setdefault(name, value)
        for name, default in self.FIELDS:
            setattr(self, name, kwargs.pop(name, default))
        if kwargs:
            raise TypeError(f"{type(self).__name__}: unknown field {next(iter(kwargs))!r}")

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name, _ in self.FIELDS}

    @classmethod
    def from_dict(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return None
        names = {name for name, _ in cls.FIELDS}
        return cls(**{k: v for k, v in value.items() if k in names})

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self.to_dict() == other.to_dict()  # type: ignore[attr-defined]

    def __repr__(self) -> str:
        inner = ", ".join(f"{name}={getattr(self, name)!r}" for name, _ in self.FIELDS)
        return f"{type(self).__name__}({inner})"


class SPFResult(_Result):
    """SPF of one identity: `identity` is "mailfrom" or "helo", `sender` what was checked
    (the MAIL FROM address, or the HELO name), `domain` the domain whose policy applied."""

    FIELDS = (("result", "none"), ("identity", "mailfrom"), ("sender", ""), ("domain", ""), ("reason", ""))
    result: str
    identity: str
    sender: str
    domain: str
    reason: str


class DKIMResult(_Result):
    """One DKIM-Signature: its tags of note (`b` is the start of b=) and its result."""

    FIELDS = (
        ("result", "none"),
        ("domain", ""),
        ("selector", ""),
        ("b", ""),
        ("algorithm", ""),
        ("identity", ""),
        ("length", None),
        ("reason", ""),
    )
    result: str
    domain: str
    selector: str
    b: str
    algorithm: str
    identity: str
    length: int | None
    reason: str


class DMARCResult(_Result):
    """DMARC for the From domain.  `policy` is what the record asks for this message (p, or
    sp at a subdomain); `disposition` what applies after pct (only set when it fails)."""

    FIELDS = (
        ("result", "none"),
        ("from_domain", ""),
        ("policy", ""),
        ("disposition", "none"),
        ("record_domain", ""),
        ("pct", 100),
        ("spf_aligned", False),
        ("dkim_aligned", False),
        ("reason", ""),
    )
    result: str
    from_domain: str
    policy: str
    disposition: str
    record_domain: str
    pct: int
    spf_aligned: bool
    dkim_aligned: bool
    reason: str


class ARCResult(_Result):
    """ARC chain validation: pass, fail or none; `instances` is the newest i=."""

    FIELDS = (("result", "none"), ("instances", 0), ("reason", ""))
    result: str
    instances: int
    reason: str


class AuthResults:
    """What the checks found.  A check that was off is None (DKIM: `dkim_checked` False)."""

    def __init__(
        self,
        spf: SPFResult | None = None,
        dkim: list[DKIMResult] | None = None,
        dmarc: DMARCResult | None = None,
        arc: ARCResult | None = None,
        dkim_checked: bool = False,
        from_domain: str = "",
        authserv_id: str = "",
        dns_budget: str = "",
    ) -> None:
        self.spf = spf
        self.dkim: list[DKIMResult] = list(dkim or [])
        self.dmarc = dmarc
        self.arc = arc
        self.dkim_checked = dkim_checked
        self.from_domain = from_domain
        self.authserv_id = authserv_id
        #: What of the message's DNS budget ran out ("" when nothing did).
        self.dns_budget = dns_budget

    def __repr__(self) -> str:
        return f"AuthResults({self.to_dict()!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AuthResults) and self.to_dict() == other.to_dict()

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
        from .orgdomain import aligned

        return any(sig.result == "pass" and aligned(sig.domain, domain, strict=False) for sig in self.dkim)

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

    def header_value(self, authserv_id: str | None = None) -> str:
        """The Authentication-Results field value, one line (RFC 8601; see authres.py)."""
        from .authres import header_value

        return header_value(self, authserv_id)

    # -- storage --------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe plain data; `from_dict` reads it back."""
        return {
            "spf": self.spf.to_dict() if self.spf else None,
            "dkim": [sig.to_dict() for sig in self.dkim],
            "dmarc": self.dmarc.to_dict() if self.dmarc else None,
            "arc": self.arc.to_dict() if self.arc else None,
            "dkim_checked": self.dkim_checked,
            "from_domain": self.from_domain,
            "authserv_id": self.authserv_id,
            "dns_budget": self.dns_budget,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AuthResults:
        return cls(
            spf=SPFResult.from_dict(data.get("spf")),
            dkim=[DKIMResult.from_dict(sig) for sig in data.get("dkim") or [] if isinstance(sig, dict)],
            dmarc=DMARCResult.from_dict(data.get("dmarc")),
            arc=ARCResult.from_dict(data.get("arc")),
            dkim_checked=bool(data.get("dkim_checked", bool(data.get("dkim")))),
            from_domain=str(data.get("from_domain") or ""),
            authserv_id=str(data.get("authserv_id") or ""),
            dns_budget=str(data.get("dns_budget") or ""),
        )
