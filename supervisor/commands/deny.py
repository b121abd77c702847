"""``superv deny [HOST:]NAME``: refuse a session's pending approval; Claude goes on, told so.

The twin of :mod:`supervisor.commands.approve`, which does the work.
"""

from __future__ import annotations

import argparse

from supervisor.commands.approve import add_answer_parser, run

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return add_answer_parser(sub, "deny")
