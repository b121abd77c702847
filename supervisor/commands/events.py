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
    return parser


def run(args: argparse.Namespace) -> int:
    if args.where is not None:
        from supervisor.remote_run import run_remote

        if not args.where.endswith(":"):
            raise CliError(f"cannot read {args.where!r}: write [USER@]HOST: (with the colon)", 2)
        return run_remote(args.where[:-1], ["events", *(["--json"] if args.json else [])])
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
