"""A blocking connection to a worker (or the supervisor), for short-lived clients.

Standard library plus the codec only, so ``superv attach``/``peek``/``send`` start fast.
"""

from __future__ import annotations

import socket
from pathlib import Path

from agent_worker import protocol as p


class ConnectionClosed(Exception):
    """The other end closed the connection."""


class Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.decoder = p.Decoder()

    @classmethod
    def open(cls, path: Path, timeout: float | None = 10.0) -> Connection:
        """Connect to the socket at ``path``; OSError (ENOENT, ECONNREFUSED...) if nobody is there."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
        except OSError:
            sock.close()
            raise
        return cls(sock)

    def send(self, msg: p.Message) -> None:
        self.sock.sendall(p.encode(msg))

    def receive(self) -> p.Message:
        """The next message; ConnectionClosed at end of stream, ProtocolError on garbage."""
        while True:
            msg = self.decoder.next_message()
            if msg is not None:
                return msg
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionClosed("connection closed")
            self.decoder.feed(data)

    def hello(self, hello: p.Hello) -> p.Welcome:
        """Say hello and return the Welcome; ``Error`` from the worker raises ConnectionRefusedError."""
        self.send(hello)
        msg = self.receive()
        if isinstance(msg, p.Error):
            raise ConnectionRefusedError(msg.message)
        if not isinstance(msg, p.Welcome):
            raise p.ProtocolError(f"expected a welcome, got {type(msg).__name__}")
        return msg

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
