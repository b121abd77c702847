"""``superv rm NAME...``: forget ended sessions and their files."""

from __future__ import annotations

import argparse

from supervisor import control
from supervisor.sessions import checked_name


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("rm", help="forget ended sessions and their files")
    parser.add_argument("names", nargs="+", metavar="NAME")
    return parser


def run(args: argparse.Namespace) -> int:
    for name in args.names:
        control.request("rm", name=checked_name(name))
    return 0
