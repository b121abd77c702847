"""``superv peek NAME``: the session's current screen as text, without attaching."""

from __future__ import annotations

import argparse

from agent_worker import paths
from agent_worker import protocol as p
from agent_worker.snapshot import read_snapshot
from supervisor.errors import CliError
from supervisor.sessions import checked_name, open_worker, session_directory

ENDED_WINDOW = 256 * 1024  # how much of an ended session's log rebuilds its last screen


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("peek", help="print a session's current screen")
    parser.add_argument("name")
    return parser


def run(args: argparse.Namespace) -> int:
    from agent_worker.screen import ScreenModel

    name = checked_name(args.name)
    directory = session_directory(name)
    try:
        conn, welcome = open_worker(name, p.Hello(p.Start.SCREEN, read_only=True))
    except CliError:
        # Not running: rebuild its last screen from the end of its log.
        rows, cols = 24, 80
        try:
            snap, _ = read_snapshot(directory)
            rows, cols = snap.rows, snap.cols
        except Exception:
            pass
        model = ScreenModel(rows, cols)
        log_file = paths.session_dir(name) / "output.log"
        with open(log_file, "rb") as f:
            size = f.seek(0, 2)
            f.seek(max(0, size - ENDED_WINDOW))
            model.feed(f.read())
        print(model.text())
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
