"""The ``superv`` command line: argument parsing and error reporting, nothing else.

Each command lives in its own module under :mod:`supervisor.commands` (the way tmux keeps
one file per command) and exposes ``add_parser(subparsers)`` and ``run(args) -> int``.
Command modules import only the standard library at import time, so that short commands
(``ls``, ``attach``, ``send``) start fast; heavy imports (trio, asyncssh) happen inside
``run`` of the commands that need them.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import select
import sys

from agent_worker import settings
from supervisor.errors import CliError

COMMANDS = [
    "start", "ls", "attach", "logs", "peek", "send", "stop", "kill", "resume", "rm",
    "prune", "export", "events", "notify", "daemon", "service", "doctor", "approve", "deny", "top",
]
TAKES_A_COMMAND = {"start"}


class _Parser(argparse.ArgumentParser):
    # The command being parsed: leftover arguments are reported by the top-level parser,
    # whose own prog does not name it.
    command: str | None = None

    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, exit 2, as for every usage error.
        where = " ".join(["superv", *self.prog.split()[1:2]])
        if where == "superv" and _Parser.command:
            where = f"superv {_Parser.command}"
        sys.stderr.write(f"superv: {message} (see '{where} --help')\n")
        raise SystemExit(2)


class _VersionAction(argparse.Action):
    """Prints the version; looked up only when asked, as importlib.metadata is slow to load."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, help="print the version and exit")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(f"superv {version()}")
        parser.exit()


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with ``only``, just that command's (importing one module, not sixteen)."""
    parser = _Parser(prog="superv", description="Keep long-running agents alive; lose nothing they print.")
    parser.add_argument("--version", action=_VersionAction)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name in [only] if only else COMMANDS:
        module = importlib.import_module(f"supervisor.commands.{name}")
        sub_parser = module.add_parser(sub)
        sub_parser.set_defaults(_run=module.run)
    return parser


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("superv")
    except PackageNotFoundError:
        return "0+unknown"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv and sys.stdin.isatty() and sys.stdout.isatty():
        argv = ["top"]  # superv alone on a terminal: the overview (issue 11)
    # Start-up time is attach time: import only the command being run.
    command = argv[0] if argv and argv[0] in COMMANDS else None
    after_dashes = None
    if command in TAKES_A_COMMAND and "--" in argv:
        # Everything after the first "--" is the agent's command line, untouched, and the
        # options before it may come before or after NAME.
        cut = argv.index("--")
        argv, after_dashes = argv[:cut], argv[cut + 1 :]
    try:
        # Every SUPERV_* variable is checked here, before anything starts (a daemon or a
        # worker started from here inherits them; parsers take defaults from them): one
        # line naming the bad one.
        settings.check()
    except settings.SettingError as exc:
        sys.stderr.write(f"superv: {exc}\n")
        return 2
    _Parser.command = command
    args = build_parser(command).parse_args(argv)
    if after_dashes is not None:
        args.agent_command = (args.agent_command or []) + after_dashes
    try:
        return int(args._run(args) or 0)
    except CliError as exc:
        sys.stderr.write(f"superv: {exc}\n")
        return exc.code
    except KeyboardInterrupt:
        return 130
    except PermissionError as exc:
        from supervisor.sessions import permission_denied

        sys.stderr.write(f"superv: {permission_denied(exc.filename or exc.strerror)}\n")
        return 1
    except BrokenPipeError:
        if not _stdout_gone():
            # A socket, not our reader, went away: a supervisor or worker that refused us
            # or died.  Silence and exit 0 would pass for success.
            sys.stderr.write("superv: the other end closed the connection\n")
            return 1
        # Whoever reads our output stopped reading (| head): that is a normal end.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def _stdout_gone() -> bool:
    """True if nobody reads our stdout any more (its pipe or socket reports an error)."""
    poller = select.poll()
    try:
        poller.register(sys.stdout.fileno(), select.POLLOUT)
    except (OSError, ValueError):
        return True
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))


if __name__ == "__main__":
    sys.exit(main())
