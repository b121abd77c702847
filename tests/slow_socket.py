"""A slow link in front of a worker's Unix socket: a real slow reader for feed tests.

:class:`SlowSocket` listens on a path of its own and forwards each connection to the
worker's socket: what the client sends goes straight through (keys, acks), what the worker
sends is read from its socket only as fast as ``rate`` bytes/s lets it out, after a
one-way ``delay``.  So the worker meets what a client on a slow link makes it meet: its
socket fills and stays full.  Threads and blocking sockets, stdlib only.
"""

from __future__ import annotations

import collections
import contextlib
import socket
import threading
import time
from pathlib import Path

PIECE = 4096


class SlowSocket:
    def __init__(self, listen: Path, target: Path, rate: float, delay: float = 0.0) -> None:
        self.listen, self.target, self.rate, self.delay = listen, target, rate, delay
        self.forwarded = 0  # bytes the worker sent that reached the client
        self._server = socket.socket(socket.AF_UNIX)
        listen.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._server.bind(str(listen))
        self._server.listen()
        self._socks: list[socket.socket] = [self._server]
        self._closing = False
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        self._closing = True
        for sock in self._socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        with contextlib.suppress(OSError):
            self.listen.unlink()

    def __enter__(self) -> SlowSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closing:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            worker = socket.socket(socket.AF_UNIX)
            worker.connect(str(self.target))
            self._socks += [client, worker]
            threading.Thread(target=self._pipe, args=(client, worker), daemon=True).start()
            threading.Thread(target=self._slow, args=(worker, client), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)

    def _slow(self, src: socket.socket, dst: socket.socket) -> None:
        """Worker to client: one piece per ``PIECE / rate`` seconds, each ``delay`` late."""
        due: collections.deque[tuple[float, bytes]] = collections.deque()
        lock = threading.Condition()
        done = threading.Event()

        def deliver() -> None:
            with contextlib.suppress(OSError):
                while True:
                    with lock:
                        while not due and not done.is_set():
                            lock.wait()
                        if not due:
                            break
                        at, data = due.popleft()
                    time.sleep(max(0.0, at - time.monotonic()))
                    dst.sendall(data)
                    self.forwarded += len(data)
                dst.shutdown(socket.SHUT_WR)

        threading.Thread(target=deliver, daemon=True).start()
        pace = time.monotonic()
        with contextlib.suppress(OSError):
            while data := src.recv(PIECE):
                pace = max(pace, time.monotonic()) + len(data) / self.rate
                time.sleep(max(0.0, pace - time.monotonic()))  # the link's rate
                with lock:
                    due.append((time.monotonic() + self.delay, data))
                    lock.notify()
        done.set()
        with lock:
            lock.notify()
