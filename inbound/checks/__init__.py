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
    dkim.py       DKIM (RFC 6376/8463) and ARC (RFC 8617) through dkimpy, header block only
    bodyhash.py   DKIM/ARC body hashes streamed from the file
    dmarc.py      DMARC (RFC 7489)
    orgdomain.py  organisational domains and alignment (DMARC, the reply rules)
    psl.py        the Public Suffix List, compact and cached under the spool
    resolver.py   the one DNS stub all of them use: per-message answers and budget
    dnswire.py    the DNS wire format
    libs.py       pyspf and dkimpy imported without dnspython

Every DNS lookup of every check goes through one `resolver.Resolver` built from
`[checks] dns_servers` and `dns_timeout` (or one passed in) for the message: it asks a
question once however often the checks ask it, and holds the message's one DNS budget
(TIME_LIMIT_FACTOR x dns_timeout of wall clock, MAX_QUERIES, MAX_CNAME_HOPS); what is
over it ends as temperror (ARC: fail) with the reason, and `AuthResults.dns_budget` says
what ran out.  No exception leaves `authenticate()`: library and DNS errors become
temperror/permerror/fail as each RFC says.

The message is read from its file: the header block (up to 256 KiB) into memory, the
body only streamed past the DKIM/ARC body hashes, so memory does not grow with the
message.  Libraries are imported only when a check needs them: pyspf for SPF, dkimpy
only for a message with a DKIM-Signature or an ARC field, neither with dnspython; reading
stored results (`from_dict`) imports none.  This stage does not write the
Authentication-Results field into the message, sign anything, or refuse mail.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import IO

    from ..config import CheckSettings
    from .dkim import Signed
    from .resolver import Resolver
    from .results import ARCResult, AuthResults, DKIMResult, DMARCResult, SPFResult

__all__ = ["ARCResult", "AuthResults", "DKIMResult", "DMARCResult", "SPFResult", "authenticate"]

#: The one DNS budget of a message's checks: this many times `[checks] dns_timeout` of
#: wall clock (30 s at the default 5 s), so many queries, so many CNAME hops, for SPF,
#: DKIM, ARC and DMARC together.  What is over it ends as temperror (ARC: fail).
TIME_LIMIT_FACTOR = 6
MAX_QUERIES = 100
MAX_CNAME_HOPS = 20
ARC_FIELDS = frozenset(("arc-seal", "arc-message-signature", "arc-authentication-results"))


def __getattr__(name: str) -> object:
    """The result types, imported when first asked for: a delivery that only strips forged
    Authentication-Results (checks.authres) pays for nothing else of this package."""
    if name in __all__:
        from . import results

        return getattr(results, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def authenticate(
    message: bytes | str | IO[bytes],
    *,
    client_ip: str,
    helo: str,
    mail_from: str,
    settings: CheckSettings,
    authserv_id: str,
    resolver: Resolver | None = None,
) -> AuthResults:
    """Run the checks `settings` turns on against MESSAGE as received: the path of the
    spooled file, the file itself (at its start), or the bytes.

    CLIENT_IP may be "" (unknown); MAIL_FROM "" is the null sender.  Never raises for
    anything the message, the client or DNS can do.
    """
    if isinstance(message, str):
        with open(message, "rb") as f:
            return _authenticate(f, client_ip, helo, mail_from, settings, authserv_id, resolver)
    if isinstance(message, (bytes, bytearray)):
        import io

        message = io.BytesIO(message)
    return _authenticate(message, client_ip, helo, mail_from, settings, authserv_id, resolver)


def _authenticate(
    f: IO[bytes],
    client_ip: str,
    helo: str,
    mail_from: str,
    settings: CheckSettings,
    authserv_id: str,
    resolver: Resolver | None,
) -> AuthResults:
    from .bodyhash import read_header_block
    from .headers import from_domain, header_fields
    from .results import ARCResult, AuthResults, DKIMResult

    head, complete = read_header_block(f)
    fields = header_fields(head)
    domain, from_problem = from_domain(fields)
    results = AuthResults(from_domain=domain, authserv_id=authserv_id)
    if not (settings.spf or settings.dkim or settings.dmarc or settings.arc):
        return results
    if resolver is None:
        from .resolver import Budget, Resolver

        budget = Budget(TIME_LIMIT_FACTOR * settings.dns_timeout, MAX_QUERIES, MAX_CNAME_HOPS)
        resolver = Resolver.from_settings(settings, budget)
    names = {name for name, _ in fields}
    with_dkim = settings.dkim and "dkim-signature" in names
    with_arc = settings.arc and not names.isdisjoint(ARC_FIELDS)
    signed = None
    if with_dkim or with_arc:  # only then is dkimpy imported at all
        try:
            from .dkim import Signed

            signed = Signed.read(
                head, complete, f, with_dkim=with_dkim, with_arc=with_arc, from_domain=domain
            )
        except Exception as e:
            why = f"internal error: {type(e).__name__}"
            results.dkim = [DKIMResult("permerror", reason=why)] if with_dkim else []
            results.arc = ARCResult("fail", reason=why) if with_arc else None
            with_dkim = with_arc = False

    try:
        send_ahead(resolver, settings, signed, domain, client_ip, helo, mail_from)
    except Exception:  # only the speed is at stake: the checks ask as they always did
        resolver.close()
    try:
        return _check(
            results, fields, signed, (with_dkim, with_arc), client_ip, helo, mail_from, settings, resolver
        )
    finally:
        resolver.close()


def send_ahead(
    resolver: Resolver,
    settings: CheckSettings,
    signed: Signed | None,
    domain: str,
    client_ip: str,
    helo: str,
    mail_from: str,
) -> None:
    """Send at once the first question each check will ask (SPF's TXT, the first DKIM key,
    the From domain's DMARC policy): their answers travel together, and each check reads
    its own when it asks (the same queries as one after the other, a round trip each)."""
    if settings.spf and (mail_from.rpartition("@")[2] if mail_from else helo) and client_ip:
        resolver.send_ahead((mail_from.rpartition("@")[2] if mail_from else helo).strip().rstrip("."), "TXT")
    if settings.dkim and signed is not None and signed.dkim is not None and signed.dkim_order:
        from .dkim import key_name

        name = key_name(signed, signed.dkim_order[0])
        if name:
            resolver.send_ahead(name, "TXT")
    if settings.dmarc and domain:
        resolver.send_ahead("_dmarc." + domain, "TXT")


def _check(
    results: AuthResults,
    fields: list[tuple[str, str]],
    signed: Signed | None,
    verify: tuple[bool, bool],
    client_ip: str,
    helo: str,
    mail_from: str,
    settings: CheckSettings,
    resolver: Resolver,
) -> AuthResults:
    """The checks themselves, in order (SPF, DKIM, ARC, DMARC); VERIFY: DKIM, ARC."""
    from .results import ARCResult, DKIMResult, DMARCResult, SPFResult

    with_dkim, with_arc = verify
    domain = results.from_domain
    # Each check is its own exception boundary: a bug of ours or of a library costs that
    # check a temperror/permerror/fail, never the message.
    if settings.spf:
        from .spf import check_spf

        try:
            results.spf = check_spf(client_ip, helo, mail_from, resolver)
        except Exception as e:
            identity = "mailfrom" if mail_from else "helo"
            results.spf = SPFResult(
                "temperror", identity, mail_from or helo, reason=f"internal error: {type(e).__name__}"
            )
    if settings.dkim:
        results.dkim_checked = True
        if with_dkim and signed is not None:
            from .dkim import check_dkim

            try:
                results.dkim = check_dkim(signed, resolver)
            except Exception as e:
                results.dkim = [DKIMResult("permerror", reason=f"internal error: {type(e).__name__}")]
    if settings.arc:
        if with_arc and signed is not None:
            from .dkim import check_arc

            try:
                results.arc = check_arc(signed, resolver)
            except Exception as e:
                results.arc = ARCResult("fail", reason=f"internal error: {type(e).__name__}")
        elif results.arc is None:
            results.arc = ARCResult("none", 0, "")
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
    if resolver.budget is not None:
        results.dns_budget = resolver.budget.spent
    return results
