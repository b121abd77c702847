"""A local attach on a real PTY (the user's terminal, whose master we hold), as the
terminal handoff, hot-path and fault tests drive it, and how to see from outside whether
the worker's native lane is what serves it."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import pty
import re
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

from conftest import SupervEnv, wait_until


class PtyAttach:
    """``superv attach NAME`` on a fresh PTY; we hold the master (the emulator's side)
    and a copy of the slave (the user's shell shares that open file description)."""

    def __init__(self, senv: SupervEnv, name: str, *args: str,
                 env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.master, self.slave = pty.openpty()
        self.tty = os.ttyname(self.slave)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "attach", *args, name],
            env=env or senv.env, stdin=self.slave, stdout=self.slave, stderr=self.slave,
            start_new_session=True, cwd=cwd,
        )
        self.shown = bytearray()

    def read_until(self, needle: bytes | re.Pattern[bytes], timeout: float = 20.0) -> bytes:
        deadline = time.monotonic() + timeout
        while not (needle.search(self.shown) if isinstance(needle, re.Pattern)
                   else needle in self.shown):
            left = deadline - time.monotonic()
            assert left > 0, f"{needle!r} not shown; last: {bytes(self.shown[-300:])!r}"
            if select.select([self.master], [], [], min(left, 1.0))[0]:
                try:
                    self.shown += os.read(self.master, 1 << 16)
                except OSError:  # EIO: every slave closed
                    break
        return bytes(self.shown)

    def type(self, data: bytes) -> None:
        os.write(self.master, data)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)


class ReadingAttach(PtyAttach):
    """A local attach whose terminal reads everything as it comes (a thread), so the
    worker's hot path serves it live: through its native lane where it runs."""

    def __init__(self, senv: SupervEnv, name: str) -> None:
        super().__init__(senv, name)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 1 << 16)
            except OSError:
                return  # closed
            if not data:
                return
            self.shown += data


def worker_pid(senv: SupervEnv, name: str) -> int:
    listing = senv.superv("ls", "--json", check=True).stdout
    return next(s["worker_pid"] for s in json.loads(listing) if s["name"] == name)


# epoll_wait's and epoll_pwait's numbers: the lane waits with room for 4 events, Python's
# select.epoll for hundreds, so /proc/PID/task/TID/syscall tells who waits.
EPOLL_WAITS = {"x86_64": {"232", "281"}, "aarch64": {"22"}}.get(platform.machine(), set())


def lane_threads(pid: int) -> int:
    """How many of ``pid``'s threads wait in the native lane's epoll_wait."""
    waiting = 0
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            call = Path(f"/proc/{pid}/task/{task}/syscall").read_text().split()
        except OSError:
            continue
        waiting += len(call) > 3 and call[0] in EPOLL_WAITS and int(call[3], 16) == 4
    return waiting


def attached(senv: SupervEnv, name: str, *args: str, reading: bool = False) -> PtyAttach:
    """A local attach that types into the session: a key it typed reached the agent (an
    echo alone may be the terminal's own, before the client made it raw).  ``reading``: a
    :class:`ReadingAttach` (no ``args``)."""
    attach = ReadingAttach(senv, name) if reading else PtyAttach(senv, name, *args)
    log = senv.session_dir(name) / "output.log"
    wait_until(lambda: attach.type(b".") or log.read_bytes().endswith(b"."), timeout=20,
               interval=0.2, message="a key typed through the attach")
    return attach
