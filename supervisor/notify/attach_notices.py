"""The attach client's side of notifications: every session's notices on its status line.

An attach client follows the supervisor's event stream (the same one ``superv events``
reads) beside its session socket, and shows each ``notice`` event, of any session, on its
status line for a moment (:mod:`supervisor.status_line`); with ``notify.bell`` on (the supervisor puts it
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
import os
import re
from typing import Any

from agent_worker import json_input
from agent_worker import protocol as p
from agent_worker.client import Connection
from supervisor import status_line

# Anything a terminal could act on: a notice's text can carry an agent's words.
_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def words(body: dict[str, Any]) -> str:
    """The status line's words for ``body`` (a ``notice`` event), made safe to show."""
    return _CONTROLS.sub(" ", str(body.get("message") or ""))


def bell(body: dict[str, Any], term: str | None = None) -> bytes:
    """What rings the user's terminal for ``body``, if the supervisor asked (else b"")."""
    if not body.get("bell"):
        return b""
    text = words(body)
    term = os.environ.get("TERM", "") if term is None else term
    if term.startswith("foot"):
        return b"\x1b]777;notify;superv;%s\x1b\\\x07" % text.encode(errors="replace")
    return b"\x1b]9;%s\x1b\\\x07" % text.encode(errors="replace")


def render(body: dict[str, Any], rows: int, cols: int, term: str | None = None) -> bytes:
    """What shows ``body`` alone: the status line, and the bell if asked.  (Attach clients
    show it through their :class:`~supervisor.status_line.StatusLine`.)"""
    return status_line.paint(rows, status_line.fit(words(body), cols)) + bell(body, term)


def from_json_line(line: bytes) -> dict[str, Any] | None:
    """A ``notice`` event from one line of ``superv events --json``, else None."""
    with contextlib.suppress(ValueError):
        body = json_input.loads(line)
        if isinstance(body, dict) and body.get("event") == "notice":
            return body
    return None


class Notices:
    """The local supervisor's notices, for a selectors loop: ``fileno``, ``read``."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

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
        return [b for b in bodies if b.get("event") == "notice"]

    def close(self) -> None:
        self.conn.close()
