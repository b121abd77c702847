"""The reconnect's TCP step: fresh connections while the box is silent, the first to answer wins.

Real sockets on 127.0.0.1: a listener that stays silent on some connections plays a link
that loses packets (a connection that never hears back), and one that answers late plays
a slow link.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time

import asyncssh
import pytest

from supervisor.ssh_link import answering_socket


class Box:
    """Accepts connections; answers the ones ``answer(n)`` says to, after a delay."""

    def __init__(self, answer: dict[int, float]) -> None:
        self.answer = answer  # connection number (from 1) -> seconds before it speaks
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.accepted.append(conn)
            delay = self.answer.get(len(self.accepted))
            if delay is not None:
                words = b"SSH-2.0-box %d\r\n" % len(self.accepted)
                threading.Timer(delay, conn.sendall, args=(words,)).start()

    def close(self) -> None:
        self.listener.close()
        for conn in self.accepted:
            conn.close()


def options(port: int) -> asyncssh.SSHClientConnectionOptions:
    return asyncssh.SSHClientConnectionOptions(host="127.0.0.1", port=port, config=())


def first_words(sock: socket.socket) -> bytes:
    sock.setblocking(True)
    sock.settimeout(5)
    return sock.recv(100)


@pytest.mark.timeout(20)
def test_a_silent_box_gets_fresh_connections_until_one_answers() -> None:
    box = Box({3: 0.0})  # the first two connections are lost, the third answers at once
    try:
        began = time.monotonic()
        answered = asyncio.run(answering_socket(options(box.port), stagger=0.3))
        took = time.monotonic() - began
        assert answered is not None
        sock, answer = answered
        assert first_words(sock) == b"SSH-2.0-box 3\r\n"  # seen, not taken
        assert 0.5 <= took < 2.0, took
        assert answer < 0.3  # the winning connection's own time, not the whole wait
        sock.close()
    finally:
        box.close()


@pytest.mark.timeout(20)
def test_a_slow_box_still_wins_on_an_earlier_connection() -> None:
    box = Box({1: 0.8})  # answers the first connection late; later ones never
    try:
        answered = asyncio.run(answering_socket(options(box.port), stagger=0.3))
        assert answered is not None
        sock, answer = answered
        assert first_words(sock) == b"SSH-2.0-box 1\r\n" and answer >= 0.8
        assert len(box.accepted) >= 2  # fresh ones were tried meanwhile
        sock.close()
    finally:
        box.close()


@pytest.mark.timeout(20)
def test_a_refusal_is_raised_at_once() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nobody listens once the probe is closed
    began = time.monotonic()
    with pytest.raises(ConnectionRefusedError):
        asyncio.run(answering_socket(options(port), stagger=5.0))
    assert time.monotonic() - began < 2.0
