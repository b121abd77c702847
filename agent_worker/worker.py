"""The worker's trio program: one session, from its agent's start to the worker's exit.

Data path, in one direction only: the PTY reader appends what the agent printed to the
log, then wakes the clients; each client's sender reads the log from its own offset and
sends it.  So the reader never waits on a client, a slow client costs one chunk of memory
and is simply served from further back in the log, and replay after a reconnect, replay
after a restart and a new attach are the same code.

The terminal model behind "attach shows the current screen" is fed from the log too, but
only when the output has gone quiet (it parses ~40x slower than the PTY delivers), and is
caught up just-in-time when a client asks for the screen.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import attrs
import structlog
import trio

from agent_worker import protocol as p
from agent_worker import settings
from agent_worker.activity.monitor import ActivityMonitor
from agent_worker.agent import Agent, wait_status
from agent_worker.log import OutputLog
from agent_worker.peer import refusal
from agent_worker.screen.keeper import ScreenKeeper
from agent_worker.snapshot import Snapshot, boot_id, describe_exit, process_start_time
from agent_worker.spec import SessionSpec
from agent_worker.stall import report_stalls
from agent_worker.streams import receive_message
from agent_worker.terminal_queries import QueryAnswerer

log = structlog.get_logger("agent_worker")

READ_BATCH = 1 << 20  # most bytes taken from the PTY before they are logged and shown
SEND_CHUNK = 256 * 1024  # most bytes in one Output frame to a client
HELLO_TIMEOUT = 10.0
SCREEN_IDLE = 0.05  # quiet time before the terminal model catches up in the background
SCREEN_STEP = 4096  # bytes fed to the model between checkpoints (~10 ms of parsing)
EXIT_DRAIN = 2.0  # after the agent exits, wait this long for the PTY to report its end
LINGER_MIN = 2.0  # an ended session keeps serving at least this long...
LINGER_MAX = 60.0  # ...and at most this long while clients are still reading
DISK_RETRY = 1.0
STOP_GRACE = 10.0  # SIGTERM to SIGKILL of the agent on the worker's own SIGTERM


def stop_grace() -> float:
    """``SUPERV_STOP_GRACE`` (seconds), so that tests need not wait 10 s for a stubborn agent."""
    return settings.current().stop_grace

@attrs.define
class Client:
    id: int
    read_only: bool
    since: float
    mode: str


@attrs.define
class EarlySignals:
    """Signals that arrived before trio took over signal handling."""

    hup: bool = False
    term: bool = False

    def install(self) -> None:
        signal.signal(signal.SIGHUP, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)

    def _on_signal(self, signum: int, _frame: object) -> None:
        if signum == signal.SIGHUP:
            self.hup = True
        else:
            self.term = True


class Worker:
    def __init__(
        self,
        spec: SessionSpec,
        directory: Path,
        listen_sock: socket.socket,
        agent: Agent,
        output: OutputLog,
        snapshot_interval: float,
        early: EarlySignals,
        stop_grace: float = STOP_GRACE,
    ) -> None:
        self.spec = spec
        self.directory = directory
        self.listen_sock = listen_sock
        self.agent = agent
        self.output = output
        self.snapshot_interval = snapshot_interval
        self.early = early
        self.stop_grace = stop_grace
        self.rows, self.cols = spec.rows, spec.cols
        self.started_at = time.time()
        self.worker_start = process_start_time(os.getpid()) or 0
        self.boot_id = boot_id()
        self.clients: dict[int, Client] = {}
        self.watchers: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._next_client = 1
        self.subscribers: set[_Subscriber] = set()
        self.screen_lot = trio.lowlevel.ParkingLot()  # wakes the terminal model's catch-up
        self.pty_eof = trio.Event()
        self.ended = trio.Event()
        self.final_persisted = trio.Event()
        self.exit_code: int | None = None
        self.exit_signal: int | None = None
        self.ended_at: float | None = None
        self.stopping = False
        self.terminated = trio.Event()  # SIGTERM received
        self._term_deadline = math.inf  # clients may keep an ended worker until then
        self._seq = 0
        self._persist_lock = trio.Lock()
        self.screen = ScreenKeeper(output.reader, output.end, self.rows, self.cols)
        self.queries = QueryAnswerer()  # answers them while no terminal is attached
        self.unlogged = b""  # output read from the PTY that the disk has not taken yet
        self._disk_refused = False
        self.activity = ActivityMonitor(self)  # activity: what the agent is doing

    # ---- state -------------------------------------------------------------------------

    @property
    def state(self) -> str:
        if not self.ended.is_set():
            return "running"
        return describe_exit(self.exit_code, self.exit_signal)

    def snapshot(self) -> Snapshot:
        self._seq += 1
        return Snapshot(
            name=self.spec.name,
            worker_pid=os.getpid(),
            worker_start=self.worker_start,
            agent_pid=self.agent.pid,
            argv=list(self.spec.argv),
            cwd=self.spec.cwd,
            started_at=self.started_at,
            state=self.state,
            exit_code=self.exit_code,
            exit_signal=self.exit_signal,
            ended_at=self.ended_at,
            log_end=self.output.end,
            last_output_at=self.output.last_output_at,
            rows=self.rows,
            cols=self.cols,
            clients=[attrs.asdict(c) for c in self.clients.values()],
            seq=self._seq,
            boot_id=self.boot_id,
            **self.activity.snapshot_fields(),  # activity
        )

    def info(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "state": self.state,
            "agent_pid": self.agent.pid,
            "worker_pid": os.getpid(),
            "log_end": self.output.end,
            "rows": self.rows,
            "cols": self.cols,
            "started_at": self.started_at,
            "dir": str(self.directory),
        }

    async def persist(self, reason: str) -> None:
        """Make the log durable and write a snapshot, off the trio thread.

        The snapshot is taken in the trio thread, so it is one consistent state, and under
        the lock, so a snapshot never overwrites a newer one; only the file work runs in a
        thread, so a slow disk never stalls the PTY reader.
        """
        async with self._persist_lock:
            snap = self.snapshot()
            try:
                await trio.to_thread.run_sync(self._persist_sync, snap)
            except OSError as exc:
                log.error("snapshot_failed", reason=reason, error=str(exc))
                self.broadcast({"event": "snapshot_failed", "error": str(exc)})
            else:
                log.debug("persisted", reason=reason, seq=snap.seq, log_end=snap.log_end)

    def _persist_sync(self, snap: Snapshot) -> None:
        self.output.sync()
        snap.write(self.directory)

    def broadcast(self, event: dict[str, Any]) -> None:
        body = {"session": self.spec.name, "time": time.time(), **event}
        for channel in list(self.watchers.values()):
            try:
                channel.send_nowait(body)
            except trio.WouldBlock:
                pass  # a watcher that does not read loses events, never stalls the worker
            except trio.BrokenResourceError:
                pass

    # ---- main ----------------------------------------------------------------------------

    async def run(self) -> None:
        with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._handle_signals, signals)
                if self.early.hup:
                    nursery.start_soon(self.persist, "sighup")
                if self.early.term:
                    nursery.start_soon(self._terminate)
                nursery.start_soon(self._read_pty)
                nursery.start_soon(self._wait_agent)
                nursery.start_soon(self._snapshot_loop)
                nursery.start_soon(report_stalls, self.broadcast,
                                   lambda: self.output.last_output_at or self.started_at, self.ended)
                nursery.start_soon(self._screen_catch_up_forever)
                nursery.start_soon(self.activity.run)  # activity: off the hot path
                listener = trio.SocketListener(trio.socket.from_stdlib_socket(self.listen_sock))
                nursery.start_soon(trio.serve_listeners, self._serve_client, [listener])
                # Not just ``ended``: the exit must be on disk before shutdown cancels anything.
                await self.final_persisted.wait()
                await self._linger()
                nursery.cancel_scope.cancel()
        self.broadcast({"event": "worker_exit"})

    async def _linger(self) -> None:
        if self.stopping and not self.clients:
            return
        deadline = trio.current_time() + LINGER_MAX
        with trio.move_on_after(0 if self.stopping else LINGER_MIN):
            await self.terminated.wait()  # a SIGTERM cuts the minimum stay short...
        # ...and leaves clients LINGER_MIN to finish reading, not LINGER_MAX.
        while self.clients and trio.current_time() < min(deadline, self._term_deadline):
            await trio.sleep(0.1)

    async def _handle_signals(self, signals: Any) -> None:
        async for signum in signals:
            if signum == signal.SIGHUP:
                # The terminal's hangup is not ours to obey: persist and keep working.
                log.info("sighup")
                await self.persist("sighup")
            elif signum == signal.SIGTERM and not self.stopping:
                self._nursery.start_soon(self._terminate)

    def _begin_stop(self) -> None:
        """From now on the session is ending: clients get LINGER_MIN more, then we exit."""
        self.stopping = True
        self._term_deadline = min(self._term_deadline, trio.current_time() + LINGER_MIN)
        self.terminated.set()

    async def _terminate(self) -> None:
        log.info("sigterm")
        self._begin_stop()
        await self.persist("sigterm")
        await self.stop_agent(grace=self.stop_grace)

    async def stop_agent(self, grace: float) -> None:
        if self.ended.is_set():
            return
        self.agent.signal_group(signal.SIGTERM)
        with trio.move_on_after(grace):
            await self.ended.wait()
            return
        log.warning("agent_kill_after_grace", grace=grace)
        self.agent.signal_group(signal.SIGKILL)

    async def _snapshot_loop(self) -> None:
        await self.persist("start")
        while True:
            await trio.sleep(self.snapshot_interval)
            await self.persist("interval")

    async def _wait_agent(self) -> None:
        await trio.lowlevel.wait_readable(self.agent.pidfd)
        self.exit_code, self.exit_signal = wait_status(self.agent.pid)
        # A background process may hold the PTY open; do not wait for it forever.
        with trio.move_on_after(EXIT_DRAIN):
            await self.pty_eof.wait()
        # But never end the session with output not yet in the log (a full disk), unless
        # someone is stopping it.
        while self.unlogged and not self.stopping:
            await trio.sleep(DISK_RETRY)
        self.ended_at = time.time()
        self.ended.set()
        self.activity.agent_ended()  # activity
        self._wake_all()
        log.info("agent_exited", state=self.state)
        await self.persist("exited")
        self.broadcast({"event": "exited", "state": self.state, "exit_code": self.exit_code,
                        "exit_signal": self.exit_signal})
        self.final_persisted.set()

    # ---- the PTY reader: the hot path -------------------------------------------------------

    async def _read_pty(self) -> None:
        fd = self.agent.master_fd
        eof = False
        while True:
            if self.unlogged:
                # The disk refused output: keep it and read nothing more until it is
                # logged, so the agent blocks on its own writes instead of losing any.
                self.unlogged = await self._log_batch(self.unlogged)
                continue
            if eof:
                break
            await trio.lowlevel.wait_readable(fd)
            chunks = []
            total = 0
            while total < READ_BATCH:
                try:
                    data = os.read(fd, 65536)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EIO:  # EIO: every slave fd is closed
                        raise
                    eof = True
                    break
                if not data:
                    eof = True
                    break
                chunks.append(data)
                total += len(data)
            if chunks:
                batch = b"".join(chunks) if len(chunks) != 1 else chunks[0]
                self.unlogged = await self._log_batch(batch)
        self.pty_eof.set()
        self._wake_all()

    async def _log_batch(self, batch: bytes) -> bytes:
        """Log ``batch``, show it to the clients, and return what the disk refused."""
        try:
            written = self.output.append(batch)
        except OSError as exc:
            # Disk full or file too big: other sessions are untouched, and this one
            # waits for room.  Said once per outage, not once per retry.
            if not self._disk_refused:
                self._disk_refused = True
                log.error("log_write_failed", error=str(exc))
                self.broadcast({"event": "log_write_failed", "error": str(exc)})
            await trio.sleep(DISK_RETRY)
            return batch
        if self._disk_refused:
            self._disk_refused = False
            log.info("log_write_resumed")
        logged = batch[:written] if written < len(batch) else batch
        self._publish(self.output.end - written, logged)
        if self._no_interactive_client():
            answers = self.queries.feed(logged, lambda: self.screen.cursor(self.output.end))
            if answers:
                self._write_input_nowait(answers)
        else:
            self.queries.skip()
        return batch[written:]

    def _publish(self, start: int, data: bytes) -> None:
        """Hand output that was just logged to the clients.

        A client that is caught up and idle gets it straight from memory, by a send that
        does not wait: the echo of a keystroke then costs no task switch and no read of
        the log.  Whatever a client's socket does not take at once, and every client that
        is behind, is left to that client's own sender, which reads the log.
        """
        frame = None
        for sub in self.subscribers:
            if sub.parked and sub.pos == start and len(data) <= p.MAX_OUTPUT_CHUNK:
                if frame is None:
                    frame = p.encode_output(start, data)
                if sub.stream.send_nowait(frame):
                    sub.pos = start + len(data)
                    if not sub.stream.pending:
                        continue  # all sent: its sender sleeps on
            sub.lot.unpark_all()
        self.screen_lot.unpark_all()

    def _wake_all(self) -> None:
        for sub in self.subscribers:
            sub.lot.unpark_all()
        self.screen_lot.unpark_all()

    def _no_interactive_client(self) -> bool:
        return not any(c.mode != "watch" and not c.read_only for c in self.clients.values())

    def _write_input_nowait(self, data: bytes) -> None:
        # If the agent is not reading its input, a query answer is not worth waiting for.
        with contextlib.suppress(OSError):
            os.write(self.agent.master_fd, data)

    async def write_input(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.agent.master_fd, view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.agent.master_fd)
            except OSError:
                return  # the agent has gone; its exit is reported elsewhere

    # ---- terminal model ------------------------------------------------------------------

    async def _screen_catch_up_forever(self) -> None:
        while True:
            if self.screen.offset >= self.output.end or self.screen.failed:
                await self.screen_lot.park()
                continue
            seen = self.output.end
            await trio.sleep(SCREEN_IDLE)
            if self.output.end != seen:
                continue  # still busy: parsing now would only compete with the reader
            while not self.screen.step(self.output.end, SCREEN_STEP):
                await trio.sleep(0)
                if self.output.end != seen:
                    break

    def set_size(self, rows: int, cols: int) -> None:
        if (rows, cols) == (self.rows, self.cols) or not rows or not cols:
            return
        # The model must see everything printed at the old size before it changes size.
        self.screen.resize(self.output.end, rows, cols)
        self.rows, self.cols = rows, cols
        self.agent.resize(rows, cols)

    def _force_redraw(self) -> None:
        """Make the agent repaint: the kernel signals SIGWINCH only on a real size change."""
        self.agent.resize(self.rows, max(1, self.cols - 1))
        self.agent.resize(self.rows, self.cols)

    # ---- clients -----------------------------------------------------------------------

    async def _serve_client(self, stream: trio.SocketStream) -> None:
        try:
            await self._serve_client_inner(stream)
        except Exception:
            # A bug met while serving one client drops that client, never the session.
            log.exception("client_failed")

    async def _serve_client_inner(self, stream: trio.SocketStream) -> None:
        async with stream:
            refused = refusal(stream.socket)  # type: ignore[arg-type]
            if refused:
                log.warning("client_refused", reason=refused)
                await _send_quietly(stream, p.Error(refused))
                return
            decoder = p.Decoder()
            try:
                with trio.fail_after(HELLO_TIMEOUT):
                    hello = await receive_message(stream, decoder)
                if not isinstance(hello, p.Hello):
                    raise p.ProtocolError("expected a hello frame first")
                if hello.version != p.VERSION:
                    raise p.ProtocolError(
                        f"protocol version {hello.version} is not {p.VERSION}: "
                        "the client and the worker come from different superv versions"
                    )
            except (p.ProtocolError, trio.TooSlowError) as exc:
                message = str(exc) if isinstance(exc, p.ProtocolError) else "no hello in time"
                log.warning("client_protocol_error", error=message)
                await _send_quietly(stream, p.Error(message))
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError, EOFError):
                return
            await self._attach(stream, decoder, hello)

    async def _attach(self, stream: trio.SocketStream, decoder: p.Decoder, hello: p.Hello) -> None:
        client_id = self._next_client
        self._next_client += 1
        watch = hello.start == p.Start.WATCH
        client = Client(client_id, hello.read_only, time.time(), "watch" if watch else "attach")
        events_in: trio.MemoryReceiveChannel[dict[str, Any]] | None = None
        if watch:
            events_out, events_in = trio.open_memory_channel[dict[str, Any]](256)
            self.watchers[client_id] = events_out
        else:
            self.clients[client_id] = client
            if not hello.read_only:
                self.set_size(hello.rows, hello.cols)
        shared = _SharedStream(stream)
        try:
            async with trio.open_nursery() as nursery:
                await shared.send_all(p.encode(p.Welcome(self.info())))
                if watch:
                    assert events_in is not None
                    nursery.start_soon(self._send_events, shared, events_in)
                else:
                    start = await self._start_offset(shared, hello)
                    subscriber = _Subscriber(shared, start)
                    nursery.start_soon(self._send_output, subscriber, nursery.cancel_scope)
                    self.broadcast({"event": "attached", "client": client_id,
                                    "read_only": hello.read_only})
                    nursery.start_soon(self.persist, "attached")
                await self._receive_from_client(shared, decoder, client)
                nursery.cancel_scope.cancel()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except p.ProtocolError as exc:
            log.warning("client_protocol_error", error=str(exc), client=client_id)
            await _send_quietly(stream, p.Error(str(exc)))
        finally:
            if watch:
                self.watchers.pop(client_id, None)
            elif self.clients.pop(client_id, None) is not None:
                self.broadcast({"event": "detached", "client": client_id})
                if not self.ended.is_set() or not self.stopping:
                    self._nursery.start_soon(self.persist, "detached")

    async def _start_offset(self, stream: _SharedStream, hello: p.Hello) -> int:
        end = self.output.end
        if hello.start == p.Start.OFFSET:
            return min(hello.value, end)
        if hello.start == p.Start.TAIL:
            return self.output.reader.tail_offset(hello.value, end)
        # Start.SCREEN: paint the model as of ``end``, then stream from ``end``.
        painted = self.screen.render(end)
        if painted is None:  # no model (its failure is logged): show the last lines raw
            start = max(self.output.reader.tail_offset(hello.rows, end), end - SCREEN_STEP * 16)
            painted = b"\x1b[H\x1b[2J" + self.output.reader.read(start, end - start)
        await stream.send_all(p.encode(p.Screen(end, painted)))
        if not self.screen.exact and not hello.read_only:
            self._force_redraw()
        return end

    async def _send_output(self, sub: _Subscriber, scope: trio.CancelScope) -> None:
        """Serve one client from the log, from its offset on; the reader may serve it too."""
        reader = self.output.reader
        stream = sub.stream
        self.subscribers.add(sub)
        try:
            while True:
                end = self.output.end
                if stream.pending:
                    await stream.send_all(b"")  # finish the frame the reader started
                elif sub.pos < end:
                    data = reader.read(sub.pos, min(end - sub.pos, SEND_CHUNK))
                    await stream.send_all(p.encode_output(sub.pos, data))
                    sub.pos += len(data)
                elif self.ended.is_set():
                    await stream.send_all(p.encode(p.Event(
                        {"event": "exited", "state": self.state, "exit_code": self.exit_code,
                         "exit_signal": self.exit_signal, "log_end": sub.pos})))
                    scope.cancel()
                    return
                else:
                    sub.parked = True
                    try:
                        await sub.lot.park()
                    finally:
                        sub.parked = False
        finally:
            self.subscribers.discard(sub)

    async def _send_events(
        self, stream: _SharedStream, events: trio.MemoryReceiveChannel[dict[str, Any]]
    ) -> None:
        async for event in events:
            await stream.send_all(p.encode(p.Event(event)))

    async def _receive_from_client(
        self, stream: _SharedStream, decoder: p.Decoder, client: Client
    ) -> None:
        warned = False
        while True:
            for msg in decoder:
                if isinstance(msg, p.Detach):
                    return
                if client.read_only and isinstance(msg, p.Input | p.Resize | p.Signal | p.Stop):
                    if not warned:
                        warned = True
                        await stream.send_all(p.encode(p.Event(
                            {"event": "refused", "reason": "read-only attach: input ignored"})))
                    continue
                await self._handle(msg)
            data = await stream.receive_some(65536)
            if not data:
                return
            decoder.feed(data)

    async def _handle(self, msg: p.Message) -> None:
        match msg:
            case p.Input(data):
                await self.write_input(data)
            case p.Resize(rows, cols):
                self.set_size(rows, cols)
                self._nursery.start_soon(self.persist, "resized")
            case p.Signal(signum):
                try:
                    self.agent.signal(signal.Signals(signum))
                except ValueError:
                    raise p.ProtocolError(f"no such signal number {signum}") from None
            case p.Stop(grace_ms):
                # Also how the supervisor releases an ended worker it is about to restart.
                self._begin_stop()
                self._nursery.start_soon(self.stop_agent, grace_ms / 1000)
            case _:
                raise p.ProtocolError(f"a client may not send {type(msg).__name__}")


@attrs.define(eq=False)
class _Subscriber:
    """An attach client's place in the output stream, shared by its sender and the reader."""

    stream: _SharedStream
    pos: int
    lot: trio.lowlevel.ParkingLot = attrs.Factory(trio.lowlevel.ParkingLot)
    parked: bool = False  # its sender is asleep, caught up, with nothing half-sent


class _SharedStream:
    """One client's stream, shared by its tasks: whole frames, one sender at a time.

    trio refuses a second ``send_all`` while one is in progress (BusyResourceError), and
    the output sender and the receiver's "refused" notice do meet on a busy client.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._send_lock = trio.StrictFIFOLock()
        self.pending = b""  # the rest of a frame that send_nowait could not finish

    async def send_all(self, data: bytes) -> None:
        async with self._send_lock:
            if self.pending:
                rest, self.pending = self.pending, b""
                await self.stream.send_all(rest)
            if data:
                await self.stream.send_all(data)

    def send_nowait(self, frame: bytes) -> bool:
        """Start sending ``frame`` without waiting, if nobody else is sending.

        True if the socket took some or all of it (the rest is in ``pending``, and must be
        flushed by ``send_all`` before anything else is sent); False if nothing was sent.
        """
        if self._send_lock.locked() or self.pending:
            return False
        try:
            sent = os.write(self.stream.socket.fileno(), frame)
        except OSError:
            return False  # full (EAGAIN) or broken: the client's own sender finds out
        self.pending = frame[sent:]
        return sent > 0

    async def receive_some(self, max_bytes: int) -> bytes:
        return await self.stream.receive_some(max_bytes)


async def _send_quietly(stream: trio.SocketStream, msg: p.Message) -> None:
    try:
        with trio.move_on_after(1):
            await stream.send_all(p.encode(msg))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
