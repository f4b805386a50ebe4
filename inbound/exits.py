"""The one table of exit statuses (sysexits.h), as Postfix keeps its sys_exits.c.

Every command returns one of these, handler programs are judged by them, and the
`sendmail` reply transport reads them the same way.  PERMANENT is the set that means
"refused for good" (SPEC §5: 65, 67, 77); every other non-zero status, a signal or a
time-out means "try again later".

This module only names numbers: it imports nothing.
"""

EX_OK = 0
EX_USAGE = 64  # bad arguments
EX_DATAERR = 65  # the input is wrong (permanent)
EX_NOINPUT = 66  # an input file cannot be read
EX_NOUSER = 67  # no such recipient (permanent)
EX_NOHOST = 68  # no such host
EX_UNAVAILABLE = 69  # a service refused
EX_SOFTWARE = 70  # internal error
EX_IOERR = 74  # reading or writing failed
EX_TEMPFAIL = 75  # try again later
EX_NOPERM = 77  # not allowed (permanent)
EX_CONFIG = 78  # configuration error

NAMES = {
    EX_OK: "EX_OK",
    EX_USAGE: "EX_USAGE",
    EX_DATAERR: "EX_DATAERR",
    EX_NOINPUT: "EX_NOINPUT",
    EX_NOUSER: "EX_NOUSER",
    EX_NOHOST: "EX_NOHOST",
    EX_UNAVAILABLE: "EX_UNAVAILABLE",
    EX_SOFTWARE: "EX_SOFTWARE",
    EX_IOERR: "EX_IOERR",
    EX_TEMPFAIL: "EX_TEMPFAIL",
    EX_NOPERM: "EX_NOPERM",
    EX_CONFIG: "EX_CONFIG",
}

#: Statuses that refuse for good; anything else non-zero is temporary.
PERMANENT = frozenset({EX_DATAERR, EX_NOUSER, EX_NOPERM})


def describe(status: int) -> str:
    """'exit 75 (EX_TEMPFAIL)', 'exit 3', 'killed by signal 9' for a Popen returncode."""
    if status < 0:
        return f"killed by signal {-status}"
    name = NAMES.get(status)
    return f"exit {status} ({name})" if name and status else f"exit {status}"


def is_permanent(status: int) -> bool:
    return status in PERMANENT
