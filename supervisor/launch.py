"""Starting a session's worker fully detached from whoever asked for it.

The worker gets its own session (``setsid``): it is not in the caller's process group or
terminal, so a dying SSH connection, a killed login shell or a killed supervisor (even
SIGKILL) never reaches it.  Its stderr goes to ``worker.log`` in the session directory.
"""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import BinaryIO

from agent_worker import paths
from agent_worker.atomic import open_private_log
from agent_worker.session_files import WORKER_LOG
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


class WorkerFactory:
    """The supervisor's handle on :mod:`agent_worker.factory`, which forks workers.

    Forked workers share the factory's loaded interpreter and cost ~4 MB each instead of
    ~25 MB.  If the factory cannot be reached, one is started afresh; if that fails too,
    the worker is started as a fresh interpreter: a start never fails for its sake.
    """

    def __init__(self) -> None:
        self._conn: socket.socket | None = None
        self._lock = threading.Lock()  # launches come from trio's worker threads

    def _start(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        with theirs:
            subprocess.Popen(
                [sys.executable, "-m", "agent_worker.factory", str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                env=worker_environment(),
                cwd="/",
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            ).returncode = 0  # it reaps itself away when we close our end
        return ours

    def warm(self) -> None:
        """Start the factory ahead of the first session, so that start pays no import time."""
        with self._lock:
            if self._conn is None:
                self._conn = self._start()

    def fork(self, name: str, marker: str | None, ready_fd: int, log_fd: int) -> int:
        request = json.dumps({"name": name, "marker": marker}).encode()
        with self._lock:
            for attempt in range(2):
                if self._conn is None:
                    self._conn = self._start()
                try:
                    socket.send_fds(self._conn, [request], [ready_fd, log_fd])
                    self._conn.settimeout(READY_TIMEOUT)
                    reply = json.loads(self._conn.recv(4096) or b"{}")
                except (OSError, ValueError):
                    self.close()
                    if attempt:
                        raise
                    continue
                if "pid" not in reply:
                    raise OSError(reply.get("error", "the worker factory did not fork"))
                return int(reply["pid"])
        raise OSError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def launch_worker(name: str, marker: str | None = None, factory: WorkerFactory | None = None
                  ) -> tuple[int, int, int]:
    """Start the worker for ``name`` (its spec.json is written) and wait until it is ready.

    Returns ``(worker_pid, worker_start_ticks, agent_pid)``; raises LaunchError.  Blocking:
    call it from a thread in async code.
    """
    directory = paths.session_dir(name)
    read_end, write_end = os.pipe()
    try:
        with open_private_log(directory / WORKER_LOG) as worker_log:
            pid = None
            if factory is not None:
                try:
                    pid = factory.fork(name, marker, write_end, worker_log.fileno())
                except OSError:
                    pid = None
            if pid is None:
                pid = _exec_worker(name, marker, write_end, worker_log)
        os.close(write_end)
        write_end = -1
        line = _read_line(read_end, READY_TIMEOUT)
    finally:
        os.close(read_end)
        if write_end >= 0:
            os.close(write_end)
    try:
        ready = json.loads(line) if line else {}
    except ValueError:
        ready = {}
    if not ready.get("ok"):
        error = ready.get("error") or _last_line(directory / WORKER_LOG) or "worker did not start"
        raise LaunchError(error)
    start = process_start_time(pid) or 0
    return pid, start, int(ready["agent_pid"])


def _exec_worker(name: str, marker: str | None, ready_fd: int, worker_log: BinaryIO) -> int:
    argv = [sys.executable, "-m", "agent_worker", name, "--ready-fd", str(ready_fd)]
    if marker:
        argv += ["--marker", marker]
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=worker_log,
        env=worker_environment(),
        cwd="/",
        pass_fds=(ready_fd,),
        start_new_session=True,
    )
    # The supervisor reaps it through its pidfd watcher; Popen must not do it behind us.
    proc.returncode = 0
    return proc.pid


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
