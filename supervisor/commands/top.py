"""``superv top`` (and ``superv`` alone on a terminal): the live overview of every session."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return sub.add_parser("top", help="live overview of every session (also: superv alone)")


def run(args: argparse.Namespace) -> int:
    from supervisor.overview.app import run as run_overview

    return run_overview()
