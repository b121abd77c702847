"""What a session is asked to run: the spec the supervisor writes and the worker reads.

``spec.json`` in the session directory is written once per start (atomically) by whoever
starts the worker; the worker only reads it.  Restart policy and resume command live here
too, so that ``superv resume`` after a reboot finds everything it needs on disk.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import attrs

from agent_worker import agent_kinds, session_files
from agent_worker.records import JsonRecord

RESTART_POLICIES = ("no", "on-failure", "always")

# Markers of the program that started superv, which must not leak into the agent.  The
# agents' own session markers are agent_kinds.MARKERS (an agent that inherits another
# agent's session markers writes its transcript into that session, or nowhere);
# terminal-multiplexer and systemd variables would point at the wrong host.
SCRUBBED_ENV = frozenset(
    {
        "TMUX",
        "TMUX_PANE",
        "STY",
        "WINDOW",
        "NOTIFY_SOCKET",
        "LISTEN_FDS",
        "LISTEN_PID",
        "LISTEN_FDNAMES",
        "INVOCATION_ID",
        "JOURNAL_STREAM",
        "WATCHDOG_PID",
        "WATCHDOG_USEC",
        "SUPERV_SESSION",
    }
)


def cwd_problem(cwd: str) -> str | None:
    """Why a session cannot run in ``cwd`` (one line), or None."""
    if os.path.isdir(cwd):
        return None
    why = "is not a directory" if os.path.exists(cwd) else "does not exist"
    return f"working directory {cwd} {why}"


def agent_environment(base: dict[str, str], overrides: dict[str, str], name: str) -> dict[str, str]:
    """The environment an agent starts with: the caller's, scrubbed, plus ``--env``."""
    env = {k: v for k, v in agent_kinds.without_markers(base).items() if k not in SCRUBBED_ENV}
    env.update(overrides)
    env.setdefault("TERM", "xterm-256color")
    env["SUPERV_SESSION"] = name
    return env


@attrs.frozen
class SessionSpec(JsonRecord):
    name: str
    argv: list[str]
    cwd: str
    env: dict[str, str]
    restart: str = attrs.field(default="no", validator=attrs.validators.in_(RESTART_POLICIES))
    resume_cmd: str | None = None
    # What ``superv resume`` last ran instead of ``argv`` (its --resume-cmd): the worker
    # runs this when set, and ``argv`` stays the command the session was started with.
    resumed_argv: list[str] | None = None
    agent: str = "generic"  # the agent's kind (agent_kinds.KINDS), resolved at start
    rows: int = 24
    cols: int = 80
    created_at: float = attrs.Factory(time.time)


    @property
    def command(self) -> list[str]:
        """What this run of the session executes."""
        return self.resumed_argv or self.argv

    def write(self, directory: Path) -> None:
        session_files.write_spec(directory, self)

    @classmethod
    def load(cls, directory: Path) -> SessionSpec:
        """See :func:`agent_worker.session_files.read_spec` (the one reader of spec.json)."""
        return session_files.read_spec(directory)
