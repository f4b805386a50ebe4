"""Load and validate config.ini into typed, read-only settings.

Every key of SPEC §4 is known here with its type and default; an unknown section or
key, or a value of the wrong type, raises ConfigError whose message is one line naming
the file, the section and the key.  Relative paths (spool, handlers dir, outbox, log,
TLS files, DKIM key) are made absolute against the config file's folder.

This module does not open sockets, create folders or import handlers.
"""

from __future__ import annotations

import configparser
import os
import re

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


class LimitSettings(Settings):
    rate: int
    rate_window: float
    pregreet: float


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
    limits: LimitSettings
    routes: tuple[tuple[str, str], ...]
    handler_config: dict[str, dict[str, str]]

    def is_local_domain(self, domain: str) -> bool:
        return canonical_domain(domain) in self.server.domains

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

_HOSTNAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?\.?")

BOOLEANS = {
    "yes": True,
    "true": True,
    "on": True,
    "1": True,
    "no": False,
    "false": False,
    "off": False,
    "0": False,
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


def default_path() -> str:
    """--config is handled by the caller; then $MAILSERVER_CONFIG, then config.ini beside mailserver.py."""
    env = os.environ.get("MAILSERVER_CONFIG")
    if env:
        return env
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config.ini")


def configured_log(path: str) -> str:
    """`[server] log` of PATH read leniently, for reporting that PATH is broken: the log
    target a person configured, else syslog."""
    try:
        parser = configparser.ConfigParser(
            interpolation=None, strict=False, inline_comment_prefixes=(";", "#")
        )
        parser.read(path, encoding="utf-8")
        raw = parser.get("server", "log", fallback="syslog").strip()
    except Exception:  # the file is broken: that is what we are about to report
        return "syslog"
    return _convert(path, os.path.dirname(os.path.abspath(path)), "server", "log", "log", raw or "syslog")  # type: ignore[return-value]


def load(path: str) -> Config:
    """Read and validate PATH; raise ConfigError (one line) on any problem."""
    path = os.path.abspath(path)
    parser = configparser.ConfigParser(
        interpolation=None,
        inline_comment_prefixes=(";", "#"),
        strict=True,
        default_section="\x00none",
    )
    parser.optionxform = str.lower  # type: ignore[assignment,method-assign]
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not valid UTF-8") from None
    except configparser.Error as e:
        raise ConfigError(f"{path}: {_parse_error(e)}") from None
    base = os.path.dirname(path)
    values: dict[str, dict[str, object]] = {}
    for section, keys in SCHEMA.items():
        given = parser[section] if parser.has_section(section) else {}
        for key in given:
            if key not in keys:
                raise ConfigError(f"{path}: [{section}] {key}: unknown key")
        values[section] = {
            key: _convert(path, base, section, key, kind, given.get(key, default))
            for key, (kind, default) in keys.items()
        }
    routes: list[tuple[str, str]] = []
    handler_config: dict[str, dict[str, str]] = {}
    for section in parser.sections():
        if section in SCHEMA:
            continue
        if section == "routes":
            routes = [(pattern.lower(), name.strip()) for pattern, name in parser[section].items()]
            for pattern, name in routes:
                if not name:
                    raise ConfigError(f"{path}: [routes] {pattern}: empty handler name")
        elif section.startswith("handler.") and len(section) > len("handler."):
            handler_config[section[len("handler.") :]] = dict(parser[section])
        else:
            raise ConfigError(f"{path}: [{section}]: unknown section")
    server = values["server"]
    if not server["hostname"]:
        import socket

        server["hostname"] = socket.getfqdn()
    if not server["domains"]:
        raise ConfigError(f"{path}: [server] domains: no domain given; mail would be refused")
    server["domains"] = tuple(d.lower().rstrip(".") for d in server["domains"])  # type: ignore[attr-defined]
    tls = values["tls"]
    if bool(tls["certificate"]) != bool(tls["key"]):
        missing = "key" if tls["certificate"] else "certificate"
        raise ConfigError(f"{path}: [tls] {missing}: certificate and key go together")
    reply = values["reply"]
    reply["from_"] = reply.pop("from")
    return Config(
        path=path,
        server=ServerSettings(**server),  # type: ignore[arg-type]
        tls=TLSSettings(**tls),  # type: ignore[arg-type]
        handlers=HandlerSettings(**values["handlers"]),  # type: ignore[arg-type]
        checks=CheckSettings(**values["checks"]),  # type: ignore[arg-type]
        reply=ReplySettings(**reply),  # type: ignore[arg-type]
        serve=ServeSettings(**values["serve"]),  # type: ignore[arg-type]
        limits=LimitSettings(**values["limits"]),  # type: ignore[arg-type]
        routes=tuple(routes),
        handler_config=handler_config,
    )


def _parse_error(e: configparser.Error) -> str:
    """configparser's error as one line that names the line of the file."""
    first = str(e).splitlines()[0].rstrip(".")
    if isinstance(e, configparser.MissingSectionHeaderError):
        return f"line {e.lineno}: {e.line.strip()!r} comes before any [section]: not an INI file?"
    if isinstance(e, configparser.ParsingError) and e.errors:
        lineno, line = e.errors[0]
        return f"line {lineno}: cannot parse {line.strip()!r}"
    where = getattr(e, "lineno", None)
    return f"line {where}: {first}" if where else first


def _convert(path: str, base: str, section: str, key: str, kind: str, raw: str) -> object:
    raw = raw.strip()

    def bad(what: str) -> ConfigError:
        return ConfigError(f"{path}: [{section}] {key}: {what}, got {raw!r}")

    if kind == "str":
        return raw
    if kind == "path":
        return os.path.normpath(os.path.join(base, raw)) if raw else ""
    if kind == "log":
        return raw if raw in ("syslog", "") else os.path.normpath(os.path.join(base, raw))
    if kind in ("int", "float", "timeout", "port"):
        integer = kind in ("int", "port")
        try:
            if not raw.isascii():
                raise ValueError
            number = int(raw) if integer else float(raw)
        except ValueError:
            raise bad(f"expected a{'n integer' if integer else ' number'}") from None
        if number < 0 or number != number or number in (float("inf"), float("-inf")) or number > 1e12:
            raise bad("expected a finite number >= 0")
        if kind == "timeout" and number <= 0:
            raise bad("expected a number of seconds > 0")
        if kind == "port" and not 0 < number < 65536:
            raise bad("expected a port number 1-65535")
        return number
    if kind == "hostname":
        if raw and not _HOSTNAME.fullmatch(raw):
            raise bad("expected a host name (letters, digits, dots, hyphens)")
        return raw
    if kind == "domains":
        domains = tuple(canonical_domain(item.strip()) for item in raw.split(",") if item.strip())
        for domain in domains:
            if not _HOSTNAME.fullmatch(domain):
                raise bad("expected domain names (an internationalised one in either form), comma separated")
        return domains
    if kind == "bool":
        if raw.lower() not in BOOLEANS:
            raise bad("expected yes or no")
        return BOOLEANS[raw.lower()]
    if kind == "list":
        return tuple(item.strip() for item in raw.split(",") if item.strip())
    if kind.startswith("choice:"):
        choices = kind[len("choice:") :].split("|")
        if raw.lower() not in choices:
            raise bad("expected one of " + ", ".join(choices))
        return raw.lower()
    if kind == "servers":
        servers = []
        for item in raw.replace(",", " ").split():
            host, port = item, "53"
            if item.startswith("["):  # [::1]:5353
                host, _, rest = item[1:].partition("]")
                port = rest[1:] if rest.startswith(":") else "53"
            elif item.count(":") == 1:
                host, port = item.split(":")
            if not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536 or not host:
                raise bad("expected HOST or HOST:PORT, comma separated")
            servers.append((host, int(port)))
        return tuple(servers)
    raise AssertionError(kind)
