"""The worker's trio program: one session, from its agent's start to the worker's exit.

Data path, in one direction only: the PTY reader (:mod:`agent_worker.pty_reader`, through
the hot path's thread, :mod:`agent_worker.hot_path`) appends
what the agent printed to the log, then the fan-out (:mod:`agent_worker.fanout`) wakes
the clients; each client's sender (:mod:`agent_worker.client_service`) reads the log from
its own offset and sends it.  So the reader never waits on a client, a slow client costs
one chunk of memory and is simply served from further back in the log, and replay after a
reconnect, replay after a restart and a new attach are the same code.

:class:`Worker` owns what is the session's own: the agent and its end, the window size,
the signals, when the worker stops.  Each part owns its state, and all of them run as
tasks of the one nursery that :meth:`Worker.run` opens and passes on:

- :class:`~agent_worker.pty_reader.PtyReader`: the PTY, the log's appends, a full disk, by
  way of the hot path's thread (:mod:`agent_worker.hot_path`), whose news it hands on;
- :class:`~agent_worker.fanout.Fanout`: the attach clients' places and the watchers;
- :class:`~agent_worker.client_service.ClientService`: the socket's conversations;
- :class:`~agent_worker.persistence.Persister`: fsyncs and snapshots;
- :class:`~agent_worker.screen.keeper.ScreenKeeper`: the screen model, fed from the log
  off the hot path (the worker decides when: :meth:`Worker._keep_screen_current`);
- :class:`~agent_worker.terminal_queries.QueryAnswerer`: the answers to a TUI's queries
  while no terminal is attached.
"""

from __future__ import annotations

import contextlib
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

from agent_worker import settings
from agent_worker.activity.monitor import ActivityMonitor
from agent_worker.agent import Agent, wait_status
from agent_worker.client_service import ClientService
from agent_worker.conversation import Exited, SessionInfo, event_from_body
from agent_worker.fanout import Fanout
from agent_worker.log import OutputLog
from agent_worker.persistence import Persister
from agent_worker.pty_reader import PtyReader
from agent_worker.screen.keeper import ScreenKeeper
from agent_worker.snapshot import Snapshot, boot_id, describe_exit, process_start_time
from agent_worker.spec import SessionSpec
from agent_worker.stall import report_stalls
from agent_worker.terminal_queries import QueryAnswerer

log = structlog.get_logger("agent_worker")

SCREEN_IDLE = 0.05  # quiet time before the terminal model catches up in the background
SCREEN_STEP = 4096  # bytes fed to the model between checkpoints (~10 ms of parsing)
EXIT_DRAIN = 2.0  # after the agent exits, wait this long for the PTY to report its end
LINGER_MIN = 2.0  # an ended session keeps serving at least this long...
LINGER_MAX = 60.0  # ...and at most this long while clients are still reading
STOP_GRACE = 10.0  # SIGTERM to SIGKILL of the agent on the worker's own SIGTERM
FAREWELL_TIMEOUT = 1.0  # for the watchers to take the last events (the exit) before we go


def stop_grace() -> float:
    """``SUPERV_STOP_GRACE`` (seconds), so that tests need not wait 10 s for a stubborn agent."""
    return settings.current().stop_grace


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


async def first_of(*events: trio.Event) -> None:
    """Return as soon as one of ``events`` is set."""
    async with trio.open_nursery() as nursery:
        for event in events:
            nursery.start_soon(_set_then_cancel, event, nursery.cancel_scope)


async def _set_then_cancel(event: trio.Event, scope: trio.CancelScope) -> None:
    await event.wait()
    scope.cancel()


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
        self.ended = trio.Event()  # the agent ended and all it printed is logged
        self.final_persisted = trio.Event()
        self.exit_code: int | None = None
        self.exit_signal: int | None = None
        self.ended_at: float | None = None
        self.stopping = False
        self.terminated = trio.Event()  # the session is being stopped (SIGTERM, Stop)
        self._term_deadline = math.inf  # clients may keep an ended worker until then
        self.fanout = Fanout()
        self.persister = Persister(directory, output, self.snapshot, self.fanout.broadcast)
        self.screen = ScreenKeeper(output.reader, output.end, self.rows, self.cols)
        self.queries = QueryAnswerer()
        self.clients = ClientService(self, self.fanout)
        self.pty = PtyReader(agent.master_fd, output, self.fanout, self._answer_queries)
        self.activity = ActivityMonitor(self)  # what the agent is doing, off the hot path
        self.screen_lot = self.fanout.woken  # what the activity monitor parks on

    # ---- state -------------------------------------------------------------------------

    @property
    def state(self) -> str:
        if not self.ended.is_set():
            return "running"
        return describe_exit(self.exit_code, self.exit_signal)

    def snapshot(self, seq: int) -> Snapshot:
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
            clients=[attrs.asdict(c) for c in self.clients.clients.values()],
            seq=seq,
            boot_id=self.boot_id,
            **self.activity.snapshot_fields(),
        )

    def info(self) -> SessionInfo:
        return SessionInfo(
            name=self.spec.name,
            state=self.state,
            agent_pid=self.agent.pid,
            worker_pid=os.getpid(),
            log_end=self.output.end,
            rows=self.rows,
            cols=self.cols,
            started_at=self.started_at,
            dir=str(self.directory),
            held=self.pty.disk_hold(),
        )

    def exit_event(self, log_end: int) -> Exited:
        return Exited(self.state, self.exit_code, self.exit_signal, log_end)

    def persist_soon(self, reason: str) -> None:
        self.persister.persist_soon(reason)

    async def persist(self, reason: str) -> None:
        await self.persister.persist(reason)

    def broadcast(self, body: dict[str, Any]) -> None:
        """An event for the watchers, as its JSON body (the activity monitor, stalls)."""
        self.fanout.broadcast(event_from_body(body))  # type: ignore[arg-type]

    # ---- main ----------------------------------------------------------------------------

    async def run(self) -> None:
        with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._handle_signals, signals, nursery)
                if self.early.hup:
                    nursery.start_soon(self.persister.persist, "sighup")
                if self.early.term:
                    nursery.start_soon(self._terminate)
                nursery.start_soon(self.pty.run)
                nursery.start_soon(self._wait_agent)
                nursery.start_soon(self.persister.run, self.snapshot_interval)
                nursery.start_soon(report_stalls, self.broadcast,
                                   lambda: self.output.last_output_at or self.started_at, self.ended)
                nursery.start_soon(self._keep_screen_current)
                nursery.start_soon(self.activity.run)
                listener = trio.SocketListener(trio.socket.from_stdlib_socket(self.listen_sock))
                nursery.start_soon(trio.serve_listeners, self.clients.serve, [listener])
                # Not just ``ended``: the exit must be on disk before shutdown cancels anything.
                await self.final_persisted.wait()
                await self._linger()
                await self._farewell()
                nursery.cancel_scope.cancel()

    async def _farewell(self) -> None:
        """Every watcher gets the events queued for it before we go.  The supervisor, one
        of them, learns how the agent ended from the ``exited`` event; when the snapshot
        could not be written (a full disk), it has nothing else to go by."""
        self.fanout.close_watchers()
        with trio.move_on_after(FAREWELL_TIMEOUT):  # a watcher that does not read
            await self.fanout.watchers_gone()

    async def _linger(self) -> None:
        """Serve the clients that are still reading a while after the end."""
        if self.stopping and not self.clients.clients:
            return
        deadline = trio.current_time() + LINGER_MAX
        with trio.move_on_after(0 if self.stopping else LINGER_MIN):
            await self.terminated.wait()  # a stop cuts the minimum stay short...
        # ...and leaves clients LINGER_MIN to finish reading, not LINGER_MAX.
        while self.clients.clients:
            waits = [self.clients.none_attached]
            if not self.terminated.is_set():
                waits.append(self.terminated)  # a stop brings the deadline forward
            with trio.move_on_at(min(deadline, self._term_deadline)) as scope:
                await first_of(*waits)
            if scope.cancelled_caught:
                return

    async def _handle_signals(self, signals: Any, nursery: trio.Nursery) -> None:
        async for signum in signals:
            if signum == signal.SIGHUP:
                # The terminal's hangup is not ours to obey: persist and keep working.
                log.info("sighup")
                await self.persister.persist("sighup")
            elif signum == signal.SIGTERM and not self.stopping:
                nursery.start_soon(self._terminate)

    def _begin_stop(self) -> None:
        """From now on the session is ending: clients get LINGER_MIN more, then we exit."""
        self.stopping = True
        self._term_deadline = min(self._term_deadline, trio.current_time() + LINGER_MIN)
        self.terminated.set()

    async def _terminate(self) -> None:
        log.info("sigterm")
        self._begin_stop()
        await self.persister.persist("sigterm")
        await self.stop_agent(grace=self.stop_grace)

    def stop(self, grace: float) -> None:
        """A client's Stop (``superv stop``; also how the supervisor releases an ended
        worker it is about to restart)."""
        self._begin_stop()
        self._nursery.start_soon(self.stop_agent, grace)

    async def stop_agent(self, grace: float) -> None:
        if self.ended.is_set():
            return
        self.agent.signal_group(signal.SIGTERM)
        with trio.move_on_after(grace):
            await self.ended.wait()
            return
        log.warning("agent_kill_after_grace", grace=grace)
        self.agent.signal_group(signal.SIGKILL)

    async def _wait_agent(self) -> None:
        await trio.lowlevel.wait_readable(self.agent.pidfd)
        self.exit_code, self.exit_signal = wait_status(self.agent.pid)
        await self._drain_pty()
        self.ended_at = time.time()
        self.ended.set()
        self.activity.agent_ended()
        self.fanout.wake_all()
        log.info("agent_exited", state=self.state)
        await self.persister.persist("exited")
        self.fanout.broadcast(self.exit_event(self.output.end))
        self.final_persisted.set()

    async def _drain_pty(self) -> None:
        """After the agent's exit, read the PTY to its end: a background process may hold
        it open, so not forever (EXIT_DRAIN); but never end the session with output not yet
        in the log (a full disk), unless someone is stopping it.  Once the disk takes the
        held batch, what the agent wrote after it is still in the PTY: drain again."""
        while True:
            with trio.move_on_after(EXIT_DRAIN):
                await self.pty.eof.wait()
            if self.pty.eof.is_set() or self.terminated.is_set() or not self.pty.unlogged:
                return
            await first_of(self.pty.all_logged, self.terminated)

    # ---- the agent's terminal ----------------------------------------------------------------

    def _answer_queries(self, logged: bytes) -> None:
        """With no one attached to answer a TUI's terminal queries, answer them ourselves."""
        if self.clients.interactive():
            self.queries.skip()  # the client answers these
            return
        answers = self.queries.feed(logged, self._cursor)
        if answers:
            # If the agent is not reading its input, an answer is not worth waiting for.
            with contextlib.suppress(OSError):
                os.write(self.agent.master_fd, answers)

    async def write_input(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            # Before the write: the line discipline echoes within it, and the hot path
            # may read the echo before this thread goes on.
            self.pty.hot.keys_typed(data)  # what the agent prints at once: their echo
            try:
                view = view[os.write(self.agent.master_fd, view) :]
            except BlockingIOError:
                await trio.lowlevel.wait_writable(self.agent.master_fd)
            except OSError:
                return  # the agent has gone; its exit is reported elsewhere

    def _cursor(self) -> tuple[int, int] | None:
        return self.screen.cursor(self.output.end)

    def signal_agent(self, signum: int) -> None:
        self.agent.signal(signum)

    def set_size(self, rows: int, cols: int) -> None:
        """The window size a read-write client has (checked by the conversation)."""
        if (rows, cols) == (self.rows, self.cols):
            return
        self.screen.resize(self.output.end, rows, cols)
        self.rows, self.cols = rows, cols
        self.agent.resize(rows, cols)

    def paint(self, until: int, last: bool = False) -> bytes:
        """What repaints a client's terminal to the screen as of log offset ``until``;
        ``last``: the agent's last screen, on the main screen (it has ended)."""
        painted = self.screen.render(until, last)
        if painted is None:  # no model (its failure is logged): show the last lines raw
            reader = self.output.reader
            start = max(reader.tail_offset(self.rows, until), until - SCREEN_STEP * 16)
            painted = b"\x1b[H\x1b[2J" + reader.read(start, until - start)
        return painted

    async def _keep_screen_current(self) -> None:
        """Feed the model in the background, only while the output is quiet: it parses
        ~40x slower than the PTY delivers, so it must never compete with the reader."""
        keeper, output, woken = self.screen, self.output, self.fanout.woken
        while True:
            if keeper.offset >= output.end or keeper.failed:
                await woken.park()
                continue
            quiet = time.time() - (output.last_output_at or 0.0)
            if quiet < SCREEN_IDLE:
                # Still busy: parsing now would only compete with the reader.  Look again
                # when trio next hears of output, not on a timer of our own: while the
                # output flows (gaps under SCREEN_IDLE) that news comes first, however late
                # trio hears (typing into a handed terminal: a quarter of a second), and
                # each wake-up of trio costs about a key's CPU.  Quiet since: this timeout.
                with trio.move_on_after(self.pty.hot.news_delay() + SCREEN_IDLE - quiet):
                    await woken.park()
                continue
            seen = output.end
            while not keeper.step(output.end, SCREEN_STEP):
                await trio.sleep(0)
                if output.end != seen:
                    break

    def screen_exact(self) -> bool:
        return self.screen.exact

    def force_redraw(self) -> None:
        """Make the agent repaint: the kernel signals SIGWINCH only on a real size change."""
        self.agent.resize(self.rows, max(1, self.cols - 1))
        self.agent.resize(self.rows, self.cols)
