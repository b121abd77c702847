"""Who is on the other end of a Unix socket: every connection's peer uid is checked."""

from __future__ import annotations

import os
import socket
import struct

_UCRED = struct.Struct("3i")


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process that connected ``sock`` (Linux SO_PEERCRED)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    _pid, uid, _gid = _UCRED.unpack(raw)
    return uid


def refusal(sock: socket.socket) -> str | None:
    """None if the peer is us; else the sentence to refuse it with."""
    uid = peer_uid(sock)
    if uid == os.getuid():
        return None
    return f"refused: this socket belongs to uid {os.getuid()}, and you are uid {uid}"
