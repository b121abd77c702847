"""The one reader of ``/proc``: a process's state, parent and start time (``stat``), and
which processes carry a variable in their environment (how tests and benches find every
process a run started, however it was detached).

A pid alone can be reused by an unrelated process after a crash or reboot; pid plus start
time names one process for the life of the machine.  The command name (field 2) may hold
spaces and parentheses, so the fields are split after the *last* ``)``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple


class ProcStat(NamedTuple):
    state: str  # R, S, D, Z (zombie), X (dead), T, ...
    ppid: int
    start_time: int  # clock ticks since boot (field 22)

    @property
    def running(self) -> bool:
        """Alive and not a zombie: a zombie keeps its pid and start time but runs nothing."""
        return self.state not in ("Z", "X")


def read_stat(pid: int) -> ProcStat | None:
    """``pid``'s stat line, or None if there is no such process (or it cannot be read)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    fields = raw[raw.rindex(b")") + 2 :].split()
    return ProcStat(fields[0].decode(), int(fields[1]), int(fields[19]))


def process_start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot, or None if it is gone."""
    stat = read_stat(pid)
    return stat.start_time if stat else None


def is_running(pid: int) -> bool:
    """True if ``pid`` is a live process (a zombie counts as gone)."""
    stat = read_stat(pid)
    return stat is not None and stat.running


def pids_with_env(key: str, value: str) -> list[int]:
    """Pids of this user's processes whose environment has ``key=value`` (not ours)."""
    needle = f"{key}={value}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            found.append(int(entry))
    return found
