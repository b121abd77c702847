"""``superv prune [--older-than 30d]``: forget old ended sessions, and any that never printed."""

from __future__ import annotations

import argparse

from supervisor import control
from supervisor.durations import parse_duration


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("prune", help="forget old ended sessions and those that printed nothing")
    parser.add_argument("--older-than", type=parse_duration, default=parse_duration("30d"),
                        metavar="DURATION", help="e.g. 30d, 12h, 90m (default 30d)")
    return parser


def run(args: argparse.Namespace) -> int:
    removed = control.request("prune", older_than=args.older_than)["removed"]
    for name in removed:
        print(f"removed {name}")
    return 0
