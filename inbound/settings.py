"""The settings of config.ini, typed and read-only: every section and key with its default.

SCHEMA names each key of SPEC §4 with its kind and default; config.py reads a file into
these classes (and keeps a compiled copy of them).  `canonical_domain()` is how domains
are compared everywhere (IDNA A-labels).  This module reads no file.
"""

from __future__ import annotations

TYPE_CHECKING = False  # dataclasses/typing cost start-up time; names for type checkers only
if TYPE_CHECKING:
    from typing import Any


class ConfigError(Exception):
    """A config problem, its message a single line: 'FILE: [section] key: what is wrong'."""


class Settings:
    """Read-only settings of one section, attributes from keyword arguments."""

    def __init__(self, **values: Any) -> None:
        self.__dict__.update(values)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"settings are read-only: {name}")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.__dict__!r})"


class ServerSettings(Settings):
    hostname: str
    domains: tuple[str, ...]
    max_message_size: int
    max_recipients: int
    command_timeout: float
    data_timeout: float
    spool: str
    log: str
    log_level: str


class TLSSettings(Settings):
    certificate: str
    key: str


class HandlerSettings(Settings):
    dir: str
    timeout: float
    retry_for: float
    keep_done: float
    catchall: str
    dedupe_days: float


class CheckSettings(Settings):
    spf: bool
    dkim: bool
    dmarc: bool
    arc: bool
    dmarc_reject: bool
    dns_servers: tuple[tuple[str, int], ...]
    dns_timeout: float
    dnsbl: tuple[str, ...]
    dnsbl_reject: bool
    rspamd: str
    spam_reject: bool
    clamd: str
    virus_reject: bool
    scan_timeout: float


class LimitSettings(Settings):
    rate: int
    rate_window: float
    pregreet: float


class ForwardSettings(Settings):
    srs_domain: str
    srs_secret: str
    bounces: str


class ServeSettings(Settings):
    max_connections: int
    max_per_source: int
    idle_exit: float


class ReplySettings(Settings):
    transport: str
    outbox: str
    sendmail: str
    smtp_host: str
    smtp_port: int
    smtp_user: str
    smtp_password: str
    smtp_starttls: bool
    from_: str
    require_auth: bool
    dkim_domain: str
    dkim_selector: str
    dkim_key: str


class Config(Settings):
    path: str
    server: ServerSettings
    tls: TLSSettings
    handlers: HandlerSettings
    checks: CheckSettings
    reply: ReplySettings
    serve: ServeSettings
    forward: ForwardSettings
    limits: LimitSettings
    routes: tuple[tuple[str, str], ...]
    handler_config: dict[str, dict[str, str]]

    def is_local_domain(self, domain: str) -> bool:
        return canonical_domain(domain) in self.server.domains

    @property
    def keeps_client_memory(self) -> bool:
        """Whether connections share a per-client memory (clients.py): [limits] or dnsbl."""
        return bool(self.limits.rate or self.limits.pregreet or self.checks.dnsbl)

    @property
    def turns_clients_away(self) -> bool:
        """Whether [limits] is on: only then are penalties given and enforced at connect
        (a memory kept for the DNSBL cache alone turns nobody away)."""
        return bool(self.limits.rate or self.limits.pregreet)

    def settings_for(self, handler: str) -> dict[str, str]:
        """The [handler.NAME] section of one handler (empty when there is none)."""
        return dict(self.handler_config.get(handler, {}))


# Each key: (kind, default).  Kinds: str, path, int, float, bool, list, choice:a|b, servers.
SCHEMA: dict[str, dict[str, tuple[str, str]]] = {
    "server": {
        "hostname": ("hostname", ""),
        "domains": ("domains", ""),
        "max_message_size": ("int", "26214400"),
        "max_recipients": ("int", "100"),
        "command_timeout": ("timeout", "300"),
        "data_timeout": ("timeout", "600"),
        "spool": ("path", "/var/spool/mailserver"),
        "log": ("log", "syslog"),
        "log_level": ("choice:debug|info|warning|error", "info"),
    },
    "tls": {
        "certificate": ("path", ""),
        "key": ("path", ""),
    },
    "handlers": {
        "dir": ("path", "handlers"),
        "timeout": ("timeout", "300"),
        "retry_for": ("float", "432000"),
        "keep_done": ("float", "0"),
        "catchall": ("str", ""),
        "dedupe_days": ("float", "7"),
    },
    "checks": {
        "spf": ("bool", "yes"),
        "dkim": ("bool", "yes"),
        "dmarc": ("bool", "yes"),
        "arc": ("bool", "yes"),
        "dmarc_reject": ("bool", "no"),
        "dns_servers": ("servers", ""),
        "dns_timeout": ("timeout", "5"),
        "dnsbl": ("domains", ""),
        "dnsbl_reject": ("bool", "yes"),
        "rspamd": ("url", ""),
        "spam_reject": ("bool", "no"),
        "clamd": ("socket", ""),
        "virus_reject": ("bool", "yes"),
        "scan_timeout": ("timeout", "30"),  # not in SPEC: each scanner's bound
    },
    "forward": {  # SPEC: envelope.forward() / send --forward (inbound/autoreply/forward.py)
        "srs_domain": ("str", ""),
        "srs_secret": ("str", ""),
        "bounces": ("str", ""),
    },
    "limits": {
        "rate": ("int", "0"),
        "rate_window": ("timeout", "60"),
        "pregreet": ("float", "0"),
    },
    "serve": {
        "max_connections": ("int", "50"),
        "max_per_source": ("int", "15"),
        "idle_exit": ("float", "600"),
    },
    "reply": {
        "transport": ("choice:sendmail|smtp|mx|outbox", "sendmail"),
        "outbox": ("path", "var/outbox"),
        "sendmail": ("str", "/usr/sbin/sendmail -oi -t"),
        "smtp_host": ("str", "localhost"),
        "smtp_port": ("port", "25"),
        "smtp_user": ("str", ""),
        "smtp_password": ("str", ""),
        "smtp_starttls": ("bool", "yes"),
        "from": ("str", ""),
        "require_auth": ("bool", "yes"),
        "dkim_domain": ("str", ""),
        "dkim_selector": ("str", ""),
        "dkim_key": ("path", ""),
    },
}


def canonical_domain(domain: str) -> str:
    """DOMAIN as we compare it: lower case, no final dot, and an internationalised name in
    its A-label form (bücher.example -> xn--bcher-kva.example, IDNA as Python's codec does
    it).  A name that is no valid IDN stays as it is, and then matches nothing of ours."""
    domain = domain.lower().rstrip(".")
    if domain.isascii() or domain.startswith("["):
        return domain
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return domain
