"""``superv events [--json]``: a live stream of lifecycle events from the supervisor."""

from __future__ import annotations

import argparse
import json
import time

from agent_worker import protocol as p
from agent_worker.client import ConnectionClosed
from supervisor import control
from supervisor.errors import CliError


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
        try:
            while True:
                msg = conn.receive()
                if not isinstance(msg, p.Event):
                    continue
                body = msg.body
                if args.json:
                    line = json.dumps(body)
                else:
                    stamp = time.strftime("%H:%M:%S", time.localtime(body.get("time", 0)))
                    extra = " ".join(f"{k}={v}" for k, v in body.items()
                                     if k not in ("event", "session", "time") and v is not None)
                    line = f"{stamp} {body.get('session', '')} {body.get('event')} {extra}".rstrip()
                print(line, flush=True)
        except ConnectionClosed:
            raise CliError("the supervisor went away") from None
        except KeyboardInterrupt:
            return 0
    return 0


def _follow_with_lists() -> int:
    """Events and, in the same stream, the supervisor's lists: one at the start, one for each
    line on stdin (the overview asks when its rows may be stale)."""
    import os
    import selectors

    from supervisor.event_stream import read_ready

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
        # The first list may have come with the answer, already read from the socket.
        for body in (m.body for m in conn.decoder if isinstance(m, p.Event)):
            print(json.dumps(body), flush=True)
        selector = selectors.DefaultSelector()
        selector.register(conn.sock, selectors.EVENT_READ, "events")
        selector.register(0, selectors.EVENT_READ, "asks")
        try:
            while True:
                for key, _ in selector.select():
                    if key.data == "asks":
                        asked = os.read(0, 4096)
                        if not asked:
                            return 0  # the overview is gone
                        for _line in range(asked.count(b"\n")):
                            conn.send(p.Request({"op": "ls"}))
                        continue
                    bodies = read_ready(conn)
                    if bodies is None:
                        raise CliError("the supervisor went away")
                    for body in bodies:
                        print(json.dumps(body), flush=True)
        except KeyboardInterrupt:
            return 0
        except (BrokenPipeError, OSError) as exc:
            raise CliError(f"the supervisor went away ({exc})") from None
