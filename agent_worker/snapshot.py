"""The session's state snapshot, ``state.json``: what the worker knows, made durable.

Written through :mod:`agent_worker.atomic` with the previous copy kept, at least every
``SUPERV_SNAPSHOT_INTERVAL`` seconds and at every change that matters (agent exited,
window resized, client attached or detached).  A reader always gets a complete version:
the newest, or the previous one with a warning if the newest is unreadable.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import attrs

from agent_worker import session_files, settings
from agent_worker.procfs import process_start_time
from agent_worker.records import JsonRecord

__all__ = ["Snapshot", "boot_id", "describe_exit", "process_start_time", "read_snapshot"]

FORMAT = 1


def snapshot_interval() -> float:
    return settings.current().snapshot_interval


def describe_exit(exit_code: int | None, exit_signal: int | None) -> str:
    """``exited N`` / ``killed SIG`` as ``superv ls`` shows it."""
    if exit_signal is not None:
        import signal

        try:
            return f"killed {signal.Signals(exit_signal).name}"
        except ValueError:
            return f"killed {exit_signal}"
    return f"exited {exit_code}"


@attrs.frozen
class Snapshot(JsonRecord):
    name: str
    worker_pid: int
    worker_start: int  # the worker's start time in clock ticks since boot (/proc stat field 22)
    agent_pid: int | None
    argv: list[str]
    cwd: str
    started_at: float
    # The worker's own view: "running", or how its agent ended ("exited N", "killed SIG").
    # The session's state (starting, interrupted, restarting...) is the supervisor's:
    # supervisor/lifecycle.py decides it; registry.state_from_files reads it without one.
    state: str
    exit_code: int | None = None
    exit_signal: int | None = None
    ended_at: float | None = None
    log_end: int = 0
    last_output_at: float | None = None
    rows: int = 24
    cols: int = 80
    clients: list[dict[str, Any]] = attrs.Factory(list)
    seq: int = 0
    boot_id: str = ""  # the boot the worker ran in: pid and start time repeat across boots
    # What the agent is doing and which conversation it holds (agent_worker.activity).
    agent: str = "generic"
    activity: str = "unknown"
    activity_since: float | None = None
    activity_source: str | None = None
    attention: str | None = None
    last_line: str | None = None  # the screen's last non-blank line (ScreenKeeper.last_line)
    conversation_id: str | None = None
    transcript: str | None = None
    written_at: float = attrs.Factory(time.time)
    format: int = FORMAT

    @property
    def running(self) -> bool:
        """The worker's own view: its agent has not ended yet."""
        return self.state == "running"

    def write(self, directory: Path) -> None:
        session_files.write_state(directory, self)


def read_snapshot(directory: Path) -> tuple[Snapshot, str | None]:
    """See :func:`agent_worker.session_files.read_state` (the one reader of state.json)."""
    from agent_worker.session_files import read_state

    return read_state(directory)


def boot_id() -> str:
    """This boot's random id: a process identity from an earlier boot never matches it."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""

