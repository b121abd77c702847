"""The PTY's output, as trio sees it: what the hot path (:mod:`agent_worker.hot_path`)
logged, handed on to everyone in trio.

The hot path's thread reads the PTY, appends each batch to the log before anyone sees it
and writes it to the caught-up handed terminals; then it tells this reader, in trio, at
most one pending call at a time (batches coalesce).  This reader hands the news on:
:meth:`Fanout.publish` for the socket clients, ``on_logged`` for the terminal-query
answerer, a wake-up for the handed terminals that fell behind or have keys for trio.  It
owns the PTY's state as trio knows it: ``eof``, ``all_logged``, and the full disk's
notices (``log_write_failed`` once per outage, a standing one that a watcher coming
meanwhile gets too, and ``log_write_resumed``; the hot path keeps the refused batch and
retries).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
import trio

from agent_worker.conversation import Notice
from agent_worker.fanout import Fanout
from agent_worker.hot_path import HotPath, tell_delay
from agent_worker.log import OutputLog

log = structlog.get_logger("agent_worker")

DISK_HOLD = "disk_hold"  # the fanout's standing state: the disk refuses the log


class PtyReader:
    def __init__(
        self,
        fd: int,
        output: OutputLog,
        fanout: Fanout,
        on_logged: Callable[[bytes], None],
    ) -> None:
        self.fd = fd
        self.output = output
        self.fanout = fanout
        self._on_logged = on_logged  # sees each logged batch (the terminal-query answerer)
        self.hot = HotPath(fd, output, lambda: tell_delay(bool(fanout.subscribers), bool(fanout.terminals)))
        fanout.hot = self.hot
        self.unlogged = 0  # bytes read from the PTY that the disk has not taken yet
        self.all_logged = trio.Event()  # set while ``unlogged`` is 0
        self.all_logged.set()
        self.eof = trio.Event()  # the PTY reported its end (every slave fd closed)
        # time.time() of the agent's own output last heard of (not a keystroke's echo:
        # hot_path.ECHO_WINDOW), for the activity's quiet-time rule; None: none yet.
        self.agent_output_at: float | None = None
        self._failure: BaseException | None = None

    async def run(self) -> None:
        self.hot.start(self._hear)
        await self.eof.wait()
        if self._failure is not None:
            raise self._failure  # a bug on the hot path: the worker ends, as it would here
        self.fanout.wake_all()

    def disk_hold(self) -> str | None:
        """The error with which the disk refuses the log now (None: it takes it)."""
        notice = self.fanout.standing.get(DISK_HOLD)
        return None if notice is None else str(notice.fields.get("error"))

    def _disk_resumed(self) -> None:
        log.info("log_write_resumed")
        self.fanout.declare(DISK_HOLD, Notice("log_write_resumed"), holds=False)

    def _hear(self) -> None:
        """(In trio.)  What the hot path did since we last heard: hand it on."""
        news = self.hot.take_news()
        # An outage's end and a new one can both come in one telling: the last is the
        # one that holds now.
        if news.disk_resumed and news.disk_failing:
            self._disk_resumed()
        if news.disk_error is not None:
            # Disk full or file too big: other sessions are untouched, and this one
            # waits for room (the agent blocked on its writes: ``superv ls`` says so).
            log.error("log_write_failed", error=news.disk_error)
            self.fanout.declare(DISK_HOLD, Notice("log_write_failed", {
                "error": news.disk_error, "since": round(time.time(), 3)}), holds=True)
        if news.disk_resumed and not news.disk_failing:
            self._disk_resumed()
        self.fanout.told = news.end
        if news.agent_output_at is not None:
            self.agent_output_at = news.agent_output_at
        if news.end > news.start:
            if news.data is not None:
                self.fanout.publish(news.start, news.data)
                self._on_logged(news.data)
            else:  # too much to keep: the clients read it from the log
                self.fanout.wake_all()
        for term in news.terminals:
            term.lot.unpark_all()
            term.news_lot.unpark_all()
        if news.unlogged and not self.unlogged:
            self.all_logged = trio.Event()
        elif not news.unlogged and self.unlogged:
            self.all_logged.set()
        self.unlogged = news.unlogged
        if news.failure is not None:
            self._failure = news.failure
        if news.eof or news.failure is not None:
            self.eof.set()
