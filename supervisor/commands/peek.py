"""``superv peek NAME``: the session's current screen as text, without attaching."""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import TYPE_CHECKING

from agent_worker import paths
from agent_worker import protocol as p
from agent_worker.conversation import Closed, Exited, Failed, LocalProtocolError, Violation
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
        from supervisor.remote_run import run_on_host

        return run_on_host(args.name, ["peek"])
    name = checked_name(args.name)
    try:
        conn, info = open_worker(name, p.Hello(p.Start.SCREEN, read_only=True))
    except NotRunning:
        print(ended_screen(name).text())
        return 0
    with conn:
        model = ScreenModel(info.rows, info.cols)
        while True:
            event = conn.next_event()
            if isinstance(event, p.Screen | p.Output):
                model.feed(event.data)
                # No Screen means the worker had no model to paint: its recent lines up
                # to the moment we asked are what it shows instead.
                position = conn.conversation.position or 0
                if isinstance(event, p.Screen) or position >= info.log_end:
                    break
            elif isinstance(event, Exited | Closed):
                break  # no screen from the worker (its model failed): what it streamed
            elif isinstance(event, Failed | Violation):
                raise CliError(f"session {name}: {event.message}")
        with contextlib.suppress(OSError, LocalProtocolError):
            conn.send(p.Detach())
    print(model.text())
    if info.held is not None:  # a frozen screen: say why, beside it (stdout stays the screen)
        from supervisor.notify import message

        print(f"superv: {message.held(name, info.held)}", file=sys.stderr)
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
