"""The supervisor's events stream, read without blocking: the overview selects on its fd.

The same request ``superv events`` makes; here the frames are decoded as they arrive so the
curses loop never waits on the socket.
"""

from __future__ import annotations

import contextlib
import socket
from typing import Any

from agent_worker import protocol as p
from agent_worker.client import Connection
from supervisor import control
from supervisor.event_stream import read_ready


class EventStream:
    def __init__(self) -> None:
        self.conn: Connection = control.connect()
        control.send_first(self.conn, p.Request({"op": "events"}))
        # Events read with the answer would wait in the decoder for the next arrival and
        # then be applied after the list the overview asks for next, though older than it.
        # That list covers them: drop them (garbage stays in the decoder: read() says so).
        with contextlib.suppress(p.ProtocolError):
            for _ in self.conn.decoder:
                pass
        self.conn.sock.setblocking(False)

    @property
    def sock(self) -> socket.socket:
        return self.conn.sock

    def read(self) -> list[dict[str, Any]] | None:
        """The events that arrived (maybe none); None once the supervisor is gone."""
        return read_ready(self.conn)

    def close(self) -> None:
        self.conn.close()
