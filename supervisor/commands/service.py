"""``superv service``: being built (issue 5)."""

from __future__ import annotations

import argparse

from supervisor.errors import CliError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("service", help="(not built yet)")
    parser.add_argument("args", nargs="*")
    return parser


def run(args: argparse.Namespace) -> int:
    raise CliError("superv service is not built yet")
