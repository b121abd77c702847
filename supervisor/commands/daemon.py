"""``superv daemon``: run the supervisor in the foreground (what systemd runs)."""

from __future__ import annotations

import argparse

from supervisor.errors import CliError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("daemon", help="run the supervisor in the foreground")
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    return parser


def run(args: argparse.Namespace) -> int:
    from agent_worker.paths import PathError
    from supervisor.daemon import RequestError, run_daemon

    try:
        run_daemon(args.ready_fd)
    except (RequestError, PathError) as exc:
        raise CliError(str(exc)) from None
    return 0
