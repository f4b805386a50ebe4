"""Load and validate config.ini into typed, read-only settings (settings.py).

Every key of SPEC §4 is known with its type and default; an unknown section or
key, or a value of the wrong type, raises ConfigError whose message is one line naming
the file, the section and the key.  Relative paths (spool, handlers dir, outbox, log,
TLS files, DKIM key) are made absolute against the config file's folder.

This module does not open sockets, create folders or import handlers.
"""

from __future__ import annotations

import os

from .settings import (  # noqa: F401  (re-exported: callers import them from here)
    SCHEMA,
    CheckSettings,
    Config,
    ConfigError,
    ForwardSettings,
    HandlerSettings,
    LimitSettings,
    ReplySettings,
    ServerSettings,
    ServeSettings,
    Settings,
    TLSSettings,
    canonical_domain,
)

TYPE_CHECKING = False  # dataclasses/typing cost start-up time; names for type checkers only
if TYPE_CHECKING:
    import configparser


_HOSTNAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,251}[A-Za-z0-9])?\.?"

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


def default_path() -> str:
    """--config is handled by the caller; then $MAILSERVER_CONFIG, then config.ini beside mailserver.py."""
    env = os.environ.get("MAILSERVER_CONFIG")
    if env:
        return env
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "config.ini")


def configured_log(path: str) -> str:
    """`[server] log` of PATH read leniently, for reporting that PATH is broken: the log
    target a person configured, else syslog."""
    import configparser

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
    """Read and validate PATH, or take it from the compiled cache when the cache holds this
    very file (see `cached()`); raise ConfigError (one line) on any problem."""
    path = os.path.abspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return parse(path)  # which says what is wrong
    if _loaded is not None and _loaded[:3] == (path, data, _code()):
        return _loaded[3]
    cache = _cache_path(path, data)
    config = cached(cache, path, data) if cache else None
    if config is None:
        config = parse(path)
        if cache:
            _save(cache, path, data, config)
    if cache:
        _remember(path, data, config)
    return config


#: The last Config load() built in this process, with the file's path and content and the
#: code's (`_code()`, as the cache): read again, the very same bytes give the very same
#: (read-only) settings.  A `serve` child inherits the master's, so a connection whose
#: config.ini did not change pays one read of it and a comparison, not the compiled
#: cache's read, checks and unmarshalling.
_loaded: tuple[str, bytes, tuple[int, int, int, int], Config] | None = None


def _remember(path: str, data: bytes, config: Config) -> None:
    global _loaded
    _loaded = (path, data, _code(), config)


def parse(path: str) -> Config:
    """Read and validate PATH; raise ConfigError (one line) on any problem."""
    import configparser

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
    _check_forward(path, values["forward"], server["domains"])  # type: ignore[arg-type]
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
        forward=ForwardSettings(**values["forward"]),  # type: ignore[arg-type]
        routes=tuple(routes),
        handler_config=handler_config,
    )


def _check_forward(path: str, forward: dict[str, object], domains: tuple[str, ...]) -> None:
    """[forward]: SRS addresses live in one of our domains, and need a secret."""
    domain, secret = str(forward["srs_domain"]).strip(), str(forward["srs_secret"]).strip()
    if domain and canonical_domain(domain) not in domains:
        raise ConfigError(f"{path}: [forward] srs_domain: {domain!r} is not one of [server] domains")
    if domain and not secret:
        raise ConfigError(f"{path}: [forward] srs_secret: empty; SRS addresses of srs_domain need a secret")
    if secret and not domain:
        raise ConfigError(f"{path}: [forward] srs_domain: empty; srs_secret goes with it")
    forward["srs_domain"] = canonical_domain(domain) if domain else ""
    forward["srs_secret"] = secret


def _parse_error(e: configparser.Error) -> str:
    """configparser's error as one line that names the line of the file."""
    import configparser

    first = str(e).splitlines()[0].rstrip(".")
    if isinstance(e, configparser.MissingSectionHeaderError):
        return f"line {e.lineno}: {e.line.strip()!r} comes before any [section]: not an INI file?"
    if isinstance(e, configparser.ParsingError) and e.errors:
        lineno, line = e.errors[0]
        return f"line {lineno}: cannot parse {line.strip()!r}"
    where = getattr(e, "lineno", None)
    return f"line {where}: {first}" if where else first


def _convert(path: str, base: str, section: str, key: str, kind: str, raw: str) -> object:
    import re

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
        if raw and not re.fullmatch(_HOSTNAME, raw):
            raise bad("expected a host name (letters, digits, dots, hyphens)")
        return raw
    if kind == "domains":
        domains = tuple(canonical_domain(item.strip()) for item in raw.split(",") if item.strip())
        for domain in domains:
            if not re.fullmatch(_HOSTNAME, domain):
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
    if kind == "url":  # [checks] rspamd
        if not raw:
            return ""
        from urllib.parse import urlsplit

        parts = urlsplit(raw)
        try:
            port_ok = parts.port is None or 0 < parts.port < 65536
        except ValueError:
            port_ok = False
        if raw and (parts.scheme not in ("http", "https") or not parts.hostname or not port_ok):
            raise bad("expected an http:// URL such as http://127.0.0.1:11333")
        url = raw.rstrip("/")
        return url[: -len("/checkv2")] if url.endswith("/checkv2") else url  # we add it
    if kind == "socket":  # [checks] clamd
        host, _, port = raw.rpartition(":")
        port_ok = port.isascii() and port.isdigit() and 0 < int(port) < 65536
        if raw.startswith(("/", "./", "../")):  # a unix socket; relative to the config file
            return os.path.normpath(os.path.join(base, raw))
        if raw and not (host and port_ok and "/" not in host):
            raise bad("expected a unix socket path (/run/clamav/clamd.ctl, ./clamd.sock) or HOST:PORT")
        return raw
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


# -- the compiled cache -------------------------------------------------------------------
# configparser and the validation cost every connection ~3 ms; a connection whose config
# file has not changed reads the validated settings back with marshal instead.  The cache
# lives in the spool (`<spool>/cache/config.marshal`, the spool as a plain scan of the file
# finds `[server] spool`; where the scan is wrong the cache is only never found), holds the
# file's whole content and is used only for that very content and this very config.py.  A
# cache not owned by us, or writable by others, is ignored; one that cannot be written is
# not.  A config without `[server] hostname` is not cached (the FQDN is asked each time).
CACHE_FORMAT = 1


def _scan(data: bytes) -> dict[str, str]:
    """`[server]` keys of DATA, read by a plain line scan (no configparser)."""
    found: dict[str, str] = {}
    section = ""
    for raw in data.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if not line or line[0] in "#;" or raw[:1] in (" ", "\t"):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        if section != "server":
            continue
        cut = min((i for i in (line.find("="), line.find(":")) if i >= 0), default=-1)
        if cut > 0:
            value = line[cut + 1 :]
            for prefix in (" ;", " #", "\t;", "\t#"):
                value = value.split(prefix, 1)[0]
            found.setdefault(line[:cut].strip().lower(), value.strip())
    return found


def _cache_path(path: str, data: bytes) -> str:
    """Where the cache of the config file PATH (content DATA) lives; "" for none."""
    server = _scan(data)
    if not server.get("hostname"):
        return ""
    spool = os.path.join(os.path.dirname(path), server.get("spool") or SCHEMA["server"]["spool"][1])
    return os.path.join(os.path.normpath(spool), "cache", "config.marshal")


def _code() -> tuple[int, int, int, int]:
    from . import settings

    ours, schema = os.stat(__file__), os.stat(settings.__file__)
    return ours.st_size, ours.st_mtime_ns, schema.st_size, schema.st_mtime_ns


def cached(cache: str, path: str, data: bytes) -> Config | None:
    """The Config kept in CACHE for the file PATH with content DATA, or None."""
    import marshal

    try:
        with open(cache, "rb") as f:
            st = os.fstat(f.fileno())
            if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                return None
            kept = marshal.loads(f.read())
        if kept[:4] != (CACHE_FORMAT, _code(), path, data):
            return None
        return Config(**{name: _thawed(value) for name, value in kept[4].items()})
    except Exception:  # missing, unreadable, not ours, of another version: parse instead
        return None


def _save(cache: str, path: str, data: bytes, config: Config) -> None:
    import marshal

    try:  # only the spool's owner keeps the cache (root running `queue` or `check` does not)
        if os.stat(os.path.dirname(os.path.dirname(cache))).st_uid != os.geteuid():
            return
    except OSError:
        return
    frozen = {name: _frozen(value) for name, value in vars(config).items()}
    tmp = f"{cache}.{os.getpid()}.tmp"
    try:
        try:
            os.mkdir(os.path.dirname(cache), 0o750)  # in the spool, which is not made here
        except FileExistsError:
            pass
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it may hold secrets
        with os.fdopen(fd, "wb") as f:
            f.write(marshal.dumps((CACHE_FORMAT, _code(), path, data, frozen)))
        os.replace(tmp, cache)
    except (OSError, ValueError):  # no spool yet, read-only, unmarshallable: no cache
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _frozen(value: object) -> object:
    if isinstance(value, Settings):
        return ("\x00settings", type(value).__name__, dict(vars(value)))
    return value


def _thawed(value: object) -> object:
    if isinstance(value, tuple) and len(value) == 3 and value[0] == "\x00settings":
        kind = globals()[value[1]]
        if not (isinstance(kind, type) and issubclass(kind, Settings)):
            raise TypeError(value[1])
        return kind(**value[2])
    return value
