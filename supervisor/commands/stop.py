"""``superv stop NAME``: SIGTERM to the agent, SIGKILL after a grace period."""

from __future__ import annotations

import argparse

from supervisor import control
from supervisor.sessions import checked_name


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("stop", help="stop a session's agent (TERM, then KILL)")
    parser.add_argument("--grace", type=float, default=10.0, metavar="SECONDS",
                        help="how long to wait after SIGTERM before SIGKILL (default 10)")
    parser.add_argument("name")
    return parser


def run(args: argparse.Namespace) -> int:
    reply = control.request("stop", name=checked_name(args.name), grace=args.grace)
    print(f"{args.name}: {reply['state']}")
    return 0
