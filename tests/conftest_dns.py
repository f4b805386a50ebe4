"""Fixtures for the sender checks: a real DNS server on 127.0.0.1 and settings pointing at it.

Load from tests/conftest.py with `from conftest_dns import *  # noqa: F403`
(or `pytest_plugins = ["conftest_dns"]` in the top-level conftest).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from dns_server import DNSTestServer

from inbound.config import CheckSettings

__all__ = ["check_settings", "checks_against", "dns_server", "dns_server_process_wide"]

#: Short, so the suite's TIMEOUT names cost little; far above a loopback round trip.
TEST_DNS_TIMEOUT = 0.6


@pytest.fixture(scope="session")
def dns_server_process_wide() -> Iterator[DNSTestServer]:
    server = DNSTestServer()
    yield server
    server.close()


@pytest.fixture
def dns_server(dns_server_process_wide: DNSTestServer) -> DNSTestServer:
    """The DNS server on 127.0.0.1, serving nothing until `dns_server.serve(zone)`."""
    dns_server_process_wide.serve({})
    return dns_server_process_wide


def checks_against(server: DNSTestServer, **overrides: str) -> dict[str, str]:
    """The `[checks]` section for Server.write_config(checks=...): every check on, asking
    SERVER, dns_timeout 2 s, unless OVERRIDES say otherwise."""
    host, port = server.address
    checks = {name: "yes" for name in ("spf", "dkim", "dmarc", "arc")}
    return {**checks, "dns_servers": f"{host}:{port}", "dns_timeout": "2", **overrides}


def make_check_settings(server: DNSTestServer, **overrides: Any) -> CheckSettings:
    """[checks] settings using SERVER, every check on unless OVERRIDES say otherwise."""
    values: dict[str, Any] = dict(
        spf=True,
        dkim=True,
        dmarc=True,
        arc=True,
        dmarc_reject=False,
        dns_servers=(server.address,),
        dns_timeout=TEST_DNS_TIMEOUT,
    )
    values.update(overrides)
    return CheckSettings(**values)


@pytest.fixture
def check_settings(dns_server: DNSTestServer) -> CheckSettings:
    """[checks] settings with every check on and the resolver pointing at `dns_server`."""
    return make_check_settings(dns_server)
