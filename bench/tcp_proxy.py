"""The bench's network: a slow, breakable link on 127.0.0.1, for TCP and for UDP (mosh).

Put between a client (``superv attach box:…``, ``ssh``, ``mosh-client``) and a real server
on loopback, it plays the network.  A :class:`Link` is the link itself, shared by every
connection and datagram through it, as one physical link is:

- **rate**: a token bucket in each direction (bytes per second; ``None``: unlimited).
  Payload bytes are counted against it (TCP/IP headers are not modelled).
- **delay**: a one-way propagation delay added to everything, after the rate (a byte
  arrives its serialisation wait plus ``delay`` after it was sent).
- **cut / restore**: an outage, in one of two ways:

  - ``"blackhole"``: packets are lost, as when Wi-Fi drops or a phone loses signal.
    Nothing crosses: a TCP connection's bytes stay where they are (reading stops, so the
    sender's kernel buffers fill and it blocks, as when nothing is acknowledged) and are
    delivered on restore, as TCP would retransmit them; UDP datagrams are dropped.  A TCP
    connection opened during the outage stands for one whose SYN was lost: the kernel
    accepts it but it carries nothing until the kernel would next resend that SYN (1, 3,
    7, 15, 31 s after the connect, Linux's schedule) at or after the restore, which is
    why a client stuck in such a connect should start a fresh one rather than wait; one
    its client gave up on meanwhile never reaches the server.  A
    side that closed during the outage (a client whose keepalives gave up) reaches the
    other side as an end of stream on restore, as a real peer learns of it only once
    packets flow again.  The client only learns of the outage from its keepalives.
  - ``"refuse"``: the path is gone and says so, as when the laptop's address or route
    vanished: every TCP connection is reset at once and new ones are reset on arrival
    (UDP is dropped, as in a blackhole).

  Not modelled: TCP's retransmission backoff, which after a long outage can delay a held
  connection's recovery by seconds more than here.

It runs an asyncio loop in a daemon thread, so synchronous code can drive it:
``link = Link(rate=1e6, delay=0.05).start()``; ``link.tcp(("127.0.0.1", 22))`` and
``link.udp(...)`` return the local port to use instead; ``link.cut("blackhole")``,
``link.restore()``, ``link.close()``; ``link.counts()`` gives the payload bytes delivered
each way, ``link.accepted`` the TCP connections accepted.  :class:`LinkProxy` is the
one-port form the reconnect bench and its test use.  Stdlib only: the test suite loads
this file by path.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

DOWN, UP = "down", "up"  # server to client, client to server
RECV_BUFFER = 64 * 1024  # the proxy's kernel receive buffer: no hidden megabytes in flight
UDP_QUEUE_SECONDS = 0.2  # a router's queue: datagrams beyond this much waiting are dropped
MODES = ("blackhole", "refuse")
SYN_RETRIES = (1, 3, 7, 15, 31, 63)  # seconds after connect() that Linux resends a SYN


class TokenBucket:
    """``rate`` bytes per second, at most ``burst`` bytes ahead; shared by every flow."""

    def __init__(self, rate: float | None, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.stamp = time.monotonic()
        self.lock = asyncio.Lock()  # first come, first served across flows

    async def take(self, n: int) -> None:
        if self.rate is None:
            return
        async with self.lock:
            now = time.monotonic()
            self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now
            self.tokens -= n
            if self.tokens < 0:
                await asyncio.sleep(-self.tokens / self.rate)


class Counters:
    """Payload bytes delivered each way (not a dataclass: a test loads this file by path)."""

    def __init__(self) -> None:
        self.down = 0
        self.up = 0

    def add(self, direction: str, n: int) -> None:
        if direction == DOWN:
            self.down += n
        else:
            self.up += n


class Link:
    """The link: its rate, delay and state, and the proxies that go through it."""

    def __init__(self, rate: float | None = None, delay: float = 0.0) -> None:
        self.rate = rate
        self.delay = delay
        # One read per ~20 ms of link time: small enough that a read waits little for
        # tokens, large enough that an unlimited link is not slowed by Python.
        self.chunk = 65536 if rate is None else int(max(1500, min(16384, rate / 50)))
        self.sent = Counters()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="link-proxy", daemon=True)
        self._up: asyncio.Event | None = None
        self.restored_at = 0.0  # monotonic time of the last restore
        self.mode = ""  # while cut: "blackhole" or "refuse"
        self.accepted = 0  # TCP connections accepted so far
        self.open: dict[asyncio.Task[Any], list[asyncio.StreamWriter]] = {}
        self.buckets: dict[str, TokenBucket] = {}
        self.servers: list[asyncio.AbstractServer] = []
        self.tasks: set[asyncio.Task[Any]] = set()
        self.closers: list[Callable[[], None]] = []

    # ----------------------------------------------------------- driven from outside

    def start(self) -> Link:
        self.thread.start()
        self._call(self._setup())
        return self

    def tcp(self, target: tuple[str, int]) -> int:
        """Forward a new port on 127.0.0.1 to ``target`` over this link; return the port."""
        return self._call(self._tcp(target))

    def udp(self, target: tuple[str, int]) -> int:
        """Forward a new UDP port on 127.0.0.1 to ``target``; the client is whoever sent last."""
        return self._call(self._udp(target))

    def cut(self, mode: str = "blackhole") -> None:
        if mode not in MODES:
            raise ValueError(f"unknown outage mode {mode!r}: {' or '.join(MODES)}")
        self._call(self._set(False, mode))

    def restore(self) -> None:
        self._call(self._set(True, ""))

    @property
    def is_up(self) -> bool:
        return self._up is not None and self._up.is_set()

    def counts(self) -> tuple[int, int]:
        """Payload bytes delivered so far: (server to client, client to server)."""
        return self.sent.down, self.sent.up

    def close(self) -> None:
        if not self.thread.is_alive():
            return
        with contextlib.suppress(Exception):
            self._call(self._shutdown(), timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        if not self.thread.is_alive():
            self.loop.close()

    def __enter__(self) -> Link:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, coro: Coroutine[Any, Any, Any], timeout: float = 10) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    # ------------------------------------------------------------- inside the loop

    async def _setup(self) -> None:
        self._up = asyncio.Event()
        self._up.set()
        burst = self.chunk
        self.buckets = {DOWN: TokenBucket(self.rate, burst), UP: TokenBucket(self.rate, burst)}

    async def _set(self, up: bool, mode: str) -> None:
        assert self._up is not None
        self.mode = mode
        if up and not self._up.is_set():
            self.restored_at = time.monotonic()
            self._up.set()
        elif not up:
            self._up.clear()
        if mode == "refuse":
            for task, writers in list(self.open.items()):
                for writer in writers:
                    _reset(writer)
                task.cancel()

    async def _wait_up(self) -> None:
        assert self._up is not None
        await self._up.wait()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _shutdown(self) -> None:
        for server in self.servers:
            server.close()
        for close in self.closers:
            close()
        for writers in self.open.values():
            for writer in writers:
                _reset(writer)
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    # ------------------------------------------------------------------------- TCP

    async def _tcp(self, target: tuple[str, int]) -> int:
        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._spawn(self._connection(reader, writer, target))

        server = await asyncio.start_server(accepted, "127.0.0.1", 0, limit=self.chunk)
        self.servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def _connection(
        self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter, target: tuple[str, int]
    ) -> None:
        if self.mode == "refuse":
            _reset(c_writer)
            return
        self.accepted += 1
        lost_syn_at = time.monotonic() if self.mode == "blackhole" else None
        _small_buffer(c_writer)
        task = asyncio.current_task()
        assert task is not None
        self.open[task] = [c_writer]
        try:
            await self._carry(c_reader, c_writer, target, self.open[task], lost_syn_at)
        finally:
            self.open.pop(task, None)

    async def _carry(
        self,
        c_reader: asyncio.StreamReader,
        c_writer: asyncio.StreamWriter,
        target: tuple[str, int],
        writers: list[asyncio.StreamWriter],
        lost_syn_at: float | None,
    ) -> None:
        # A connection made during an outage gets no further until the link is back and
        # its SYN is resent, and one its client gave up on meanwhile never reaches the
        # server.
        held = await self._hold_new(c_reader, lost_syn_at)
        if held is None:
            c_writer.close()
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
            sock.setblocking(False)
            await self.loop.sock_connect(sock, target)
            s_reader, s_writer = await asyncio.open_connection(sock=sock, limit=self.chunk)
        except OSError:
            sock.close()
            c_writer.close()
            return
        except asyncio.CancelledError:  # a "refuse" cut while connecting: reset this side too
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()
            raise
        writers.append(s_writer)
        s_writer.write(held)
        pumps = [
            asyncio.ensure_future(self._pump(c_reader, s_writer, UP)),
            asyncio.ensure_future(self._pump(s_reader, c_writer, DOWN)),
        ]
        try:
            await asyncio.gather(*pumps)
        except (OSError, asyncio.IncompleteReadError):
            pass  # one side reset: the other is closed below, as a reset would do
        finally:
            for pump in pumps:
                pump.cancel()
            for writer in (c_writer, s_writer):
                writer.close()

    async def _hold_new(self, c_reader: asyncio.StreamReader, lost_syn_at: float | None) -> bytes | None:
        """Wait for the link to be up (and a lost SYN to be resent after the restore).

        Returns what the client sent meanwhile, None if it left.
        """
        assert self._up is not None
        held = b""
        while True:
            if not self._up.is_set():
                waiter = asyncio.ensure_future(self._up.wait())
            else:
                left = 0.0
                if lost_syn_at is not None:
                    restored = self.restored_at
                    resent = [lost_syn_at + t for t in SYN_RETRIES if lost_syn_at + t >= restored]
                    left = (resent[0] if resent else restored) - time.monotonic()
                if left <= 0:
                    return held
                waiter = asyncio.ensure_future(asyncio.sleep(left))
            read = asyncio.ensure_future(c_reader.read(self.chunk))
            done, _ = await asyncio.wait({read, waiter}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            if read not in done:
                read.cancel()  # bytes not yet returned stay in the reader's buffer
                continue
            data = read.result()
            if not data:
                return None
            held += data

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, direction: str) -> None:
        """One direction of one connection: read, pay the rate, wait the delay, write."""
        in_flight: asyncio.Queue[tuple[float, float, bytes]] = asyncio.Queue(maxsize=64)

        async def deliver() -> None:
            while True:
                due, sent_at, data = await in_flight.get()
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                await self._wait_up()
                if sent_at < self.restored_at:  # lost in the outage: resent at the restore
                    due = max(due, self.restored_at + self.delay)
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                # Counted first: the write's send() lets the reader (another thread) run.
                self.sent.add(direction, len(data))
                writer.write(data)
                await writer.drain()

        delivering = asyncio.ensure_future(deliver())
        try:
            while True:
                await self._wait_up()  # while cut, leave the bytes with the sender
                data = await reader.read(self.chunk)
                await self.buckets[direction].take(len(data))
                await self._wait_up()
                sent_at = time.monotonic()
                await in_flight.put((sent_at + self.delay, sent_at, data))
                if not data:
                    break
            await delivering
        finally:
            delivering.cancel()

    # ------------------------------------------------------------------------- UDP

    async def _udp(self, target: tuple[str, int]) -> int:
        link = self
        client: list[tuple[str, int]] = []  # the client's latest address (mosh roams ports)
        queues = {DOWN: _DatagramQueue(self, DOWN), UP: _DatagramQueue(self, UP)}

        class Upstream(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                if client:
                    queues[DOWN].offer(data, lambda d: listen.sendto(d, client[-1]))

        class Listener(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                client[:] = [addr]
                queues[UP].offer(data, upstream.sendto)

        listen, _ = await self.loop.create_datagram_endpoint(Listener, local_addr=("127.0.0.1", 0))
        upstream, _ = await self.loop.create_datagram_endpoint(Upstream, remote_addr=target)
        self.closers.extend([listen.close, upstream.close])
        for queue in queues.values():
            link._spawn(queue.run())
        return int(listen.get_extra_info("sockname")[1])


class _DatagramQueue:
    """A router's queue for one direction: drop when cut or when too much is waiting."""

    def __init__(self, link: Link, direction: str) -> None:
        self.link = link
        self.direction = direction
        self.items: collections.deque[tuple[bytes, Callable[[bytes], None]]] = collections.deque()
        self.bytes = 0
        self.limit = 1 << 30 if link.rate is None else max(64 * 1024, int(link.rate * UDP_QUEUE_SECONDS))
        self.ready = asyncio.Event()

    def offer(self, data: bytes, send: Callable[[bytes], None]) -> None:
        if not self.link.is_up or self.bytes + len(data) > self.limit:
            return  # lost, as on a real link
        self.items.append((data, send))
        self.bytes += len(data)
        self.ready.set()

    async def run(self) -> None:
        while True:
            await self.ready.wait()
            self.ready.clear()
            while self.items:
                data, send = self.items.popleft()
                self.bytes -= len(data)
                await self.link.buckets[self.direction].take(len(data))
                if self.link.is_up:
                    self.link.loop.call_later(self.link.delay, self._deliver, data, send)

    def _deliver(self, data: bytes, send: Callable[[bytes], None]) -> None:
        if self.link.is_up:  # a datagram still on the wire when the link is cut is lost
            self.link.sent.add(self.direction, len(data))
            with contextlib.suppress(OSError):
                send(data)


class LinkProxy:
    """One TCP port through a link of its own: 127.0.0.1:``port`` reaches 127.0.0.1:``target``.

    Unlimited and without delay unless told; :meth:`cut` (``"blackhole"`` or ``"refuse"``),
    :meth:`restore` and :meth:`close` act on its link, ``accepted`` counts its connections.
    """

    def __init__(self, target: int, rate: float | None = None, delay: float = 0.0) -> None:
        self.link = Link(rate=rate, delay=delay).start()
        self.port = self.link.tcp(("127.0.0.1", target))

    @property
    def accepted(self) -> int:
        return self.link.accepted

    def cut(self, mode: str) -> None:
        self.link.cut(mode)

    def restore(self) -> None:
        self.link.restore()

    def close(self) -> None:
        self.link.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a RST, as a vanished path does, not a polite FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def _small_buffer(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECV_BUFFER)
