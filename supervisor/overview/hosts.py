"""The fleet in the overview: each configured host's sessions and events, from one child.

Each host gets one ``superv events --json --lists HOST:`` (one SSH connection, kept open):
the host's supervisor sends its sessions first, taken as the subscription begins, then its
events, and a fresh list in the same stream each time we write a line on the child's
stdin.  Lists and events come in the order the supervisor saw them, so no change is lost
between the two.  The overview itself never imports asyncssh (the child does), so its
start-up is this box's alone, and a slow or unreachable host delays nothing: its child
just has not answered.  A host whose stream ends is shown as unreachable and tried again
with backoff.  A host whose superv predates ``--lists`` is shown as needing an upgrade.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from typing import Any

from agent_worker import json_input
from supervisor.overview.model import last_error

BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds before each further reconnect
# The child's priority: it starts with the overview, and must not slow its first frame
# (it relays a few lines a second after that; the remote superv runs at its own).
NICE = 10
TOO_OLD = "its superv is too old for the overview (no events --lists): upgrade superv there"


class HostFeed:
    def __init__(self, host: str, superv: list[str]) -> None:
        self.host = host
        self.superv = superv
        self.proc: subprocess.Popen[bytes] | None = None
        self.buffer = b""
        self.failures = 0
        self.retry_at = 0.0
        # A list was asked for (or is the first, always sent) and has not come yet: one
        # already on its way is taken after anything we have read, so it is enough.
        self.asked = False

    @property
    def live(self) -> bool:
        return self.proc is not None

    def connect(self) -> None:
        """Follow the host: its sessions come first, then its events."""
        self.proc = subprocess.Popen(
            [*self.superv, "events", "--json", "--lists", f"{self.host}:"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert self.proc.stdout is not None
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, self.proc.pid, NICE)
        os.set_blocking(self.proc.stdout.fileno(), False)
        self.asked = True

    def fileno(self) -> int:
        assert self.proc is not None and self.proc.stdout is not None
        return self.proc.stdout.fileno()

    def relist(self) -> None:
        """Ask the host for a fresh list, unless one is already on its way."""
        if self.proc is None or self.proc.stdin is None or self.asked:
            return
        try:
            self.proc.stdin.write(b"ls\n")
            self.proc.stdin.flush()
        except OSError:
            return  # the child is gone: its stdout's end says so
        self.asked = True

    def read(self) -> list[dict[str, Any]] | None:
        """What arrived: events, and ``sessions`` lists; None when the stream ended (the
        host is unreachable)."""
        assert self.proc is not None and self.proc.stdout is not None
        try:
            data = os.read(self.proc.stdout.fileno(), 1 << 16)
        except BlockingIOError:
            return []
        if not data:
            return None
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        bodies = []
        for line in lines:
            with contextlib.suppress(ValueError):
                body = json_input.loads(line)
                if isinstance(body, dict):
                    bodies.append(body)
        return bodies

    def listed(self) -> None:
        """A ``sessions`` list was read: the host answers, and may be asked again."""
        self.asked = False
        self.failures = 0

    def ended(self) -> str:
        """The stream ended: why, and when to try again."""
        why = ""
        if self.proc is not None and self.proc.stderr is not None:
            err = self.proc.stderr.read().decode(errors="replace")
            why = TOO_OLD if "unrecognized arguments: --lists" in err else last_error(err)
        self.close()
        self.retry_at = time.monotonic() + BACKOFF[min(self.failures, len(BACKOFF) - 1)]
        self.failures += 1
        return why or "its events stream ended"

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                if stream is not None:
                    with contextlib.suppress(OSError):
                        stream.close()
        self.asked = False
        self.buffer = b""
