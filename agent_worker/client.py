"""Blocking connections to a worker (or the supervisor), for short-lived clients.

:class:`Connection` moves frames (the control socket's requests, and tests that check the
wire itself); :class:`SessionClient` drives a session conversation over it.

Standard library plus the codec only, so ``superv attach``/``peek``/``send`` start fast.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Self

from agent_worker import protocol as p
from agent_worker.conversation import (
    NEED_DATA,
    ClientConversation,
    Closed,
    Failed,
    SessionInfo,
    Violation,
)

# Most bytes taken by one receive.  Not more: a 1 MiB receive costs ~15 µs per call here
# (the kernel maps and unmaps a buffer that large), 64 KiB ~1 µs, and a keystroke's echo
# is a few bytes.
RECV_SIZE = 65536
CONNECT_PAUSE_MAX = 0.05  # between tries to connect while the listener's queue is full


class ConnectionClosed(Exception):
    """The other end closed the connection."""


class _Socket:
    """Owns a connected socket: closes it, also as a context manager."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Connection(_Socket):
    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.decoder = p.Decoder()

    @classmethod
    def open(cls, path: Path, timeout: float | None = 10.0) -> Connection:
        """Connect to the socket at ``path``; OSError (ENOENT, ECONNREFUSED...) if nobody is there."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.settimeout(timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = 0.001
        while True:
            try:
                sock.connect(str(path))
                return cls(sock)
            except BlockingIOError:
                # EAGAIN: the listener's queue is full (a burst of connections): it is
                # busy, not gone; a socket with a timeout does not wait for room itself.
                if deadline is not None and time.monotonic() + pause > deadline:
                    sock.close()
                    raise
                time.sleep(pause)
                pause = min(2 * pause, CONNECT_PAUSE_MAX)
            except OSError:
                sock.close()
                raise

    def send(self, msg: p.Message) -> None:
        self.sock.sendall(p.encode(msg))

    def receive(self) -> p.Message:
        """The next message; ConnectionClosed at end of stream, ProtocolError on garbage."""
        while True:
            msg = self.decoder.next_message()
            if msg is not None:
                return msg
            data = self.sock.recv(RECV_SIZE)
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


class SessionClient(_Socket):
    """A blocking client's side of a session conversation (attach, logs -f, peek, send,
    kill): the socket moves bytes, :class:`ClientConversation` decides what they mean."""

    def __init__(self, sock: socket.socket, hello: p.Hello) -> None:
        super().__init__(sock)
        self.conversation = ClientConversation(hello)

    @classmethod
    def open(cls, path: Path, hello: p.Hello, timeout: float | None = 10.0) -> SessionClient:
        """Connect to the worker at ``path`` and say hello; OSError if nobody is there."""
        conn = Connection.open(path, timeout)
        client = cls(conn.sock, hello)
        try:
            client.sock.sendall(client.conversation.initiate())
        except (BrokenPipeError, ConnectionResetError):
            # A worker that refuses us (another uid) sends its Error and closes at once,
            # maybe before our hello is sent: welcome() still reads its reason.
            pass
        except BaseException:
            client.close()
            raise
        return client

    def welcome(self) -> SessionInfo:
        """The session's Welcome; ConnectionRefusedError with the worker's reason if it
        refused, ProtocolError if it is not speaking the protocol."""
        event = self.next_event()
        if isinstance(event, SessionInfo):
            return event
        if isinstance(event, Failed):
            raise ConnectionRefusedError(event.message)
        if isinstance(event, Closed):
            raise ConnectionClosed("the worker closed the connection before its welcome")
        raise p.ProtocolError(getattr(event, "message", f"expected a welcome, got {event!r}"))

    def send(self, msg: p.Input | p.Resize | p.Signal | p.Stop | p.Detach | p.Show) -> None:
        self.sock.sendall(self.conversation.send(msg))

    def next_event(self) -> Any:
        """The next event, reading the socket as needed (its timeout bounds the wait)."""
        while (event := self.conversation.next_event()) is NEED_DATA:
            self.read()
        return event

    def read(self) -> None:
        """One read from the socket into the conversation (for a caller with a selector)."""
        try:
            data = self.sock.recv(RECV_SIZE)
        except ConnectionResetError:
            data = b""
        self.conversation.receive_data(data)

    def ready_events(self) -> Iterator[Any]:
        """The events already received, without reading the socket."""
        while (event := self.conversation.next_event()) is not NEED_DATA:
            yield event
            if isinstance(event, Closed | Failed | Violation):
                return
