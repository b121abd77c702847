"""The fleet in the overview: each configured host's ``ls`` and events, as child processes.

Each host gets ``superv events --json HOST:`` (one SSH connection, kept open) and, at start
and after each reconnect, ``superv ls --json HOST:``; their stdout pipes go in the
overview's selector.  The overview itself never imports asyncssh (the children do), so
its start-up is this box's alone, and a slow or unreachable host delays nothing: its
children just have not answered.  A host whose stream ends is shown as unreachable and
tried again with backoff.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import time
from typing import Any

from supervisor.overview.model import last_error

BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds before each further reconnect
# The events child says nothing when its remote subscription starts, so an ls at once may
# come before it and miss a change in between: list once more when it has surely begun.
SETTLE = 5.0


class HostFeed:
    def __init__(self, host: str, superv: list[str]) -> None:
        self.host = host
        self.superv = superv
        self.events: subprocess.Popen[bytes] | None = None
        self.ls: subprocess.Popen[bytes] | None = None
        self.buffer = b""
        self.ls_out = b""
        self.failures = 0
        self.retry_at = 0.0
        self.settle_at: float | None = None
        # An event asked for a fresh list while an ls was on its way: that answer may
        # predate the event (a stop seen, then an ls from before it saying "running").
        self.again = False

    def _spawn(self, args: list[str]) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([*self.superv, *args], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout is not None
        os.set_blocking(proc.stdout.fileno(), False)
        return proc

    def connect(self) -> None:
        """Follow the host's events, then list it (no event is lost between the two)."""
        self.events = self._spawn(["events", "--json", f"{self.host}:"])
        self.settle_at = time.monotonic() + SETTLE
        self.relist()

    def relist(self) -> bool:
        """Ask for the host's list; True if an ``ls`` child was started (to be selected on).
        With one already under way, its answer is dropped and the host asked again."""
        if self.ls is not None:
            self.again = True
            return False
        self.again = False
        self.ls_out = b""
        self.ls = self._spawn(["ls", "--json", f"{self.host}:"])
        return True

    def fds(self) -> list[tuple[int, str]]:
        out = []
        for proc, what in ((self.events, "events"), (self.ls, "ls")):
            if proc is not None and proc.stdout is not None:
                out.append((proc.stdout.fileno(), what))
        return out

    def read_events(self) -> list[dict[str, Any]] | None:
        """The events that arrived; None when the stream ended (the host is unreachable)."""
        assert self.events is not None and self.events.stdout is not None
        try:
            data = os.read(self.events.stdout.fileno(), 1 << 16)
        except BlockingIOError:
            return []
        if not data:
            return None
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        bodies = []
        for line in lines:
            with contextlib.suppress(ValueError):
                body = json.loads(line)
                if isinstance(body, dict):
                    bodies.append(body)
        return bodies

    def read_ls(self) -> list[dict[str, Any]] | str | None:
        """None while the answer is still coming; then the sessions, or why there are none."""
        assert self.ls is not None and self.ls.stdout is not None
        try:
            data = os.read(self.ls.stdout.fileno(), 1 << 16)
        except BlockingIOError:
            return None
        if data:
            self.ls_out += data
            return None
        proc, self.ls = self.ls, None
        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        proc.stdout.close() if proc.stdout else None
        code = proc.wait()
        try:
            sessions = json.loads(self.ls_out)
        except ValueError:
            sessions = None
        if code != 0 or not isinstance(sessions, list):
            return last_error(err) or f"ls exited {code}"
        self.failures = 0
        return sessions

    def ended(self) -> str:
        """The events stream ended: why, and when to try again."""
        why = ""
        if self.events is not None:
            err = self.events.stderr.read().decode(errors="replace") if self.events.stderr else ""
            why = last_error(err) or "its events stream ended"
        self.close()
        self.retry_at = time.monotonic() + BACKOFF[min(self.failures, len(BACKOFF) - 1)]
        self.failures += 1
        return why or "unreachable"

    def close(self) -> None:
        for proc in (self.events, self.ls):
            if proc is not None:
                with contextlib.suppress(OSError):
                    proc.kill()
                proc.wait()
                for stream in (proc.stdout, proc.stderr):
                    if stream is not None:
                        stream.close()
        self.events = self.ls = None
        self.settle_at = None
        self.again = False
        self.buffer = b""
