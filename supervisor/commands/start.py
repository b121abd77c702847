"""``superv start [-a] [--agent KIND] [--cwd DIR] [--env K=V]... [--restart P] [--resume-cmd CMD]
NAME -- CMD``"""

from __future__ import annotations

import argparse
import os

from agent_worker.agent_kinds import CHOICES
from agent_worker.screen_size import get_window_size
from agent_worker.spec import cwd_problem
from supervisor import control
from supervisor.errors import CliError
from supervisor.sessions import checked_name


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("start", help="start a session",
                            usage="%(prog)s [options] NAME -- CMD [ARG...]")
    parser.add_argument("-a", "--attach", action="store_true", help="attach at once")
    parser.add_argument("--agent", choices=CHOICES, default="auto", metavar="KIND",
                        help="the agent's kind: " + ", ".join(CHOICES) + " (default: auto, from the command)")
    parser.add_argument("--cwd", help="working directory (default: this one)")
    parser.add_argument("--env", action="append", default=[], metavar="K=V",
                        help="set an environment variable for the agent (repeatable)")
    parser.add_argument("--restart", choices=["no", "on-failure", "always"], default="no")
    parser.add_argument("--resume-cmd", metavar="CMD",
                        help="what 'superv resume' runs instead, e.g. 'claude --continue'")
    # Optional for argparse only: a required NAME missing (``start -x -- CMD``) was reported
    # before the unknown option, as "arguments are required"; run() asks for it instead.
    parser.add_argument("name", nargs="?")
    # The command normally comes after "--" (see supervisor.cli.main); without "--", the
    # words after NAME, as long as none looks like an option.
    parser.add_argument("agent_command", nargs="*", metavar="-- CMD [ARG...]")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.name is None:
        raise CliError("no session name given: superv start NAME -- CMD [ARG...]", 2)
    name = checked_name(args.name)
    command = args.agent_command
    if not command:
        raise CliError("no command given: superv start NAME -- CMD [ARG...]", 2)
    overrides = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--env {item!r}: use --env KEY=VALUE", 2)
        overrides[key] = value
    cwd = os.path.abspath(args.cwd) if args.cwd else os.getcwd()
    if (problem := cwd_problem(cwd)) is not None:
        raise CliError(problem, 2)
    rows, cols = get_window_size(0) if os.isatty(0) else (24, 80)
    try:
        reply = control.request(
            "start", name=name, argv=command, cwd=cwd, env=dict(os.environ),
            env_overrides=overrides, restart=args.restart, resume_cmd=args.resume_cmd,
            agent=args.agent,
            rows=rows, cols=cols,
        )
    except control.TooLarge as exc:
        raise CliError(f"{exc}: the command, this environment and the --env values are too "
                       "large together; pass large values in a file instead", 2) from None
    if args.attach:
        from supervisor.commands.attach import attach_local

        return attach_local(name)
    print(f"started {name} (agent pid {reply['agent_pid']}): superv attach {name}")
    return 0
