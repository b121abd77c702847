"""``superv logs [-f] [--plain] [--since DURATION] NAME``: what the session printed.

Read from the durable log, so it works for ended sessions and while the supervisor is
down; ``-f`` then follows the live stream from the worker, from exactly where the file
ended, so nothing is shown twice or skipped.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from typing import BinaryIO

from agent_worker import protocol as p
from agent_worker.client import SessionClient
from agent_worker.conversation import Closed, Exited, Failed, Violation
from agent_worker.log import LogReader
from supervisor.durations import parse_duration
from supervisor.errors import CliError
from supervisor.plain import PlainText
from supervisor.sessions import checked_name, open_worker, session_directory

CHUNK = 1 << 20


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("logs", help="print what a session printed")
    parser.add_argument("-f", "--follow", action="store_true", help="keep printing new output")
    parser.add_argument("--plain", action="store_true", help="strip terminal escapes")
    parser.add_argument("--since", type=parse_duration, metavar="DURATION",
                        help="only output from the last DURATION (e.g. 10m, 2h)")
    parser.add_argument("name", metavar="[[USER@]HOST:]NAME")
    return parser


def run(args: argparse.Namespace) -> int:
    if ":" in args.name:
        return remote(args)
    name = checked_name(args.name)
    reader = LogReader(session_directory(name))
    out = sys.stdout.buffer
    plain = PlainText() if args.plain else None

    def emit(data: bytes, final: bool = False) -> None:
        out.write(plain.feed(data, final) if plain else data)

    pos = reader.offset_at(time.time() - args.since) if args.since is not None else 0
    end = reader.size()
    while pos < end:
        data = reader.read(pos, min(CHUNK, end - pos))
        if not data:
            break
        emit(data)
        pos += len(data)
    out.flush()
    if args.follow:
        try:
            conn, _ = open_worker(name, p.Hello(p.Start.OFFSET, pos, read_only=True))
        except CliError as exc:
            print(f"superv: not following: {exc}", file=sys.stderr)
        else:
            with conn:
                _follow(conn, emit, out)
    emit(b"", final=True)
    out.flush()
    reader.close()
    return 0


def remote(args: argparse.Namespace) -> int:
    """``superv logs ... HOST:NAME``: the box's own superv reads the box's log."""
    from supervisor.remote_run import run_on_host

    words = ["logs", *(["-f"] if args.follow else []), *(["--plain"] if args.plain else [])]
    if args.since is not None:
        words += ["--since", str(args.since)]
    return run_on_host(args.name, words)


def _follow(conn: SessionClient, emit: Callable[[bytes], None], out: BinaryIO) -> None:
    conn.sock.settimeout(None)
    try:
        while True:
            event = conn.next_event()
            if isinstance(event, p.Output):
                emit(event.data)
                out.flush()
            elif isinstance(event, Exited | Closed):
                return
            elif isinstance(event, Failed | Violation):
                raise CliError(event.message)
    except KeyboardInterrupt:
        os.write(2, b"\n")
