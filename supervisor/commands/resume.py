"""``superv resume [HOST:]NAME``: run an ended or interrupted session again in the same place."""

from __future__ import annotations

import argparse

from supervisor import control
from supervisor.sessions import checked_name


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("resume", help="start an ended session again (with its --resume-cmd)")
    parser.add_argument("-a", "--attach", action="store_true", help="attach at once")
    parser.add_argument("name", metavar="[[USER@]HOST:]NAME")
    return parser


def run(args: argparse.Namespace) -> int:
    if ":" in args.name:
        from supervisor.remote_run import run_on_host

        status = run_on_host(args.name, ["resume"])
        if status != 0 or not args.attach:
            return status
        from supervisor import cli

        return cli.main(["attach", args.name])  # the remote attach, reconnecting
    name = checked_name(args.name)
    reply = control.request("resume", name=name)
    # activity: say whether the agent's conversation continues, and if not, why not
    if reply.get("continues"):
        print(f"continuing conversation {reply['continues']}")
    elif reply.get("note"):
        print(f"starting afresh: {reply['note']}")
    if args.attach:
        from supervisor.commands.attach import attach_local

        return attach_local(name)
    print(f"resumed {name}: superv attach {name}")
    return 0
