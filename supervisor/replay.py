"""An ended session served from its files, the way its worker would have served it.

A worker lingers only a moment after its agent ends.  A client that comes later (a remote
attach reconnecting after a long outage, a local attach, ``peek``) still gets what it asked
for, from the log: the final screen or the output from its offset, then the exit event.
So a reconnect after any outage loses nothing, and the user learns how the session ended.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from agent_worker import paths
from agent_worker import protocol as p
from agent_worker.conversation import Exited, SessionInfo
from agent_worker.log import LogReader
from agent_worker.snapshot import read_snapshot
from supervisor.registry import state_from_files


def session_facts(name: str) -> dict[str, Any]:
    directory = paths.session_dir(name)
    facts: dict[str, Any] = {"name": name, "state": "ended", "rows": 24, "cols": 80,
                             "exit_code": None, "exit_signal": None, "dir": str(directory)}
    try:
        snap, _ = read_snapshot(directory)
    except Exception:
        return facts
    facts.update(state=state_from_files(snap), rows=snap.rows, cols=snap.cols,
                 exit_code=snap.exit_code, exit_signal=snap.exit_signal)
    return facts


def ended_messages(
    name: str, hello: p.Hello
) -> Iterator[SessionInfo | p.Screen | p.Output | Exited]:
    """The conversation's events as the worker would send them: the session's info, then
    Screen and/or Output as ``hello`` asks, then how it ended."""
    facts = session_facts(name)
    reader = LogReader(paths.session_dir(name))
    try:
        end = reader.size()
        yield SessionInfo.from_dict({**facts, "log_end": end, "ended": True})
        if hello.start == p.Start.SCREEN:
            from agent_worker.screen_from_log import screen_at

            model, _ = screen_at(reader, end, facts["rows"], facts["cols"])
            yield p.Screen(end, model.render(last=True))  # where it stays: the attach ends
            pos = end
        elif hello.start == p.Start.TAIL:
            pos = reader.tail_offset(hello.value, end)
        else:
            pos = min(hello.value, end)
        while pos < end and hello.start != p.Start.WATCH:
            data = reader.read(pos, min(end - pos, p.MAX_OUTPUT_CHUNK))
            if not data:
                break
            yield p.Output(pos, data)
            pos += len(data)
        yield Exited(facts["state"], facts["exit_code"], facts["exit_signal"], end)
    finally:
        reader.close()
