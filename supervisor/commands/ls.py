"""``superv ls [--json]``: every session with its state."""

from __future__ import annotations

import argparse
import json
import shlex
import time
from typing import Any

from supervisor import control
from supervisor.durations import human_duration
from supervisor.visible import visible


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("ls", help="list sessions")
    parser.add_argument("--json", action="store_true", help="one JSON array, for scripts")
    parser.add_argument("where", nargs="?", metavar="[USER@]HOST:", help="list the sessions on another box")
    parser.add_argument("--all", action="store_true",
                        help="this box and every host of the config file, with a HOST column")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="with --all: seconds to wait for each host (default 5)")
    return parser


def run(args: argparse.Namespace) -> int:
    from supervisor.errors import CliError

    if args.all:
        if args.where is not None:
            raise CliError("ls --all lists every host: give no HOST: with it", 2)
        return _run_all(args)
    if args.timeout is not None:
        raise CliError("--timeout is for ls --all", 2)
    if args.where is not None:
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
    _print_table(sessions, None)
    return 0


def _run_all(args: argparse.Namespace) -> int:
    """``ls --all``: this box, then each configured host, asked concurrently."""
    from supervisor import config, fleet
    from supervisor.errors import CliError

    timeout = fleet.HOST_TIMEOUT if args.timeout is None else args.timeout
    if not 0 < timeout <= 3600:
        raise CliError(f"--timeout {args.timeout:g} is not between 0 and 3600 seconds", 2)
    try:
        hosts = config.load().hosts
    except config.ConfigError as exc:
        raise CliError(str(exc)) from None
    own = config.Notify().host  # this box's short host name, as notifications name it
    sessions = [{**s, "host": own} for s in control.request("ls")["sessions"]]
    answers = fleet.gather(hosts, timeout)
    for answer in answers:
        sessions += [{**s, "host": answer.host} for s in answer.sessions]
    if args.json:
        print(json.dumps({"sessions": sessions,
                          "hosts": [{"host": own, "problem": None}] +
                                   [{"host": a.host, "problem": a.problem} for a in answers]},
                         indent=1))
    else:
        unreachable = {a.host: a.problem for a in answers if a.problem}
        _print_table(sessions, [own, *(a.host for a in answers)], unreachable)
    return 0


def _print_table(sessions: list[dict[str, Any]], hosts: list[str] | None,
                 unreachable: dict[str, str] | None = None) -> None:
    """The table; with ``hosts``, a HOST column first and sessions grouped by host, and a
    row for each host in ``unreachable`` saying why it has none to show."""
    now = time.time()
    header = ("NAME", "STATE", "ACTIVITY", "PID", "AGE", "CLIENTS", "IDLE", "COMMAND")
    rows = [(("HOST",) if hosts is not None else ()) + header]
    order = {h: i for i, h in enumerate(hosts or [])}
    for s in sorted(sessions, key=lambda s: (order.get(s.get("host"), 0), s["created"] or 0)):
        problem = s.get("problem")
        running = s["state"] in ("running", "starting")
        rows.append(((s["host"],) if hosts is not None else ()) + (
            s["name"], "unreadable" if problem and not running else s["state"],
            s.get("activity") or "unknown",
            str(s["agent_pid"] or "-"),
            human_duration(now - s["created"] if s["created"] else None),
            str(s["clients"]),
            human_duration(now - s["last_output"] if s["last_output"] else None),
            f"({problem}: superv doctor)" if problem else shlex.join(s["command"]),
        ))
    for host, problem in (unreachable or {}).items():
        rows.append((host, "-", "unreachable", "-", "-", "-", "-", "-", f"({problem})"))
    # Every cell: a command line, a host or a problem can carry escapes and newlines.
    rows = [tuple(visible(c) for c in r) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1])
