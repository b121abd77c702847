"""A terminal a local attach client handed to the worker (issue 13), and the worker's
copy of it.

The client sends its terminal's descriptor with the ``Terminal`` frame (SCM_RIGHTS); the
worker checks it is a terminal and opens it again through ``/proc/self/fd/N`` (a new open
file description, so the ``O_NONBLOCK`` set here never reaches the user's shell, which
shares the client's), then closes the passed descriptor.  From then on the worker is that
terminal's only writer: the agent's output (always after it is logged), the status lines
the client asks for (``Show``), and the modes to put back when the attach ends
(:class:`~agent_worker.user_terminal.ShownModes` is fed every byte written).

Writes never wait: what the terminal does not take now stays in the log, and the
terminal is served from there at its own offset (``position``) once it is writable
again, so a terminal that stops reading costs the agent nothing and the worker no memory.
"""

from __future__ import annotations

import array
import contextlib
import errno
import os
import socket
from collections.abc import Callable, Iterable

import trio

from agent_worker.user_terminal import ShownModes

LOG_CHUNK = 256 * 1024  # most bytes read from the log for a terminal at once (its carry)
MAX_SHOWN_PENDING = 64 * 1024  # status-line bytes waiting for the terminal, at most
RELEASE_TIMEOUT = 1.0  # for the mode reset to reach a terminal that is slow to read


def received_fds(ancdata: Iterable[tuple[int, int, bytes]]) -> list[int]:
    """The descriptors an SCM_RIGHTS message brought (every one of them is ours to close)."""
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return list(fds)


class HandedTerminal:
    """The worker's copy of one client's terminal: what it was sent, what to put back."""

    def __init__(self, fd: int, detach_key: bytes, read_only: bool) -> None:
        self.fd = fd
        self.detach_key = detach_key
        self.read_only = read_only
        self.position = 0  # log offset of the next output byte this terminal is to get
        self.carry = b""  # read from the log at ``position``, not yet taken by the terminal
        self.modes = ShownModes()
        self.shown_pending = b""  # status lines to write before the next output
        self.lot = trio.lowlevel.ParkingLot()  # its writer sleeps here when caught up
        self.closed = False
        self.refusal_shown = False  # the client was told once that its keys are ignored
        self.repaint_wanted = False  # the client's status line went: paint the screen again
        # Shared with the hot path (agent_worker.hot_path), under its lock:
        self.live = False  # written by the hot path (as output is logged, or catching up)
        self.writing = False  # a catch-up write is going out (agent_worker.catch_up)
        self.keys_pending = b""  # typed keys the PTY did not take yet: trio writes them
        self.detach_pressed = False  # the hot path read the detach key
        self.refused = False  # keys typed on a read-only attach
        self.lost = False  # the terminal hung up
        self.hung_up = False  # (the hot path's) epoll reported its hang-up: read to the end
        self.news_lot = trio.lowlevel.ParkingLot()  # its key handler sleeps here
        self.on_close: Callable[[], None] = lambda: None  # stop the hot path using it

    @classmethod
    def take(cls, fds: list[int], detach_key: bytes, read_only: bool) -> HandedTerminal | None:
        """Our own copy of the terminal passed as ``fds[0]``; None if it is not a terminal
        or cannot be opened again.  Every descriptor in ``fds`` is closed."""
        try:
            if not fds or not os.isatty(fds[0]):
                return None
            passed = os.fstat(fds[0])
            try:
                fd = os.open(f"/proc/self/fd/{fds[0]}",
                             os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError:
                return None
            opened = os.fstat(fd)
            if not os.isatty(fd) or opened.st_rdev != passed.st_rdev:
                os.close(fd)
                return None
            return cls(fd, detach_key, read_only)
        finally:
            for passed_fd in fds:
                with contextlib.suppress(OSError):
                    os.close(passed_fd)

    def write_now(self, data: bytes | memoryview) -> int:
        """Write what the terminal takes now; how many bytes that was (0 if it is full).
        OSError (EIO, EBADF...) if the terminal is gone."""
        written = self._write_raw(data)
        if written == len(data) and type(data) is bytes:
            self.modes.feed(data)  # the common case (an echo): no copy
        else:
            self.modes.feed(bytes(data[:written]))
        return written

    def _write_raw(self, data: bytes | memoryview) -> int:
        if self.closed:  # our descriptor's number may name something else by now
            raise OSError(errno.EBADF, "the handed terminal was released")
        try:
            return os.write(self.fd, data)
        except BlockingIOError:
            return 0

    def write_output(self, offset: int, data: bytes) -> int:
        """Write the output at log ``offset`` (which must be :attr:`position`)."""
        written = self.write_now(data)
        self.position = offset + written
        return written

    def next_chunk(self, read: Callable[[int, int], bytes], end: int) -> bytes:
        """What to write next from :attr:`position` towards log offset ``end``: the carry,
        else up to :data:`LOG_CHUNK` read from the log with ``read(offset, size)``."""
        return self.carry or read(self.position, min(end - self.position, LOG_CHUNK))

    def took(self, chunk: bytes, written: int) -> None:
        """The terminal took ``written`` bytes of ``chunk`` (from :meth:`next_chunk`), by
        whichever writer: its place, its carry and the modes it was shown."""
        self.modes.feed(chunk[:written])
        self.position += written
        self.carry = chunk[written:]

    def write_from_log(self, read: Callable[[int, int], bytes], end: int) -> int:
        """Write on from :attr:`position` towards log offset ``end`` without waiting; the
        bytes written (0: the terminal is full)."""
        chunk = self.next_chunk(read, end)
        written = self._write_raw(chunk)
        self.took(chunk, written)
        return written

    def show(self, data: bytes) -> None:
        """Bytes to write before the next output (bounded: beyond it they are dropped,
        a status line is not worth the memory of a terminal that stopped reading)."""
        if len(self.shown_pending) + len(data) <= MAX_SHOWN_PENDING:
            self.shown_pending += data
        self.lot.unpark_all()

    def flush_shown(self) -> bool:
        """Write the pending status-line bytes; True when none are left."""
        if self.shown_pending:
            self.shown_pending = self.shown_pending[self.write_now(self.shown_pending) :]
        return not self.shown_pending

    async def release(self, *, reset: bool = True) -> None:
        """Put the terminal's modes back (unless it is gone) and close our copy: the
        client may write to it again once this returns."""
        if self.closed:
            return
        self.on_close()  # the hot path writes to it no more
        if reset:
            with trio.CancelScope(shield=True), trio.move_on_after(RELEASE_TIMEOUT), \
                    contextlib.suppress(OSError):
                # A catch-up write, interrupted by on_close: its modes count too.  Its end
                # is told to trio (the terminal is no longer live), which wakes our lot.
                while self.writing:
                    await self.lot.park()
                data = memoryview(self.modes.leaving_bytes())
                while data:
                    written = self.write_now(data)
                    data = data[written:]
                    if data and not written:
                        try:
                            await trio.lowlevel.wait_writable(self.fd)
                        except trio.BusyResourceError:  # its writer is waiting too
                            await trio.sleep(0.005)
        self.close()

    def close(self) -> None:
        """Drop our copy now (a held terminal keeps an SSH session from ending)."""
        if self.closed:
            return
        self.on_close()  # before the descriptor goes: the hot path must not use its number
        self.closed = True
        trio.lowlevel.notify_closing(self.fd)  # wakes our tasks waiting on it
        with contextlib.suppress(OSError):
            os.close(self.fd)
        self.lot.unpark_all()
        self.news_lot.unpark_all()


def terminal_gone(exc: OSError) -> bool:
    """Is this a terminal that went away under us (hung up, closed)?"""
    return exc.errno in (errno.EIO, errno.EBADF, errno.ENXIO, errno.EPIPE)
