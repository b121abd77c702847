"""Unix sockets only their owner can use: created 0600, and every peer's uid checked."""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

_UCRED = struct.Struct("3i")


def listen_private(path: Path, backlog: int) -> socket.socket:
    """A non-blocking listening socket at ``path`` (which must not exist), mode 0600.

    The umask is tightened around bind() so the socket is never, even briefly, open to
    others; the directory around it is 0700 as well (see paths.ensure_private_dir).
    """
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


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
