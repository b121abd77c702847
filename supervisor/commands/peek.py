"""``superv peek NAME``: the session's current screen as text, without attaching."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from agent_worker import paths
from agent_worker import protocol as p
from agent_worker.log import LogReader
from supervisor.errors import CliError
from supervisor.replay import session_facts
from supervisor.sessions import NotRunning, checked_name, open_worker

if TYPE_CHECKING:
    from agent_worker.screen import ScreenModel


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("peek", help="print a session's current screen")
    parser.add_argument("name", metavar="[[USER@]HOST:]NAME")
    return parser


def run(args: argparse.Namespace) -> int:
    from agent_worker.screen import ScreenModel

    if ":" in args.name:
        from supervisor.remote_run import run_remote

        where, _, name = args.name.rpartition(":")
        return run_remote(where, ["peek", checked_name(name)])
    name = checked_name(args.name)
    try:
        conn, welcome = open_worker(name, p.Hello(p.Start.SCREEN, read_only=True))
    except NotRunning:
        print(ended_screen(name).text())
        return 0
    with conn:
        model = ScreenModel(welcome.info["rows"], welcome.info["cols"])
        while True:
            msg = conn.receive()
            if isinstance(msg, p.Screen | p.Output):
                model.feed(msg.data)
                if isinstance(msg, p.Screen):
                    break
            elif isinstance(msg, p.Error):
                raise CliError(f"session {name}: {msg.message}")
        conn.send(p.Detach())
    print(model.text())
    return 0


def ended_screen(name: str) -> ScreenModel:
    """The last screen of a session whose worker is gone, rebuilt from its log."""
    from agent_worker.screen_from_log import screen_at

    facts = session_facts(name)
    reader = LogReader(paths.session_dir(name))
    try:
        model, _ = screen_at(reader, reader.size(), facts["rows"], facts["cols"])
    finally:
        reader.close()
    return model
