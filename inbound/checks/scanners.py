"""Content verdicts from real scanners: rspamd (spam) and clamd (viruses).

Both are optional daemons the sysadmin runs; we are only their client, with the stdlib:

    rspamd   `[checks] rspamd` = the URL of its normal worker (http://127.0.0.1:11333):
             POST /checkv2 with the message as the body and the envelope in headers
             (IP, Helo, From, Rcpt, Queue-Id); the JSON answer gives score,
             required_score, action and symbols.
    clamd    `[checks] clamd` = its socket, a unix path or HOST:PORT: `zINSTREAM`, the
             message in length-prefixed chunks, a zero-length chunk; the answer is
             `stream: OK` or `stream: NAME FOUND`.

The message is streamed from its spool file, never read whole.  Each scanner is bounded
by `[checks] scan_timeout` (socket timeouts, and one wall-clock deadline for the whole
exchange).  A scanner that is down, slow, resets the connection or answers something we
cannot read gives the verdict `unknown` with the reason: the message is accepted as if
unscanned, never lost and never refused for it.  Like the other checks these report and
never decide; the policy turns `reject`/a virus into 550 (`spam_reject`, `virus_reject`).

Verdicts are kept in state.json (`Verdicts.to_dict`) so handlers run by a retry see what
was found on arrival.
"""

from __future__ import annotations

import json
import os
import socket
import struct

from .. import alarm

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from ..settings import CheckSettings

CHUNK = 64 * 1024
MAX_ANSWER = 1024 * 1024  # an rspamd answer larger than this is garbage to us
ACTIONS = ("no action", "greylist", "add header", "rewrite subject", "soft reject", "reject")


class ScanTimeout(BaseException):
    """The scanner's wall-clock deadline passed (a BaseException: nothing inside swallows it)."""


class ScanError(Exception):
    """The scanner could not give a verdict (down, reset, garbage): the verdict is unknown."""


class Spam:
    """rspamd's verdict: score, required score, action and symbols (name -> score);
    action "unknown" (and `error` saying why) when rspamd could not be asked."""

    __slots__ = ("score", "required", "action", "symbols", "error")

    def __init__(
        self,
        action: str,
        score: float | None = None,
        required: float | None = None,
        symbols: dict[str, float] | None = None,
        error: str = "",
    ) -> None:
        self.action = action
        self.score = score
        self.required = required
        self.symbols = dict(symbols or {})
        self.error = error

    @property
    def unknown(self) -> bool:
        return self.action == "unknown"

    def __repr__(self) -> str:
        return f"Spam({self.action!r}, score={self.score!r}, symbols={sorted(self.symbols)!r})"

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Spam:
        score, required = data.get("score"), data.get("required")
        return cls(
            str(data.get("action") or "unknown"),
            float(score) if isinstance(score, (int, float)) else None,
            float(required) if isinstance(required, (int, float)) else None,
            {str(k): float(v) for k, v in (data.get("symbols") or {}).items() if isinstance(v, (int, float))},
            str(data.get("error") or ""),
        )


class Virus:
    """clamd's verdict: status "clean", "infected" (with the signature's name) or
    "unknown" (with `error` saying why)."""

    __slots__ = ("status", "name", "error")

    def __init__(self, status: str, name: str | None = None, error: str = "") -> None:
        self.status = status
        self.name = name
        self.error = error

    def __repr__(self) -> str:
        return f"Virus({self.status!r}, {self.name!r})"

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Virus:
        name = data.get("name")
        status, error = str(data.get("status") or "unknown"), str(data.get("error") or "")
        return cls(status, str(name) if name else None, error)


class Verdicts:
    """What the configured scanners said of one message (None: that scanner is not configured)."""

    __slots__ = ("spam", "virus")

    def __init__(self, spam: Spam | None = None, virus: Virus | None = None) -> None:
        self.spam = spam
        self.virus = virus

    def summary(self) -> str:
        """One line for the log: what each configured scanner said."""
        said = []
        if self.spam is not None and not self.spam.unknown:
            symbols = ",".join(sorted(self.spam.symbols)[:20]) or "none"
            said.append(
                f"rspamd action={self.spam.action!r} score={self.spam.score or 0:.2f} symbols={symbols}"
            )
        if self.virus is not None and self.virus.status != "unknown":
            said.append(f"clamd {self.virus.status}" + (f" {self.virus.name}" if self.virus.name else ""))
        return "; ".join(said)

    @property
    def unknown(self) -> list[str]:
        """The scanners that gave no verdict, each as "name: why"."""
        failed = []
        if self.spam is not None and self.spam.unknown:
            failed.append(f"rspamd: {self.spam.error}")
        if self.virus is not None and self.virus.status == "unknown":
            failed.append(f"clamd: {self.virus.error}")
        return failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "spam": self.spam.to_dict() if self.spam else None,
            "virus": self.virus.to_dict() if self.virus else None,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Verdicts:
        data = data if isinstance(data, dict) else {}
        spam, virus = data.get("spam"), data.get("virus")
        return cls(
            Spam.from_dict(spam) if isinstance(spam, dict) else None,
            Virus.from_dict(virus) if isinstance(virus, dict) else None,
        )

    def environment(self) -> dict[str, str]:
        """SPAM_SCORE, SPAM_ACTION, VIRUS and VIRUS_STATUS for a program handler."""
        spam, virus = self.spam, self.virus
        return {
            "SPAM_SCORE": f"{spam.score:.2f}" if spam and spam.score is not None else "",
            "SPAM_ACTION": spam.action if spam else "",
            "VIRUS": (virus.name or "") if virus else "",
            "VIRUS_STATUS": virus.status if virus else "",
        }

    def header_fields(self, authserv_id: str) -> bytes:
        """Our trace fields, Authentication-Results style (authserv-id first), for the top
        of the message handlers get: X-Spam-Result and X-Virus-Result."""
        lines = [f"{name}: {authserv_id}; {value}\r\n" for name, value in self.results()]
        return "".join(lines).encode("utf-8", "replace")

    def results(self) -> list[tuple[str, str]]:
        """(field name, value after the authserv-id) of each configured scanner's verdict."""
        lines = []
        if self.spam is not None:
            spam = self.spam
            if spam.unknown:
                value = f"action=unknown ({_printable(spam.error)})"
            else:
                symbols = ",".join(sorted(_printable(name) for name in spam.symbols)[:50]) or "none"
                value = f"action={spam.action}; score={spam.score or 0:.2f}"
                if spam.required is not None:  # rspamd without a reject threshold gives none
                    value += f"; required={spam.required:.2f}"
                value += f"; symbols={symbols}"
            lines.append(("X-Spam-Result", value))
        if self.virus is not None:
            virus = self.virus
            if virus.status == "infected":
                value = f"infected; name={_printable(virus.name or '')}"
            elif virus.status == "unknown":
                value = f"unknown ({_printable(virus.error)})"
            else:
                value = virus.status
            lines.append(("X-Virus-Result", value))
        return lines


def _printable(text: str) -> str:
    """TEXT safe inside a header field value: printable ASCII, no parentheses, bounded."""
    return "".join(c if " " <= c <= "~" and c not in "()" else "?" for c in text)[:200]


def scan(path: str, settings: CheckSettings, envelope: dict[str, Any]) -> Verdicts:
    """Ask the scanners SETTINGS configures about the message in PATH; never raises.

    ENVELOPE: ip, helo, sender, recipients, queue_id, hostname (the client's name), for
    rspamd."""
    verdicts = Verdicts()
    timeout = settings.scan_timeout
    if settings.rspamd:
        try:
            with alarm.deadline(timeout, ScanTimeout):
                verdicts.spam = ask_rspamd(settings.rspamd, path, envelope, timeout)
        except ScanTimeout:
            verdicts.spam = Spam("unknown", error=f"{settings.rspamd}: no answer within {timeout:g} s")
        except Exception as e:  # down, reset, garbage (or a bug here): never the message's loss
            verdicts.spam = Spam("unknown", error=f"{settings.rspamd}: {_reason(e)}")
    if settings.clamd:
        try:
            with alarm.deadline(timeout, ScanTimeout):
                verdicts.virus = ask_clamd(settings.clamd, path, timeout)
        except ScanTimeout:
            verdicts.virus = Virus("unknown", error=f"{settings.clamd}: no answer within {timeout:g} s")
        except Exception as e:
            verdicts.virus = Virus("unknown", error=f"{settings.clamd}: {_reason(e)}")
    return verdicts


def _reason(e: BaseException) -> str:
    if isinstance(e, socket.timeout):
        return "timed out"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    if isinstance(e, ScanError):
        return str(e)
    return f"{type(e).__name__}: {e}"


# -- rspamd ------------------------------------------------------------------------------
def ask_rspamd(url: str, path: str, envelope: dict[str, Any], timeout: float) -> Spam:
    """rspamd's verdict on the message in PATH (raises OSError/ScanError when there is none)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    connection_class = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = connection_class(parts.hostname or "", parts.port, timeout=timeout)
    try:
        connection.putrequest("POST", (parts.path.rstrip("/") or "") + "/checkv2")
        headers = {
            "IP": envelope.get("ip", ""),
            "Helo": envelope.get("helo", ""),
            "From": envelope.get("sender", ""),
            "Queue-Id": envelope.get("queue_id", ""),
            "Hostname": envelope.get("hostname", ""),
        }
        for name, value in headers.items():
            if value and _header_safe(value):
                connection.putheader(name, value)
        for recipient in envelope.get("recipients", []):
            if _header_safe(recipient):
                connection.putheader("Rcpt", recipient)
        connection.putheader("Content-Length", str(os.path.getsize(path)))
        connection.endheaders()
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                connection.send(chunk)
        response = connection.getresponse()
        body = response.read(MAX_ANSWER + 1)
    except http.client.HTTPException as e:
        raise ScanError(f"bad HTTP answer: {type(e).__name__}") from None
    finally:
        connection.close()
    if response.status != 200:
        raise ScanError(f"HTTP {response.status}")
    return parse_rspamd(body)


def _header_safe(value: str) -> bool:
    return value.isascii() and value.isprintable() and len(value) < 1000


def parse_rspamd(body: bytes) -> Spam:
    """A Spam from rspamd's /checkv2 JSON answer; ScanError when it is not one."""
    if len(body) > MAX_ANSWER:
        raise ScanError("answer too large")
    try:
        data = json.loads(body)
    except ValueError:
        raise ScanError("answer is not JSON") from None
    if not isinstance(data, dict) or not isinstance(data.get("action"), str):
        raise ScanError("answer has no action")
    if data["action"] not in ACTIONS:
        raise ScanError(f"unknown action {_printable(data['action'])!r}")
    score, required = data.get("score"), data.get("required_score")
    if not isinstance(score, (int, float)) or isinstance(score, bool):
        raise ScanError("answer has no score")
    symbols: dict[str, float] = {}
    raw_symbols = data.get("symbols")
    if isinstance(raw_symbols, dict):
        for name, item in list(raw_symbols.items())[:1000]:
            value = item.get("score", 0.0) if isinstance(item, dict) else 0.0
            symbols[str(name)[:100]] = float(value) if isinstance(value, (int, float)) else 0.0
    return Spam(
        data["action"],
        float(score),
        float(required) if isinstance(required, (int, float)) else None,
        symbols,
    )


# -- clamd -------------------------------------------------------------------------------
def ask_clamd(address: str, path: str, timeout: float) -> Virus:
    """clamd's verdict on the message in PATH, sent with INSTREAM."""
    if address.startswith("/"):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        target: Any = address
    else:
        host, _, port = address.rpartition(":")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        target = (host.strip("[]"), int(port))
    with sock:
        sock.settimeout(timeout)
        sock.connect(target)
        sock.sendall(b"zINSTREAM\0")
        try:
            with open(path, "rb") as f:
                while chunk := f.read(CHUNK):
                    sock.sendall(struct.pack("!I", len(chunk)) + chunk)
            sock.sendall(struct.pack("!I", 0))
        except (BrokenPipeError, ConnectionResetError):
            pass  # clamd stopped reading (its size limit): its answer says why
        answer = b""
        while not answer.endswith(b"\0") and len(answer) < 4096:
            piece = sock.recv(4096)
            if not piece:
                break
            answer += piece
    return parse_clamd(answer)


def parse_clamd(answer: bytes) -> Virus:
    """A Virus from clamd's INSTREAM answer; ScanError when it is not a verdict."""
    text = answer.rstrip(b"\0\n").decode("utf-8", "replace")
    if not text:
        raise ScanError("connection closed without an answer")
    label, sep, result = text.partition(": ")
    result = result if sep else label  # "stream: OK", or an error of the whole command
    if result == "OK":
        return Virus("clean")
    if result.endswith(" FOUND") and len(result) > len(" FOUND"):
        return Virus("infected", _printable(result[: -len(" FOUND")].strip()))
    if result.endswith(" ERROR"):
        raise ScanError(_printable(result[: -len(" ERROR")].strip()))
    raise ScanError(f"unexpected answer {_printable(text)!r}")
