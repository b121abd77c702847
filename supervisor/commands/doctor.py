"""``superv doctor [--json]``: check this box for everything that would kill or lose sessions.

Lingering, logind's KillUserProcesses, the privacy of the socket and state directories,
free disk, a supervisor that is down or of another version, stale sockets, versions.
Exit 0 when every check passes, 1 otherwise; each problem is one line saying what to do.
The checks themselves live in :mod:`supervisor.health`, as data.
"""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("doctor", help="check the box for what would kill or lose sessions")
    parser.add_argument("--json", action="store_true",
                        help="print a JSON list of checks {name, ok, detail, fix}")
    return parser


def run(args: argparse.Namespace) -> int:
    from supervisor.health import run_checks

    checks = run_checks()
    if args.json:
        print(json.dumps([c.to_json() for c in checks], indent=1))
    else:
        for c in checks:
            if c.ok:
                print(f"ok    {c.name}: {c.detail}")
            else:
                print(f"FAIL  {c.name}: {c.detail} -> {c.fix}")
        failed = sum(not c.ok for c in checks)
        print(f"{failed} problem(s) found" if failed else "all checks passed")
    return 0 if all(c.ok for c in checks) else 1
