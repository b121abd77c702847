"""``superv stop [HOST:]NAME``: SIGTERM to the agent, SIGKILL after a grace period."""

from __future__ import annotations

import argparse

from supervisor import control
from supervisor.lifecycle import MAX_STOP_GRACE, check_grace
from supervisor.sessions import checked_name


def grace_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"stop grace {text!r} is not a number of seconds") from None
    try:
        return check_grace(seconds)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("stop", help="stop a session's agent (TERM, then KILL)")
    parser.add_argument("--grace", type=grace_seconds, default=10.0, metavar="SECONDS",
                        help="how long to wait after SIGTERM before SIGKILL "
                             f"(default 10, at most {MAX_STOP_GRACE:.0f})")
    parser.add_argument("name", metavar="[[USER@]HOST:]NAME")
    return parser


def run(args: argparse.Namespace) -> int:
    if ":" in args.name:
        from supervisor.remote_run import run_on_host

        return run_on_host(args.name, ["stop", "--grace", repr(args.grace)])
    reply = control.request("stop", name=checked_name(args.name), grace=args.grace)
    print(f"{args.name}: {reply['state']}")
    return 0
