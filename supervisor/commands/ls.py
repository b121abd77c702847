"""``superv ls [--json]``: every session with its state."""

from __future__ import annotations

import argparse
import json
import shlex
import time
from typing import Any

from supervisor import control


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("ls", help="list sessions")
    parser.add_argument("--json", action="store_true", help="one JSON array, for scripts")
    parser.add_argument("where", nargs="?", metavar="[USER@]HOST:", help="list the sessions on another box")
    return parser


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def run(args: argparse.Namespace) -> int:
    if args.where is not None:
        from supervisor.errors import CliError
        from supervisor.remote_run import run_remote

        if not args.where.endswith(":"):
            raise CliError(f"cannot read {args.where!r}: write [USER@]HOST: (with the colon)", 2)
        return run_remote(args.where[:-1], ["ls", *(["--json"] if args.json else [])])
    sessions: list[dict[str, Any]] = control.request("ls")["sessions"]
    if args.json:
        print(json.dumps(sessions, indent=1))
        return 0
    if not sessions:
        print("no sessions: superv start NAME -- CMD")
        return 0
    now = time.time()
    rows = [("NAME", "STATE", "ACTIVITY", "PID", "AGE", "CLIENTS", "IDLE", "COMMAND")]
    for s in sorted(sessions, key=lambda s: s["created"] or 0):
        problem = s.get("problem")
        running = s["state"] in ("running", "starting")
        rows.append((
            s["name"], "unreadable" if problem and not running else s["state"],
            s.get("activity") or "unknown",
            str(s["agent_pid"] or "-"),
            human_duration(now - s["created"] if s["created"] else None),
            str(s["clients"]),
            human_duration(now - s["last_output"] if s["last_output"] else None),
            f"({problem}: superv doctor)" if problem else shlex.join(s["command"]),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
    return 0
