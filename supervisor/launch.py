"""Starting a session's worker fully detached from whoever asked for it.

The worker gets its own session (``setsid``): it is not in the caller's process group or
terminal, so a dying SSH connection, a killed login shell or a killed supervisor (even
SIGKILL) never reaches it.  Its stderr goes to ``worker.log`` in the session directory.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from agent_worker import paths
from agent_worker.snapshot import process_start_time

READY_TIMEOUT = 15.0

# The supervisor's own service plumbing must not reach workers or agents.
_NOT_INHERITED = ("NOTIFY_SOCKET", "LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES",
                  "WATCHDOG_PID", "WATCHDOG_USEC", "INVOCATION_ID", "JOURNAL_STREAM")


class LaunchError(Exception):
    """The worker or its agent could not start; the message says why."""


def worker_environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    # Pin the resolved locations: the worker must find the same home and sockets as we do.
    env["SUPERV_HOME"] = str(paths.state_home())
    env["SUPERV_RUNTIME_DIR"] = str(paths.runtime_dir())
    return env


def launch_worker(name: str, marker: str | None = None) -> tuple[int, int, int]:
    """Start the worker for ``name`` (its spec.json is written) and wait until it is ready.

    Returns ``(worker_pid, worker_start_ticks, agent_pid)``; raises LaunchError.  Blocking:
    call it from a thread in async code.
    """
    directory = paths.session_dir(name)
    argv = [sys.executable, "-m", "agent_worker", name]
    if marker:
        argv += ["--marker", marker]
    read_end, write_end = os.pipe()
    with open(directory / "worker.log", "ab") as worker_log:
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=write_end,
                stderr=worker_log,
                env=worker_environment(),
                cwd="/",
                start_new_session=True,
                close_fds=True,
            )
        finally:
            os.close(write_end)
    try:
        line = _read_line(read_end, READY_TIMEOUT)
    finally:
        os.close(read_end)
    # The worker is ours until we stop caring: the caller reaps it via its pidfd watcher.
    proc.returncode = 0
    try:
        ready = json.loads(line) if line else {}
    except ValueError:
        ready = {}
    if not ready.get("ok"):
        error = ready.get("error") or _last_line(directory / "worker.log") or "worker did not start"
        raise LaunchError(error)
    start = process_start_time(proc.pid) or 0
    return proc.pid, start, int(ready["agent_pid"])


def _read_line(fd: int, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise LaunchError(f"worker did not report ready within {timeout:.0f} s")
        readable, _, _ = select.select([fd], [], [], left)
        if not readable:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0]


def _last_line(path: Path) -> str | None:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return None
    return lines[-1] if lines else None
