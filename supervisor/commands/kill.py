"""``superv kill [-s SIG] [HOST:]NAME``: send a signal to the agent."""

from __future__ import annotations

import argparse
import signal

from agent_worker import protocol as p
from supervisor.errors import CliError
from supervisor.sessions import checked_name, open_worker, refuse_ended


def parse_signal(text: str) -> int:
    name = text.upper()
    if name.isdigit():
        number = int(name)
    else:
        name = name if name.startswith("SIG") else "SIG" + name
        try:
            number = signal.Signals[name]
        except KeyError:
            raise argparse.ArgumentTypeError(f"unknown signal {text!r}") from None
    try:
        return signal.Signals(number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"unknown signal {text!r}") from None


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("kill", help="send a signal to a session's agent")
    parser.add_argument("-s", "--signal", type=parse_signal, default=signal.SIGTERM,
                        help="signal name or number (default TERM)")
    parser.add_argument("name", metavar="[[USER@]HOST:]NAME")
    return parser


def run(args: argparse.Namespace) -> int:
    if ":" in args.name:
        from supervisor.remote_run import run_on_host

        # By number: the same signal whatever the spelling given here.
        return run_on_host(args.name, ["kill", "-s", str(int(args.signal))])
    conn, welcome = open_worker(checked_name(args.name), p.Hello(p.Start.WATCH))
    with conn:
        refuse_ended(args.name, welcome)
        try:
            conn.send(p.Signal(int(args.signal)))
            conn.send(p.Detach())
        except OSError as exc:
            raise CliError(f"cannot signal {args.name}: {exc}") from None
    return 0
