"""A hostile message and the DNS zone its names lead to (issue 13, item 1): test data shared
by tests/e2e/test_dns_budget.py and bench/checked.py --hostile.

The message carries 20 DKIM-Signatures and 50 ARC sets with keys at names of the
attacker's, an SPF record of nine includes and a DMARC record at the attacker's domain.
In the zone every one of those names either never answers (`slow`) or is the start of a
ten-hop CNAME chain that ends nowhere (`chains`).  Unbounded, a message like this costs
minutes of time-outs and hundreds of queries at the attacker's servers.
"""

from __future__ import annotations

DOMAIN = "evil.example"
SIGNATURES = 20
ARC_SETS = 50
INCLUDES = 9
HOPS = 10


def names() -> list[str]:
    """Every name the checks of the message would look up first."""
    keys = [f"k{i}._domainkey.{DOMAIN}" for i in range(SIGNATURES)]
    arc = [f"a{i}._domainkey.{DOMAIN}" for i in range(1, ARC_SETS + 1)]
    includes = [f"i{i}.{DOMAIN}" for i in range(INCLUDES)]
    return [*keys, *arc, *includes, f"_dmarc.{DOMAIN}"]


def zone(kind: str) -> dict:
    """`slow`: no name answers; `chains`: each is a CNAME chain of HOPS hops to nowhere."""
    spf = "v=spf1 " + " ".join(f"include:i{i}.{DOMAIN}" for i in range(INCLUDES)) + " -all"
    data: dict = {DOMAIN: [{"TXT": spf}]}
    for n, name in enumerate(names()):
        if kind == "slow":
            data[name] = ["TIMEOUT"]
            continue
        chain = [name] + [f"h{hop}-{n}.chain.{DOMAIN}" for hop in range(HOPS)]
        for owner, target in zip(chain, chain[1:], strict=False):
            data[owner] = [{"CNAME": target}]
    return data


def message() -> bytes:
    head = (
        f"From: Boss <boss@{DOMAIN}>\r\nTo: sink@example.org\r\nSubject: hostile\r\n"
        f"Message-ID: <1@{DOMAIN}>\r\n"
    ).encode()
    dkim = b"".join(
        b"DKIM-Signature: v=1; a=rsa-sha256; d=%s; s=k%d; h=from:to; bh=AAAA; b=AAAA\r\n"
        % (DOMAIN.encode(), i)
        for i in range(SIGNATURES)
    )
    arc = b"".join(
        b"ARC-Seal: i=%d; a=rsa-sha256; cv=%s; d=%s; s=a%d; b=AAAA\r\n"
        b"ARC-Message-Signature: i=%d; a=rsa-sha256; d=%s; s=a%d; h=from; bh=AAAA; b=AAAA\r\n"
        b"ARC-Authentication-Results: i=%d; %s; none\r\n"
        % (i, b"none" if i == 1 else b"pass", DOMAIN.encode(), i, i, DOMAIN.encode(), i, i, DOMAIN.encode())
        for i in range(ARC_SETS, 0, -1)
    )
    return arc + dkim + head + b"\r\nDo as I say.\r\n"
