"""The bench's network (bench/tcp_proxy.py) does what the benches rely on.

Real sockets on 127.0.0.1 on both sides: the rate is kept, the delay is added each way,
a cut holds TCP bytes (and drops UDP datagrams) until the restore, a connection made
during a cut gets through at the SYN resend after the restore (unless its client gave up), and a side
that closed during the cut reaches the other side as an end of stream after the restore.
A "refuse" cut resets every connection, and each new one until the restore.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from bench.tcp_proxy import Link, LinkProxy


@pytest.fixture
def server() -> Iterator[socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield listener


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.timeout(30)
def test_rate_and_delay(server: socket.socket) -> None:
    size = 400_000

    def send() -> None:
        with server.accept()[0] as conn:
            conn.sendall(b"x" * size)

    threading.Thread(target=send, daemon=True).start()
    with Link(rate=200_000, delay=0.05) as link:
        with socket.create_connection(("127.0.0.1", link.tcp(server.getsockname()))) as client:
            started = time.monotonic()
            assert recv_exactly(client, size) == b"x" * size
            took = time.monotonic() - started
        # 400 kB at 200 kB/s: 2 s (less the bucket's first burst), plus the delay.
        assert 1.8 < took < 3.5, took
        assert link.counts()[0] == size


@pytest.mark.timeout(30)
def test_round_trip_is_twice_the_delay(server: socket.socket) -> None:
    def echo() -> None:
        with server.accept()[0] as conn, contextlib.suppress(ConnectionResetError):
            while data := conn.recv(100):  # until the link's close resets it
                conn.sendall(data)

    threading.Thread(target=echo, daemon=True).start()
    with (
        Link(rate=1e6, delay=0.05) as link,
        socket.create_connection(("127.0.0.1", link.tcp(server.getsockname()))) as client,
    ):
        trips = []
        for _ in range(3):
            started = time.monotonic()
            client.sendall(b"ping")
            assert recv_exactly(client, 4) == b"ping"
            trips.append(time.monotonic() - started)
    assert 0.1 <= min(trips) < 0.3, trips


@pytest.mark.timeout(30)
def test_cut_holds_bytes_and_connections_until_restore(server: socket.socket) -> None:
    accepted: list[socket.socket] = []
    ready = threading.Event()

    def accept_two() -> None:
        for _ in range(2):
            accepted.append(server.accept()[0])
            ready.set()

    threading.Thread(target=accept_two, daemon=True).start()
    with Link(delay=0.01) as link:
        port = link.tcp(server.getsockname())
        first = socket.create_connection(("127.0.0.1", port))
        assert ready.wait(5)
        ready.clear()
        link.cut()
        first.sendall(b"held")
        second = socket.create_connection(("127.0.0.1", port))  # made during the outage
        opened = time.monotonic()
        gone = socket.create_connection(("127.0.0.1", port))  # and given up during it
        gone.sendall(b"SSH-2.0-banner\r\n")
        gone.close()
        accepted[0].settimeout(0.5)
        with pytest.raises(TimeoutError):
            accepted[0].recv(10)
        assert len(accepted) == 1, "a connection made during a cut reached the server"
        first.close()  # the client gives up during the outage
        link.restore()
        accepted[0].settimeout(5)
        assert recv_exactly(accepted[0], 4) == b"held"
        assert accepted[0].recv(10) == b"", "the client's close did not arrive after the restore"
        assert ready.wait(5), "the connection made during the cut never got through"
        # Its SYN was lost: it gets through at the kernel's first resend (1 s) after the restore.
        assert time.monotonic() - opened >= 0.95
        second.sendall(b"late")
        accepted[1].settimeout(5)
        assert recv_exactly(accepted[1], 4) == b"late"
        second.close()
        for conn in accepted:
            conn.close()
        server.settimeout(1)
        with pytest.raises(TimeoutError):
            server.accept()  # the abandoned one: its SYNs were lost in the outage


@pytest.mark.timeout(30)
def test_udp_is_dropped_while_cut_and_flows_after() -> None:
    with (
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as server,
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client,
        Link(rate=1e6, delay=0.02) as link,
    ):
        server.bind(("127.0.0.1", 0))
        server.settimeout(0.5)
        client.settimeout(5)
        port = link.udp(server.getsockname())
        client.sendto(b"one", ("127.0.0.1", port))
        data, via = server.recvfrom(100)
        assert data == b"one"
        link.cut()
        client.sendto(b"lost", ("127.0.0.1", port))
        with pytest.raises(TimeoutError):
            server.recvfrom(100)
        link.restore()
        client.sendto(b"two", ("127.0.0.1", port))
        assert server.recvfrom(100)[0] == b"two"
        server.sendto(b"back", via)  # the reply reaches the client's latest address
        assert client.recvfrom(100)[0] == b"back"


@pytest.mark.timeout(30)
def test_refuse_resets_every_connection_and_each_new_one_until_restore(
    server: socket.socket,
) -> None:
    proxy = LinkProxy(server.getsockname()[1])
    try:
        old = socket.create_connection(("127.0.0.1", proxy.port))
        far, _ = server.accept()
        old.sendall(b"up")
        assert recv_exactly(far, 2) == b"up"  # the proxy carries this connection
        proxy.cut("refuse")
        old.settimeout(5)
        with pytest.raises(ConnectionResetError):
            old.recv(10)
        far.settimeout(5)
        with pytest.raises(ConnectionResetError):
            far.recv(10)
        new = socket.create_connection(("127.0.0.1", proxy.port))
        new.settimeout(5)
        with pytest.raises(ConnectionResetError):
            new.recv(10)
        assert proxy.accepted == 1
        for sock in (old, far, new):
            sock.close()
        proxy.restore()
        with socket.create_connection(("127.0.0.1", proxy.port)) as again:
            again.sendall(b"back")
            conn, _ = server.accept()
            with conn:
                conn.settimeout(5)
                assert recv_exactly(conn, 4) == b"back"
        assert proxy.accepted == 2
    finally:
        proxy.close()
