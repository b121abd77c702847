"""The ``superv`` command line: argument parsing and error reporting, nothing else.

Each command lives in its own module under :mod:`supervisor.commands` (the way tmux keeps
one file per command) and exposes ``add_parser(subparsers)`` and ``run(args) -> int``.
Command modules import only the standard library at import time, so that short commands
(``ls``, ``attach``, ``send``) start fast; heavy imports (trio, asyncssh) happen inside
``run`` of the commands that need them.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from supervisor.errors import CliError

COMMANDS = [
    "start", "ls", "attach", "logs", "peek", "send", "stop", "kill", "resume", "rm",
    "prune", "export", "events", "daemon", "service", "doctor",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, exit 2, as for every usage error.
        sys.stderr.write(f"superv: {message} (see 'superv {self._sub_name()}--help')\n")
        raise SystemExit(2)

    def _sub_name(self) -> str:
        parts = self.prog.split()[1:]
        return "".join(p + " " for p in parts)


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
    # Start-up time is attach time: import only the command being run.
    command = argv[0] if argv and argv[0] in COMMANDS else None
    args = build_parser(command).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except CliError as exc:
        sys.stderr.write(f"superv: {exc}\n")
        return exc.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
