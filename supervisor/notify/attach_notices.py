"""The attach client's side of notifications: every session's notices on its status line.

An attach client follows the supervisor's event stream (the same one ``superv events``
reads) beside its session socket, and shows each ``notice`` event, of any session, on its
status line for :data:`SHOW_FOR` seconds; with ``notify.bell`` on (the supervisor puts it
in the event) it also rings the user's terminal: a BEL, and a desktop notification by
OSC 9 (iTerm2, kitty, WezTerm, Ghostty, Windows Terminal) or, where the terminal is foot,
OSC 777.  Why the event stream and not the session's own socket: the notice comes from the
supervisor, which already streams events to any client that asks; the workers and the
session protocol stay as they are, and a client attached to session A hears about B.  A
supervisor that is down means no notices, never a failed attach.

``superv attach box:NAME`` reads the box's stream over its SSH connection
(``superv events --json``) and shows it with the same :func:`render`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from typing import Any

from agent_worker import protocol as p
from agent_worker.client import Connection
from supervisor import terminal

SHOW_FOR = 4.0  # seconds a notice stays on the status line
# Anything a terminal could act on: a notice's text can carry an agent's words.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def render(body: dict[str, Any], rows: int, cols: int, term: str | None = None) -> bytes:
    """What shows ``body`` (a ``notice`` event): the status line, and the bell if asked."""
    text = _CONTROLS.sub(" ", str(body.get("message") or ""))
    line = text if len(text) <= cols - 2 else text[: max(0, cols - 3)] + "…"
    out = terminal.status_line(rows, line)
    if body.get("bell"):
        term = os.environ.get("TERM", "") if term is None else term
        if term.startswith("foot"):
            out += b"\x1b]777;notify;superv;%s\x1b\\" % text.encode()
        else:
            out += b"\x1b]9;%s\x1b\\" % text.encode()
        out += b"\x07"
    return out


def from_json_line(line: bytes) -> dict[str, Any] | None:
    """A ``notice`` event from one line of ``superv events --json``, else None."""
    with contextlib.suppress(ValueError):
        body = json.loads(line)
        if isinstance(body, dict) and body.get("event") == "notice":
            return body
    return None


class Notices:
    """The local supervisor's notices, for a selectors loop: ``fileno``, ``read``, ``expired``."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.shown_until: float | None = None

    @classmethod
    def open(cls) -> Notices | None:
        """Follow the supervisor's events, or None if it is not running (never started here)."""
        from supervisor import control
        from supervisor.errors import CliError

        try:
            conn = control.connect(autostart=False)
        except CliError:
            return None
        # Not waiting for the answer: a supervisor that is stopped or slow must not delay
        # the attach.  Its Reply (or an Error, and the close) arrives later and is skipped.
        try:
            conn.sock.setblocking(False)
            conn.send(p.Request({"op": "events"}))
        except OSError:
            conn.close()
            return None
        return cls(conn)

    def fileno(self) -> int:
        return self.conn.sock.fileno()

    def read(self) -> list[dict[str, Any]] | None:
        """The notices that arrived; None once the supervisor went away."""
        from supervisor.event_stream import read_ready

        bodies = read_ready(self.conn)
        if bodies is None:
            return None
        found = [b for b in bodies if b.get("event") == "notice"]
        if found:
            self.shown_until = time.monotonic() + SHOW_FOR
        return found

    def timeout(self) -> float | None:
        """Seconds until the notice shown should go, for ``select``."""
        if self.shown_until is None:
            return None
        return max(0.0, self.shown_until - time.monotonic())

    def expired(self) -> bool:
        if self.shown_until is not None and time.monotonic() >= self.shown_until:
            self.shown_until = None
            return True
        return False

    def close(self) -> None:
        self.conn.close()
