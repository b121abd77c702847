"""``superv send [--enter] [HOST:]NAME TEXT...``: type input into a session."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from agent_worker import protocol as p
from supervisor.errors import CliError
from supervisor.sessions import checked_name, open_worker, refuse_ended


class _Intermixed(argparse.ArgumentParser):
    """Options anywhere among the words: ``superv send NAME --enter TEXT`` works too.

    (Plain argparse ends the ``text`` list at the first option; ``--`` still makes
    everything after it words, for text that starts with a dash.)
    """

    _mixing = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._mixing:  # parse_known_intermixed_args calls back in here
            return super().parse_known_args(args, namespace)
        self._mixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._mixing = False


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("send", help="type text into a session")
    parser.__class__ = type("SendParser", (_Intermixed, parser.__class__), {})
    parser.add_argument("--enter", action="store_true", help="press Enter after the text")
    parser.add_argument("name", metavar="[[USER@]HOST:]NAME")
    parser.add_argument("text", nargs="*", help="words, joined by spaces")
    return parser


def run(args: argparse.Namespace) -> int:
    # Python decoded argv with os.fsdecode: bytes that are not UTF-8 arrive as surrogate
    # escapes, and os.fsencode gives back exactly the bytes the user gave, to be typed.
    data = os.fsencode(" ".join(args.text))
    if args.enter:
        data += b"\r"  # what a terminal sends for the Enter key
    if not data:
        raise CliError("nothing to send: give TEXT or --enter", 2)
    if ":" in args.name:
        from supervisor.remote_run import run_on_host

        # "--" so that text starting with a dash stays text on the box too.
        return run_on_host(args.name, ["send", *(["--enter"] if args.enter else [])],
                           ["--", *args.text])
    conn, welcome = open_worker(checked_name(args.name), p.Hello(p.Start.WATCH))
    with conn:
        refuse_ended(args.name, welcome)
        try:
            for start in range(0, len(data), p.MAX_OUTPUT_CHUNK):
                conn.send(p.Input(data[start : start + p.MAX_OUTPUT_CHUNK]))
            conn.send(p.Detach())
        except OSError as exc:
            raise CliError(f"cannot send to {args.name}: {exc}") from None
    return 0
