"""Stage 4, sender authentication of an accepted message: SPF, DKIM, DMARC and ARC.

`authenticate()` runs the checks that `[checks]` turns on and returns an `AuthResults`:
typed results that report what was found and never decide anything.  Turning a result
into a refusal (DMARC p=reject, auto-replies only to authenticated senders) is the
policy's business, helped by `AuthResults.dmarc_rejects()` and `.aligned_pass`.
`AuthResults.header_value()` is the RFC 8601 Authentication-Results value handed to
handlers, `.environment()` the SPF_RESULT/DKIM_RESULT/DMARC_RESULT/ARC_RESULT variables,
and `.to_dict()`/`.from_dict()` keep the results in the spool for retries.
`authres.remove_our_authres()` drops Authentication-Results fields that arrived bearing
our authserv-id (RFC 8601 section 5) before anything reads the message.

The rooms of this stage:

    results.py    SPFResult, DKIMResult, DMARCResult, ARCResult, AuthResults (+ storage)
    authres.py    Authentication-Results (RFC 8601) written and parsed
    forged.py     forged Authentication-Results removed from a spooled message
    headers.py    raw header scanning: fields, the From domain
    spf.py        SPF (RFC 7208) through pyspf
    dkim.py       DKIM (RFC 6376/8463) and ARC (RFC 8617) through dkimpy
    dmarc.py      DMARC (RFC 7489), organisational domains, alignment
    resolver.py   the one DNS stub all of them use

Every DNS lookup of every check goes through one `resolver.Resolver` built from
`[checks] dns_servers` and `dns_timeout` (or one passed in).  No exception leaves
`authenticate()`: library and DNS errors become temperror/permerror/fail as each RFC says.

Heavy libraries (dkim, spf, dnspython, publicsuffixlist) are imported inside the
functions that use them, so reading stored results (`from_dict`) stays cheap.  This stage
does not write the Authentication-Results field into the message, sign anything, or
refuse mail.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ..config import CheckSettings
    from .resolver import Resolver
    from .results import ARCResult, AuthResults, DKIMResult, DMARCResult, SPFResult

__all__ = ["ARCResult", "AuthResults", "DKIMResult", "DMARCResult", "SPFResult", "authenticate"]


def __getattr__(name: str) -> object:
    """The result types, imported when first asked for: a delivery that only strips forged
    Authentication-Results (checks.authres) pays for nothing else of this package."""
    if name in __all__:
        from . import results

        return getattr(results, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
    from .headers import from_domain, header_fields
    from .results import ARCResult, AuthResults, DKIMResult, DMARCResult, SPFResult

    fields = header_fields(message)
    domain, from_problem = from_domain(fields)
    results = AuthResults(from_domain=domain, authserv_id=authserv_id)
    if not (settings.spf or settings.dkim or settings.dmarc or settings.arc):
        return results
    if resolver is None:
        from .resolver import Resolver

        resolver = Resolver.from_settings(settings)
    from .dkim import check_arc, check_dkim
    from .spf import check_spf

    # Each check is its own exception boundary: a bug of ours or of a library costs that
    # check a temperror/permerror/fail, never the message.
    if settings.spf:
        try:
            results.spf = check_spf(client_ip, helo, mail_from, resolver)
        except Exception as e:
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
        try:  # every From domain is evaluated (RFC 7489 6.6.1), not only the one of `domain`
            from .dmarc import check_dmarc_from
            from .headers import from_domains

            domains, problem = from_domains(fields)
            results.dmarc = check_dmarc_from(
                domains, problem, results.spf, results.dkim if settings.dkim else [], resolver
            )
        except Exception as e:
            results.dmarc = DMARCResult("temperror", domain, reason=f"internal error: {type(e).__name__}")
    return results
