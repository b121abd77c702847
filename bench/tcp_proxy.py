"""A TCP proxy on 127.0.0.1 in front of one port, whose link the bench can cut and restore.

Put between a client and a loopback sshd, it plays the network: :meth:`LinkProxy.cut`
takes the link down in one of two ways, :meth:`LinkProxy.restore` brings it back.

- ``"blackhole"``: packets are lost, as when Wi-Fi drops or a phone loses signal.  Nothing
  is forwarded in either direction, on old connections or new ones; what was sent is held
  and delivered on restore, as TCP would retransmit it.  The client only learns of the
  outage from its keepalives.  A connection opened during the outage stands for one whose
  SYN was lost: it carries nothing until the kernel would next retransmit that SYN (1, 3,
  7, 15, 31 s after the connect, Linux's schedule) at or after the restore, which is why a
  client stuck in such a connect should start a fresh one rather than wait.
- ``"refuse"``: the path is gone and says so, as when the laptop's address or route
  vanished: every connection is reset at once and new ones are reset on arrival.

Threads, blocking sockets, stdlib only: it moves a few kB/s in the reconnect bench.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
import time

CHUNK = 256 * 1024
SYN_RETRIES = (1, 3, 7, 15, 31, 63)  # seconds after connect() that Linux resends a SYN


class LinkProxy:
    """Forwards 127.0.0.1:``port`` to 127.0.0.1:``target``; :meth:`close` when done."""

    def __init__(self, target: int) -> None:
        self.target = target
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port: int = self._listener.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._mode = ""
        self._restored_at = 0.0
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._closed = False
        self.accepted = 0  # connections made through the proxy so far
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def cut(self, mode: str) -> None:
        if mode not in ("blackhole", "refuse"):
            raise ValueError(f"unknown outage mode {mode!r}")
        with self._lock:
            self._mode = mode
            self._up.clear()
            if mode == "refuse":
                for sock in self._open:
                    _reset(sock)
                self._open.clear()

    def restore(self) -> None:
        with self._lock:
            self._mode = ""
            self._restored_at = time.monotonic()
            self._up.set()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._up.set()
            for sock in self._open:
                _reset(sock)
            self._open.clear()
        with contextlib.suppress(OSError):
            self._listener.close()

    def _accept_loop(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            opened = time.monotonic()
            with self._lock:
                if self._closed or self._mode == "refuse":
                    _reset(client)
                    continue
                self.accepted += 1
                syn_lost = self._mode == "blackhole"
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
                upstream.settimeout(None)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._open += [client, upstream]
            lost_syn_at = opened if syn_lost else None
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(
                    target=self._pump, args=(src, dst, lost_syn_at), daemon=True
                ).start()

    def _pump(self, src: socket.socket, dst: socket.socket, lost_syn_at: float | None) -> None:
        try:
            while data := src.recv(CHUNK):
                self._up.wait()  # a blackhole holds what was sent until the link is back
                if lost_syn_at is not None:
                    # The connection "starts" at the first SYN resent after the restore.
                    restored = self._restored_at
                    start = next(
                        (lost_syn_at + t for t in SYN_RETRIES if lost_syn_at + t >= restored),
                        restored,
                    )
                    time.sleep(max(0.0, start - time.monotonic()))
                    lost_syn_at = None
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            _reset(dst)
            _reset(src)


def _reset(sock: socket.socket) -> None:
    """Close with a RST, as a vanished path does, not a polite FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
