"""The worker's screen model, kept off the hot path and rebuilt when it fails.

The model parses ~40 times slower than a PTY delivers, so the worker never feeds it inline
with the PTY reader: it is fed from the log, in small steps when the session is quiet and
just-in-time when a client asks for the screen (attach, peek, a cursor-position query).

A failure of the model is a bug, and it must cost no more than the screen it was drawing:
it is logged with its traceback (``screen_model_failed``), the model is dropped, and the
next request rebuilds it from the recent output in the log (:func:`recent_start`).  Only
when that rebuild fails too does the request get no screen (``None``), and the one after it
tries again: nothing a client sends or a program prints makes the screen broken for good.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import structlog

from agent_worker.log import LogReader
from agent_worker.screen import ScreenModel
from agent_worker.screen_from_log import recent_start

log = structlog.get_logger("agent_worker.screen")
T = TypeVar("T")

RESTART_WINDOW = 64 * 1024  # how much recent output a restarted model is fed
# Beyond this far behind, the model restarts from recent output rather than parse it all.
# A paint runs inline, and the worker does nothing else meanwhile: at 512 kB a paint after a
# flood took 0.82 s for 362 kB (the slow-link bench's Ctrl-C waited for it, unread).
BACKLOG = 2 * RESTART_WINDOW
READ = 65536  # bytes read from the log per feed
LAST_LINE_MAX = 300  # characters of the last line that ls and the events carry


class ScreenKeeper:
    """One session's screen model, fed from its log up to any offset on request.

    ``offset`` is the log offset the model has been fed up to.  Not thread-safe; the
    worker is its one owner.
    """

    def __init__(self, reader: LogReader, offset: int, rows: int, cols: int) -> None:
        self.reader = reader
        self.rows, self.cols = rows, cols
        self.offset = offset
        self.exact = True  # False: started mid-stream, may miss what was drawn before
        self.failed = False  # the last model failed: rebuild it on the next request
        self._model: ScreenModel | None = None

    def screen(self, until: int) -> ScreenModel | None:
        """The model, fed up to ``until``; None if it cannot be built (logged)."""
        for _ in range(2):  # the model as it is (or rebuilt after a failure), then a rebuild
            if self._guarded(self._feed, until) is not None:
                return self._model
        return None

    def step(self, until: int, size: int) -> bool:
        """Feed at most ``size`` more bytes towards ``until`` (background catch-up); True
        when nothing is left to do.  A failed model waits for a request to rebuild it, so
        a bug met on some output is not met again and again in the background."""
        if self.failed:
            return True
        done = self._guarded(self._feed, until, size)
        return True if done is None else done

    def render(self, until: int, last: bool = False) -> bytes | None:
        """:meth:`ScreenModel.render` as of ``until``; None if there is no model."""
        for _ in range(2):
            model = self.screen(until)
            if model is None:
                return None
            painted = self._guarded(model.render, last)
            if painted is not None:
                return painted
        return None

    def last_line(self) -> str | None:
        """The screen's last non-blank line as fed so far, without feeding more (cheap
        enough for every snapshot and activity change; the background catch-up makes it
        current soon after the output goes quiet).  None before any model exists."""
        if self._model is None or self.failed:
            return None
        text = self._guarded(self._model.text)
        lines = [line for line in (text or "").splitlines() if line.strip()]
        return " ".join(lines[-1].split())[:LAST_LINE_MAX] if lines else None

    def cursor(self, until: int) -> tuple[int, int] | None:
        """The cursor (row, col) as of ``until``; None if there is no model."""
        model = self.screen(until)
        return model.cursor() if model is not None else None

    def resize(self, until: int, rows: int, cols: int) -> None:
        """The PTY changes size: the model sees everything printed at the old size first."""
        if self._model is not None:
            model = self.screen(until)
            if model is not None:
                self._guarded(model.resize, rows, cols)
        self.rows, self.cols = rows, cols

    def _feed(self, until: int, size: int | None = None) -> bool:
        if self._model is None and not self.failed:
            self._model = self.new_model()  # first use
        if self._model is None or until - self.offset > BACKLOG:
            self._rebuild(until)
        assert self._model is not None
        end = until if size is None else min(until, self.offset + size)
        while self.offset < end:
            data = self.reader.read(self.offset, min(end - self.offset, READ))
            if not data:
                break
            self._model.feed(data)
            self.offset += len(data)
        return self.offset >= until

    def _rebuild(self, until: int) -> None:
        """Start afresh from recent output: after a failure, or when feeding the backlog
        would take long."""
        self.offset, self.exact = recent_start(self.reader, until, RESTART_WINDOW, self.rows)
        self._model = self.new_model()
        self.failed = False

    def new_model(self) -> ScreenModel:
        """A fresh model of the session's size (a fault-injection test overrides it)."""
        return ScreenModel(self.rows, self.cols)

    def _guarded(self, action: Callable[..., T], *args: Any) -> T | None:
        """``action(*args)``; if it raises, None, with the failure logged and the model
        dropped.  The one place a failure of the model is caught (see the module docstring)."""
        try:
            return action(*args)
        except Exception:
            log.exception("screen_model_failed", offset=self.offset, rows=self.rows, cols=self.cols)
            self._model = None
            self.failed = True
            return None
