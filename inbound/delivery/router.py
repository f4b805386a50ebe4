"""Find the handlers in the handlers folder and decide which one takes an address.

A handler is a file in `[handlers] dir` (names starting with `_` or `.` are ignored):
`NAME.py` is a Python module with `handle(envelope)` and optional `ADDRESSES` (glob
patterns over the whole address) and `INLINE`; any other file with the executable bit is
a program, named by its file name without the extension.  The folder is read afresh by
every process, so dropping a file in is the whole deployment.

Routing an address local+ext@domain, first match wins:
  1. a domain not in `[server] domains` is not ours (550 5.7.1 at RCPT: we are no relay);
     an SRS0=/SRS1= address of `[forward] srs_domain` is a bounce to a forward: when its
     hash and age check out (srs.py) to the `[forward] bounces` handler, else failed/;
     forged or expired, 550 5.1.1;
  2. `[routes]` patterns, in file order;
  3. handlers' `ADDRESSES` patterns, in handler-name order;
  4. the handler named like the local part (before `+`), case-insensitively;
  5. `postmaster@` a local domain is always accepted: to the catchall, else to failed/;
  6. the catchall; else 550 5.1.1.
A handler that fails to import is remembered with its error: the addresses that reach it
get 451 4.3.0 (try later) and other mail flows.  So do the addresses of a handler whose
REQUIRED_SETTINGS are not all set in its [handler.NAME] section.  A handlers folder that cannot be read
(missing, mistyped, not mounted) defers every local address with 451 4.3.0: senders
retry, nothing bounces while an operator fixes it.

The router neither runs handlers nor writes to the client.
"""

from __future__ import annotations

import importlib.machinery
import os
import sys

from .. import log
from ..config import Config, canonical_domain

TYPE_CHECKING = False  # dataclasses cost start-up time; names for type checkers only
if TYPE_CHECKING:
    from types import ModuleType

POSTMASTER_TO_FAILED = "-failed"  # route of postmaster mail nobody takes: straight to failed/
SRS_PREFIXES = ("SRS0=", "SRS0+", "SRS0-", "SRS1=", "SRS1+", "SRS1-")  # srs.is_srs(), not imported
NOT_HANDLERS = ("_", ".")  # files in the handlers folder starting so are not handlers


class Handler:
    def __init__(self, name: str, path: str, kind: str) -> None:
        self.name = name
        self.path = path
        self.kind = kind  # "python" | "program"
        self.addresses: tuple[str, ...] = ()
        self.inline = False
        self.required: tuple[str, ...] = ()  # REQUIRED_SETTINGS: [handler.NAME] keys it needs
        self.require: tuple[str, ...] = ()  # REQUIRE: "dmarc=pass"...: it runs when one holds
        self.module: ModuleType | None = None
        self.error = ""  # why it cannot run: "FILE:LINE: message"

    def __repr__(self) -> str:
        return f"Handler({self.name!r}, {self.kind}, {self.path!r}{', ' + self.error if self.error else ''})"


class Route:
    """Where an address goes: a handler name, or a refusal reason."""

    def __init__(self, address: str, handler: str = "", refusal: str = "", via: str = "") -> None:
        self.address = address
        self.handler = handler
        self.refusal = refusal  # "not_our_domain" | "no_such_user" | "handler_unavailable"
        self.via = via  # how it was matched, for `check` and --dry-run

    def __repr__(self) -> str:
        return f"Route({self.address!r}, handler={self.handler!r}, refusal={self.refusal!r})"

    @property
    def accepted(self) -> bool:
        return not self.refusal


class Router:
    def __init__(self, config: Config) -> None:
        self.config = config
        self._handlers: dict[str, Handler] | None = None
        self.problems: list[str] = []
        self.folder_error = ""  # why the handlers folder cannot be read, if it cannot

    @property
    def handlers(self) -> dict[str, Handler]:
        if self._handlers is None:
            try:
                self._handlers = discover(self.config.handlers.dir, self.problems)
            except OSError as e:
                self.folder_error = (
                    f"{self.config.handlers.dir}: cannot read the handlers folder: {e.strerror}"
                )
                self.problems.append(self.folder_error)
                self._handlers = {}
        return self._handlers

    def is_ours(self, domain: str) -> bool:
        return self.config.is_local_domain(domain)

    @property
    def default_domain(self) -> str:
        return self.config.server.domains[0]

    def route(self, address: str) -> Route:
        local, _, domain = address.rpartition("@")
        if not self.config.is_local_domain(domain):
            return Route(address, refusal="not_our_domain", via="domain")
        address = f"{local}@{canonical_domain(domain)}"
        if not self.handlers and self.folder_error:
            return Route(address, refusal="handler_unavailable", via="the handlers folder cannot be read")
        srs_domain = self.config.forward.srs_domain
        if srs_domain == canonical_domain(domain) and local[:5].upper() in SRS_PREFIXES:
            return self._srs_bounce(address)
        lowered = address.lower()
        for pattern, name in self.config.routes:
            if matches(lowered, pattern):
                return self._to(address, name, f"[routes] {pattern}")
        for name, handler in sorted(self.handlers.items()):
            for pattern in handler.addresses:
                if matches(lowered, pattern.lower()):
                    return self._to(address, name, f"{name} ADDRESSES {pattern}")
        base = local.split("+", 1)[0].lower()
        if base in self.handlers:
            return self._to(address, base, "local part")
        catchall = self.config.handlers.catchall
        if base == "postmaster" and not catchall:
            return Route(address, handler=POSTMASTER_TO_FAILED, via="postmaster (no handler: failed/)")
        if catchall:
            return self._to(address, catchall, "catchall")
        script = os.path.join(self.config.handlers.dir, base)
        plain = base and not base.startswith(NOT_HANDLERS) and "/" not in base
        if plain and os.path.isfile(script):  # the usual slip: a new script not yet chmod +x
            log.warning("%s: refused: %s is not executable (chmod +x makes it a handler)", address, script)
            return Route(address, refusal="no_such_user", via=f"no handler ({script}: not executable)")
        return Route(address, refusal="no_such_user", via="no handler")

    def _srs_bounce(self, address: str) -> Route:
        """A bounce to one of our SRS addresses: to `[forward] bounces` (else failed/) when
        it decodes, 550 5.1.1 like any unknown address when it is forged or expired."""
        from ..srs import SRSError, decode

        try:
            decode(address, self.config.forward.srs_secret)
        except SRSError as e:
            return Route(address, refusal="no_such_user", via=f"SRS address: {e}")
        name = self.config.forward.bounces
        if not name:
            return Route(address, handler=POSTMASTER_TO_FAILED, via="SRS bounce (no [forward] bounces)")
        return self._to(address, name, "SRS bounce ([forward] bounces)")

    def _to(self, address: str, name: str, via: str) -> Route:
        handler = self.handlers.get(name)
        if handler is None or handler.error or self.unconfigured(name):
            return Route(address, handler=name, refusal="handler_unavailable", via=via)
        return Route(address, handler=name, via=via)

    def unconfigured(self, name: str) -> list[str]:
        """The REQUIRED_SETTINGS of handler NAME that its [handler.NAME] leaves empty: until
        they are set its addresses are deferred (451), never accepted and dropped."""
        handler = self.handlers.get(name)
        settings = self.config.settings_for(name)
        return [key for key in handler.required if not settings.get(key, "").strip()] if handler else []

    def why_unavailable(self, name: str) -> str:
        handler = self.handlers.get(name)
        if handler is None:
            return "missing"
        if handler.error:
            return handler.error
        missing = self.unconfigured(name)
        return f"[handler.{name}] {', '.join(missing)} not set in {self.config.path}" if missing else ""


def matches(address: str, pattern: str) -> bool:
    """fnmatch.fnmatchcase(ADDRESS, PATTERN): `*` and `?` matched here, a pattern with a
    `[set]` by fnmatch itself (it compiles a regular expression: `re` costs ~5 ms)."""
    if "[" in pattern:
        import fnmatch

        return fnmatch.fnmatchcase(address, pattern)
    t = p = 0
    star, mark = -1, 0
    while t < len(address):
        if p < len(pattern) and pattern[p] in ("?", address[t]):
            t, p = t + 1, p + 1
        elif p < len(pattern) and pattern[p] == "*":
            star, mark, p = p, t, p + 1
        elif star >= 0:  # let the last * take one character more
            p, mark = star + 1, mark + 1
            t = mark
        else:
            return False
    return pattern[p:].strip("*") == ""


def discover(folder: str, problems: list[str]) -> dict[str, Handler]:
    """Every handler in FOLDER by name; import errors are kept on the Handler, not raised
    (an unreadable FOLDER raises OSError)."""
    found: dict[str, Handler] = {}
    names = sorted(os.listdir(folder))
    for filename in names:
        path = os.path.join(folder, filename)
        if filename.startswith(NOT_HANDLERS) or not os.path.isfile(path):
            continue
        name, ext = os.path.splitext(filename)
        if ext == ".py":
            handler = load_python(name, path)
        elif os.access(path, os.X_OK):
            handler = Handler(name, path, "program")
        else:
            continue
        if name in found:
            problems.append(f"{path}: handler name {name!r} is taken by {found[name].path}; ignored")
            continue
        if handler.error:
            problems.append(handler.error)
        found[name] = handler
    return found


def load_python(name: str, path: str) -> Handler:
    handler = Handler(name, path, "python")
    module_name = f"mailserver_handlers.{name}"
    try:
        module, loader = _module_from_file(module_name, path)
        sys.modules[module_name] = module
        loader.exec_module(module)
    except SyntaxError as e:
        handler.error = f"{e.filename or path}:{e.lineno}: syntax error: {e.msg}"
        return handler
    except BaseException as e:  # a handler's import may raise anything; it must not stop mail
        line = _line_in(path, e)
        handler.error = f"{path}:{line}: import failed: {type(e).__name__}: {e}"
        return handler
    handle = getattr(module, "handle", None)
    if not callable(handle):
        handler.error = f"{path}:1: no handle(envelope) function"
        return handler
    addresses = getattr(module, "ADDRESSES", ())
    if isinstance(addresses, str):
        addresses = (addresses,)
    if not all(isinstance(a, str) for a in addresses):
        handler.error = f"{path}:1: ADDRESSES must be a list of strings"
        return handler
    handler.addresses = tuple(addresses)
    handler.inline = bool(getattr(module, "INLINE", False))
    required = getattr(module, "REQUIRED_SETTINGS", ())
    if isinstance(required, str) or not all(isinstance(k, str) for k in required):
        handler.error = f"{path}:1: REQUIRED_SETTINGS must be a list of setting names"
        return handler
    handler.required = tuple(required)
    require = getattr(module, "REQUIRE", ())
    problem = require_problem(require)
    if problem:
        handler.error = f"{path}:1: REQUIRE: {problem}"
        return handler
    handler.require = tuple(r.strip().lower() for r in require)
    handler.module = module
    return handler


REQUIRE_METHODS = ("spf", "dkim", "dmarc", "arc")
REQUIRE_RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror", "policy")


def require_problem(require: object) -> str:
    """Why REQUIRE (a handler's list, or a program's parsed `require` setting) is not a
    list of METHOD=RESULT authentication results; "" when it is."""
    if isinstance(require, str) or not isinstance(require, (list, tuple)):
        return 'expected a list like ["dmarc=pass", "dkim=pass"]'
    for item in require:
        method, _, result = str(item).strip().lower().partition("=")
        if method not in REQUIRE_METHODS or result not in REQUIRE_RESULTS:
            return f"{item!r} is not one of {'/'.join(REQUIRE_METHODS)}=RESULT"
    return ""


def requirement(handler: Handler, settings: dict[str, str]) -> tuple[str, ...]:
    """What HANDLER requires: its `[handler.NAME] require` setting (the sysadmin's word wins),
    else the REQUIRE of its module."""
    text = settings.get("require", "")
    configured = tuple(item.strip().lower() for item in text.split(",") if item.strip())
    return configured or handler.require


def _module_from_file(name: str, path: str) -> tuple[ModuleType, importlib.machinery.SourceFileLoader]:
    """A module NAME for the source file PATH, not yet run: what importlib.util's
    spec_from_file_location() and module_from_spec() make, with importlib.machinery only
    (importlib.util costs every connection ~1 ms of imports)."""
    path = os.path.abspath(path)
    loader = importlib.machinery.SourceFileLoader(name, path)
    spec = importlib.machinery.ModuleSpec(name, loader, origin=path)
    spec.has_location = True
    module = type(sys)(name)
    module.__spec__ = spec
    module.__loader__ = loader
    module.__file__ = path
    module.__cached__ = spec.cached  # type: ignore[attr-defined]
    module.__package__ = spec.parent
    return module, loader


def _line_in(path: str, error: BaseException) -> int:
    import traceback

    for frame in reversed(traceback.extract_tb(error.__traceback__)):
        if os.path.abspath(frame.filename) == os.path.abspath(path):
            return frame.lineno or 1
    return 1
