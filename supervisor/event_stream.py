"""The supervisor's events stream read without blocking, for a selectors loop.

``superv events`` reads it blocking; the attach client's notices and the overview select
on the socket and take what arrived with :func:`read_ready`.
"""

from __future__ import annotations

from typing import Any

from agent_worker import protocol as p
from agent_worker.client import Connection


def read_ready(conn: Connection) -> list[dict[str, Any]] | None:
    """The event bodies that arrived on ``conn`` (a non-blocking socket), maybe none; None
    once the supervisor went away or sent garbage."""
    try:
        data = conn.sock.recv(1 << 16)
    except BlockingIOError:
        return []
    except OSError:
        return None
    if not data:
        return None
    try:
        conn.decoder.feed(data)
        return [m.body for m in conn.decoder if isinstance(m, p.Event)]
    except p.ProtocolError:
        return None
