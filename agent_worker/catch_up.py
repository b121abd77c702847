"""A handed terminal that fell behind, written from the log by blocking writes in a
thread of its own (:class:`CatchUp`, one per terminal, started the first time it is
needed), so that the hot path (:mod:`agent_worker.hot_path`) never waits on a terminal.

Why blocking writes: a terminal takes a few kilobytes per wake-up (the kernel reports
room as the emulator reads), so a non-blocking writer pays a round through its event loop
for each of them; in Python that round is what a drain spends its time on (a 40-line
Python relay took 2.0x the raw PTY's time on 60 MB of lines that way, 1.15x with a blocking
writer thread; superv 1.45x before this, 1.25x after).  A blocking write lets the kernel
do those rounds.

The thread shares the hot path's lock and its state (the terminal's ``position``, its
``carry``, whether it is live) and writes only while the terminal is live and behind.
While a write is going out, :attr:`HandedTerminal.writing` is set and the terminal's place
and carry are the thread's: the hot path writes only to a terminal at the log's end with
no carry, which a terminal being caught up is not, and trio waits for the flag to clear
before it writes a status line or a repaint.

Stopping it (the attach ends, the terminal goes): :meth:`CatchUp.stop` marks its own open
file description non-blocking and interrupts a write in progress with :data:`INTERRUPT`,
whose do-nothing handler :func:`install_interrupt` sets; the write returns what it wrote,
the next one would not wait, and the thread closes its descriptor and ends.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable

from agent_worker.handed_terminal import HandedTerminal, terminal_gone

INTERRUPT = signal.SIGURG  # ignored by default; nothing else in a worker uses it


def install_interrupt() -> None:
    """(From the main thread.)  Give :data:`INTERRUPT` a handler, so that it interrupts a
    blocking write in the thread it is sent to (an ignored signal would not)."""
    if signal.getsignal(INTERRUPT) in (signal.SIG_DFL, signal.SIG_IGN, None):
        signal.signal(INTERRUPT, lambda signum, frame: None)


class CatchUp:
    """The thread that writes ``term`` from the log while it is live and behind."""

    def __init__(
        self,
        term: HandedTerminal,
        lock: threading.Lock,
        log_end: Callable[[], int],
        read: Callable[[int, int], bytes],
        done: Callable[[HandedTerminal, bool], bool],
        tell: Callable[[], None],
    ) -> None:
        self.term = term
        self._log_end = log_end  # the log's end (read under the lock)
        self._read = read  # read(offset, size) from the log
        self._done = done  # (under the lock) a write ended: (term, lost); True: tell trio
        self._tell = tell  # (outside the lock) tell trio now
        self._wake = threading.Condition(lock)
        self._stopping = False
        # Our own open file description, blocking: the terminal's other one stays
        # non-blocking for the hot path's reads and trio's writes.
        self._fd = os.open(f"/proc/self/fd/{term.fd}", os.O_WRONLY | os.O_NOCTTY | os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, name="catch-up", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """(Under the lock.)  The terminal may be live and behind now."""
        self._wake.notify()

    def stop(self) -> None:
        """(Under the lock.)  End the thread; a write in progress returns at once."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.notify()
        with contextlib.suppress(OSError):
            os.set_blocking(self._fd, False)  # the thread closes it, so it is still ours
        if self.term.writing and self._thread.ident is not None:
            with contextlib.suppress(ProcessLookupError):
                signal.pthread_kill(self._thread.ident, INTERRUPT)

    def _due(self) -> bool:
        term = self.term
        return term.live and not term.closed and (bool(term.carry) or term.position < self._log_end())

    def _run(self) -> None:
        term = self.term
        try:
            with self._wake:
                while True:
                    while not self._stopping and not self._due():
                        self._wake.wait()
                    if self._stopping:
                        return
                    end = self._log_end()
                    # Nobody else touches the terminal's place or carry until this clears.
                    term.writing = True
                    self._wake.release()
                    lost = False
                    try:
                        chunk = term.next_chunk(self._read, end)
                        written = self._write(chunk)
                    except OSError as exc:
                        if not terminal_gone(exc):
                            raise
                        lost = True
                    finally:
                        self._wake.acquire()
                        term.writing = False
                    if not lost:
                        term.took(chunk, written)
                    if self._done(term, lost):
                        self._wake.release()
                        try:
                            self._tell()
                        finally:
                            self._wake.acquire()
                    if lost:
                        return
        finally:
            with contextlib.suppress(OSError):
                os.close(self._fd)

    def _write(self, chunk: bytes) -> int:
        """Write ``chunk`` whole, waiting for the terminal; fewer bytes if stopped."""
        view = memoryview(chunk)
        written = 0
        while written < len(chunk) and not self._stopping:
            try:
                written += os.write(self._fd, view[written:])
            except BlockingIOError:
                break  # stopped: our description is non-blocking now
        return written
