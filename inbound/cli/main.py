"""The command line (SPEC §3): inetd mode by default, and listen, deliver, send, queue, check.

The inetd mode is the hot path (one process per connection), so it is recognised by hand
and argparse is only imported for the other commands.  Exit statuses follow sysexits:
0 ok, 64 usage, 65/67 refused, 75 try later, 78 configuration error.
"""

from __future__ import annotations

import sys

from ..exits import EX_CONFIG, EX_IOERR, EX_USAGE

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse

    from ..config import Config


def main(argv: list[str]) -> int:
    config_path = _inetd_config(argv)
    if config_path is not None:
        from ..log import protect_stderr

        protect_stderr()  # before any further import could print a traceback onto the socket
        from ..inetd import serve

        return serve(config_path)
    return _commands(argv)


def _inetd_config(argv: list[str]) -> str | None:
    """The config path when ARGV asks for inetd mode ([--config FILE]); else None."""
    from ..config import default_path

    if not argv:
        return default_path()
    if len(argv) == 2 and argv[0] in ("--config", "-c"):
        return argv[1]
    if len(argv) == 1 and argv[0].startswith("--config="):
        return argv[0].split("=", 1)[1]
    return None


CONFIG_HELP = "config file (default: $MAILSERVER_CONFIG, else config.ini beside mailserver.py)"


def _commands(argv: list[str]) -> int:
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message: str) -> None:  # type: ignore[override]
            self.print_usage(sys.stderr)
            print(f"{self.prog}: error: {message}", file=sys.stderr)
            sys.exit(EX_USAGE)  # sysexits, not argparse's 2

    parser = Parser(
        prog="mailserver.py",
        description="Receive-only SMTP server that runs your handlers on the mail it accepts. "
        "Without a command: one SMTP session on stdin/stdout (inetd mode).",
    )
    parser.add_argument(
        "--config", "-c", help="config file (default: $MAILSERVER_CONFIG, else config.ini here)"
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    listen_cmd = commands.add_parser(
        "listen", help="listen on HOST:PORT, one process per connection (dev mode)"
    )
    listen_cmd.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    listen_cmd.add_argument("--port", type=int, default=2525, help="port (default 2525)")
    listen_cmd.add_argument("--config", "-c", dest="sub_config", metavar="FILE", help=CONFIG_HELP)

    serve_cmd = commands.add_parser(
        "serve", help="fast mode: a warm master that forks a fresh process per connection"
    )
    serve_cmd.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="bind HOST:PORT (default: the socket from systemd Accept=no or xinetd wait = yes)",
    )
    serve_cmd.add_argument("--config", "-c", dest="sub_config", metavar="FILE", help=CONFIG_HELP)

    deliver_cmd = commands.add_parser(
        "deliver", help="run a message through checks and handlers without SMTP"
    )
    deliver_cmd.add_argument("--from", dest="sender", default="", help="envelope sender (default <>)")
    deliver_cmd.add_argument("--to", action="append", required=True, help="recipient (repeat for more)")
    deliver_cmd.add_argument("--dry-run", action="store_true", help="only print what would run")
    deliver_cmd.add_argument("file", help="message file, or - for stdin")
    deliver_cmd.add_argument("--config", "-c", dest="sub_config", metavar="FILE", help=CONFIG_HELP)

    send_cmd = commands.add_parser("send", help="send a test message to a server (trigger an automation)")
    from .send import add_arguments

    add_arguments(send_cmd)
    send_cmd.add_argument("--config", "-c", dest="sub_config", metavar="FILE", help=CONFIG_HELP)

    queue_cmd = commands.add_parser("queue", help="show, inspect and retry deferred and failed messages")
    group = queue_cmd.add_mutually_exclusive_group()
    group.add_argument("--list", action="store_true", help="list queued messages (the default)")
    group.add_argument("--run", action="store_true", help="retry the messages that are due")
    group.add_argument("--show", metavar="ID", help="one message: envelope, auth results, handlers' outcomes")
    group.add_argument(
        "--retry",
        nargs="+",
        metavar="ID",
        help="move failed/ID back into the queue with a fresh retry window",
    )
    queue_cmd.add_argument("--failed", action="store_true", help="with --list: the messages in failed/")
    queue_cmd.add_argument("--now", action="store_true", help="with --run: ignore the backoff")
    queue_cmd.add_argument("-v", "--verbose", action="store_true", help="with --run: say what was done")
    queue_cmd.add_argument("--config", "-c", dest="sub_config", metavar="FILE", help=CONFIG_HELP)

    check_cmd = commands.add_parser("check", help="validate config and handlers; print the routes")
    check_cmd.add_argument("--config", "-c", dest="sub_config", metavar="FILE", help=CONFIG_HELP)

    args = parser.parse_args(argv)
    if not args.command:
        parser.print_usage(sys.stderr)
        return EX_USAGE
    config_path = getattr(args, "sub_config", None) or args.config
    if config_path is None:
        from ..config import default_path

        config_path = default_path()
    args.config = config_path
    if args.command == "send" and args.forward is not None:
        from .forward import forward_main

        return forward_main(args)
    if args.command == "send" and args.reply is not None:
        from .reply import reply_main

        return reply_main(args)
    if args.command == "send":
        from .send import main as send_main

        return send_main(args)

    if args.command == "serve":
        from ..serve import main as serve_main

        return serve_main(config_path, args.listen)
    from .. import log
    from ..config import ConfigError, load

    try:
        config = load(config_path)
    except ConfigError as e:
        print(f"mailserver: {e}", file=sys.stderr)
        return EX_CONFIG
    if args.command == "listen":
        from .listen import listen as run_listen

        return run_listen(args.host, args.port, config_path)
    log.setup(config.server.log, config.server.log_level)
    try:
        return _run(args, config)
    except OSError as e:  # an unwritable spool, a missing message file: one line, no traceback
        where = f"{e.filename}: " if e.filename else ""
        print(f"mailserver: {where}{e.strerror or e}", file=sys.stderr)
        return EX_IOERR


def _run(args: argparse.Namespace, config: Config) -> int:
    if args.command == "check":
        from .admin import check

        return check(config)
    if args.command == "queue":
        from .queue import queue

        return queue(
            config,
            run=args.run,
            now=args.now,
            failed=args.failed,
            show=args.show,
            retry=args.retry,
            verbose=args.verbose,
        )
    if args.command == "deliver":
        from .admin import deliver

        return deliver(config, args.sender, args.to, args.file, dry_run=args.dry_run)
    return EX_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
