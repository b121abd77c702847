"""``superv events [--json]``: a live stream of lifecycle events from the supervisor."""

from __future__ import annotations

import argparse
import json
import os
import selectors
import stat
import time
from collections.abc import Callable
from typing import Any

from agent_worker import protocol as p
from agent_worker.client import Connection
from supervisor import control
from supervisor.errors import CliError
from supervisor.event_stream import read_ready


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("events", help="follow lifecycle events (started, exited, ...)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument("where", nargs="?", metavar="[USER@]HOST:",
                        help="follow another box's events, over SSH")
    # The overview's remote feed (supervisor.overview.hosts): the sessions first, then a
    # fresh list in the stream for each line read on stdin; ends at stdin's end.
    parser.add_argument("--lists", action="store_true", help=argparse.SUPPRESS)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.where is not None:
        from supervisor.remote_run import run_remote

        if not args.where.endswith(":"):
            raise CliError(f"cannot read {args.where!r}: write [USER@]HOST: (with the colon)", 2)
        words = ["events", *(["--json"] if args.json else []), *(["--lists"] if args.lists else [])]
        return run_remote(args.where[:-1], words, forward_stdin=args.lists)
    if args.lists:
        if not args.json:
            raise CliError("--lists goes with --json", 2)
        return _follow_with_lists()
    conn = control.connect()
    with conn:
        conn.sock.settimeout(None)
        control.send_first(conn, p.Request({"op": "events"}))
        return _follow(conn, lambda body: print(_line(body, args.json), flush=True))


def _line(body: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(body)
    stamp = time.strftime("%H:%M:%S", time.localtime(body.get("time", 0)))
    extra = " ".join(f"{k}={v}" for k, v in body.items()
                     if k not in ("event", "session", "time") and v is not None)
    return f"{stamp} {body.get('session', '')} {body.get('event')} {extra}".rstrip()


def _follow(conn: Connection, show: Callable[[dict[str, Any]], None], asks: bool = False) -> int:
    """Show each event until the supervisor goes (CliError), or whoever reads our output
    does: a pipe or socket on stdout reports its reader's end, and a box's events command
    whose SSH channel closed would otherwise linger until the next event came.  ``asks``:
    a line on stdin asks for a list (the overview's feed), its end ends the stream."""
    selector = selectors.DefaultSelector()
    selector.register(conn.sock, selectors.EVENT_READ, "events")
    if stat.S_ISFIFO(os.fstat(1).st_mode) or stat.S_ISSOCK(os.fstat(1).st_mode):
        selector.register(1, selectors.EVENT_READ, "reader")  # only its end is reported
    if asks:
        selector.register(0, selectors.EVENT_READ, "asks")
    try:
        # What came with the answer, already read from the socket (the first list).
        for body in (m.body for m in conn.decoder if isinstance(m, p.Event)):
            show(body)
        while True:
            for key, _ in selector.select():
                if key.data == "reader":
                    return 0
                if key.data == "asks":
                    asked = os.read(0, 4096)
                    if not asked:
                        return 0  # the overview is gone
                    for _line_asked in range(asked.count(b"\n")):
                        conn.send(p.Request({"op": "ls"}))
                    continue
                bodies = read_ready(conn)
                if bodies is None:
                    raise CliError("the supervisor went away")
                for body in bodies:
                    show(body)
    except (KeyboardInterrupt, BrokenPipeError):
        return 0
    except OSError as exc:
        raise CliError(f"the supervisor went away ({exc})") from None


def _follow_with_lists() -> int:
    """Events and, in the same stream, the supervisor's lists: one at the start, one for each
    line on stdin (the overview asks when its rows may be stale)."""
    conn = control.connect()
    with conn:
        conn.sock.settimeout(None)
        answer = control.send_first(conn, p.Request({"op": "events", "lists": True}))
        if not (isinstance(answer, p.Reply) and answer.body.get("lists") is True):
            from supervisor.daemon import lock_file
            # The README's "Upgrading": there is no stop command.
            raise CliError("this box's supervisor predates events --lists: restart it "
                           "(systemctl --user restart superv, or kill "
                           f"$(cat {lock_file()}); any superv command starts it again)")
        return _follow(conn, lambda body: print(json.dumps(body), flush=True), asks=True)
