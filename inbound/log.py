"""Logging without the cost of `logging`: syslog (facility mail) or a file, never stdout.

In inetd mode stdout and stderr may be the client's socket, so nothing here writes to
them unless the config names a file such as /dev/stderr on purpose (the dev config does,
for `listen`), and `protect_stderr()` points a stderr that is the socket at /dev/null.
`summary()` writes the one key=value line per connection, and `exception()` the one
line an unexpected error gets (its traceback folded with " | ").
Every line is one line of printable text: what the client sent (addresses, HELO, header
values, a handler's output) cannot break it, colour a terminal or ring its bell
(`printable()` escapes line breaks, control and format characters).
"""

from __future__ import annotations

import os
import syslog
import time

LEVELS = {"debug": 0, "info": 1, "warning": 2, "error": 3}
_PRIORITY = {0: syslog.LOG_DEBUG, 1: syslog.LOG_INFO, 2: syslog.LOG_WARNING, 3: syslog.LOG_ERR}
_target = "syslog"
_threshold = 1
_fd: int | None = None
_tag = "mailserver"


def protect_stderr(sockets_only: bool = False) -> None:
    """Under xinetd stderr is the client's socket: point it at /dev/null (systemd's journal
    or a terminal, anything but the connection, is left alone).  In inetd mode stdin and
    stdout are the wire whatever they are (pipes too); SOCKETS_ONLY (the serve master,
    whose stdin under xinetd is the listening socket): only a socket is, and a file that
    is both stdout and stderr (`> serve.log 2>&1`) stays a person's log."""
    import stat

    def same(a: int, b: int) -> bool:
        try:
            x, y = os.fstat(a), os.fstat(b)
        except OSError:
            return False
        wire = not sockets_only or stat.S_ISSOCK(x.st_mode)
        return wire and (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino)

    if same(2, 0) or same(2, 1):
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 2)
        os.close(null)


SYSLOG_SOCKET = "/dev/log"


def target_problem(target: str) -> str:
    """Why TARGET would lose every line for this user, without touching it ("" = fine):
    `check` asks this before the server ever runs."""
    if target == "syslog":
        if not os.path.exists(SYSLOG_SOCKET):
            return (
                f"syslog: {SYSLOG_SOCKET} does not exist (no syslog daemon or journal): lines would be lost"
            )
        return ""
    if not target:
        return ""
    if os.path.isdir(target):
        return f"{target} is a folder"
    if os.path.exists(target):
        return "" if os.access(target, os.W_OK) else f"{target}: not writable by this user"
    folder = os.path.dirname(target) or "."
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{target}: cannot be created in {folder} by this user"
    return ""


def _stderr_visible() -> bool:
    """stderr goes somewhere a person can read (a terminal, the journal), not /dev/null."""
    return os.path.realpath("/proc/self/fd/2") != os.devnull


def setup(target: str, level: str = "info", tag: str = "mailserver") -> None:
    """target: 'syslog', a file path, or '' (discard).  A target that cannot take lines
    (no /dev/log, a file we may not write) falls back to syslog, else to stderr when it is
    visible and not the client's socket, and the first line there says why."""
    global _target, _threshold, _fd, _tag
    _target, _threshold, _tag = target, LEVELS.get(level, 1), tag
    if _fd is not None and _fd > 2:
        os.close(_fd)
    _fd = None
    problem = ""
    if target == "syslog":
        problem = target_problem(target)
        if not problem:
            syslog.closelog()  # a forked session must not share the master's syslog socket
            syslog.openlog(tag, syslog.LOG_PID, syslog.LOG_MAIL)
            return
    elif target:
        try:
            _fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            return
        except OSError as e:
            problem = f"{target}: {e.strerror}"
    else:
        return
    if target != "syslog" and not target_problem("syslog"):  # a log file we cannot open: syslog
        _target = "syslog"
        syslog.closelog()
        syslog.openlog(tag, syslog.LOG_PID, syslog.LOG_MAIL)
    elif _stderr_visible():
        _target, _fd = "stderr", 2
    else:
        _target = ""  # nowhere visible is left: nothing to write to
        return
    _write(3, "log: cannot log to %s (%s); logging here instead", (target, problem))


def _write(level: int, message: str, args: tuple[object, ...]) -> None:
    if level < _threshold:
        return
    if args:
        try:
            message = message % args
        except (TypeError, ValueError):
            message = f"{message} {args!r}"
    message = printable(message)
    if _target == "syslog":
        syslog.syslog(_PRIORITY[level], message)
    elif _fd is not None and _target:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        name = ("debug", "info", "warning", "error")[level]
        line = f"{stamp} {_tag}[{os.getpid()}] {name}: {message}\n"
        try:
            os.write(_fd, line.encode("utf-8", "replace"))
        except OSError:
            pass


_ESCAPES = {"\r": "\\r", "\n": "\\n", "\t": "\\t"}


def printable(text: str) -> str:
    """TEXT as one line of printable text: line breaks, controls (escape, bell, C1, U+2028...),
    format characters and lone surrogates written as escapes (\\n, \\x1b, \\u2028, \\udcc3);
    printable characters of any script are kept."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _ESCAPES.get(c) or _escape(c) for c in text)


def _escape(c: str) -> str:
    n = ord(c)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"


def debug(message: str, *args: object) -> None:
    _write(0, message, args)


def info(message: str, *args: object) -> None:
    _write(1, message, args)


def warning(message: str, *args: object) -> None:
    _write(2, message, args)


def error(message: str, *args: object) -> None:
    _write(3, message, args)


def exception(message: str, *args: object) -> None:
    """An error line with the current exception's traceback folded onto it (call in `except`)."""
    import traceback

    _write(3, f"{message}: %s", (*args, traceback.format_exc().strip().replace("\n", " | ")))


def summary(**fields: object) -> None:
    """One key=value line; values with spaces or quotes are quoted."""
    parts = []
    for key, value in fields.items():
        text = str(value)
        if not text or any(c in text for c in ' "=\\'):
            text = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        parts.append(f"{key}={text}")
    info(" ".join(parts))
