#!/usr/bin/env python3
"""mailserver: a receive-only SMTP server that runs your code on the mail it accepts.

Run by inetd/xinetd/systemd (one process per connection, SMTP on stdin/stdout), or
`mailserver.py listen` for development.  `mailserver.py --help` lists the commands.
This file stays thin: the work is in the `inbound` package beside it.

Handlers import `from mailserver import Reject, TempFail` (and `log`, `ForwardRefused`): the classes
re-exported here are the very ones the server catches, also when this file runs as a script.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:  # -I leaves the script's folder off sys.path
    sys.path.insert(0, _HERE)


def _venv_site_packages() -> "list[str]":
    """The site-packages to add by hand under -S (the fast start): the venv of the
    interpreter itself, found by its pyvenv.cfg beside or above sys.executable (not
    resolved: a venv's python is a symlink to the base one), else the checkout's .venv
    when started by another interpreter of the same version.  Never the base
    interpreter's own site-packages: pinned packages must not be shadowed."""
    version = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    bindir = os.path.dirname(sys.executable)
    found = [d for d in (bindir, os.path.dirname(bindir)) if os.path.isfile(os.path.join(d, "pyvenv.cfg"))]
    if found:
        if not sys.flags.no_site:
            return []  # site has set up the interpreter's own venv
        venv = found[0]
    else:  # another interpreter: the checkout's own venv, if it is of this version
        venv = os.path.join(_HERE, ".venv")
    packages = os.path.join(venv, "lib", version, "site-packages")
    return [packages] if os.path.isdir(packages) else []


for _packages in _venv_site_packages():
    if _packages not in sys.path:
        sys.path.append(_packages)
if __name__ == "__main__":
    sys.modules.setdefault("mailserver", sys.modules["__main__"])

from inbound import log  # noqa: E402  (handlers may log: from mailserver import log)
from inbound.outcomes import ForwardRefused, Reject, TempFail  # noqa: E402

__all__ = ["ForwardRefused", "Reject", "TempFail", "log", "main"]


def main(argv: "list[str] | None" = None) -> int:
    from inbound.cli.main import main as cli_main

    return cli_main(sys.argv[1:] if argv is None else argv)


def _leave(status: int) -> None:
    """End the process with STATUS.  It is a one-shot process, so the interpreter's teardown
    (every module and object freed: ~3 ms on a refused session, ~15 ms with the check stack)
    is skipped, stdout and stderr flushed first; unless a Python handler ran in it, whose
    open files that teardown may still have to flush and close."""
    runner = sys.modules.get("inbound.delivery.runner")
    if getattr(runner, "python_ran", False):
        sys.exit(status)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(status)


if __name__ == "__main__":
    _leave(main())
