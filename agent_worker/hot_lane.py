"""The hot path's native lane (issue 13): loading ``agent_worker._hot_lane`` (built from
``_hot_lane.c`` where a C compiler was found at install), and the lock that lets it wait
in C while holding the hot path's state.

Why native: the hot path's Python loop costs ~100 us of CPU a keystroke on a small VM
(two passes of the interpreter, cold after a pause in typing), which was most of a key's
echo beside screen's.  In the one common case, one handed terminal live and caught up,
the lane does the loop's work without the interpreter and returns to Python for anything
else (see the C source); the rules stay in :mod:`agent_worker.hot_path`.

The lane holds the hot path's lock while it waits (trio sees nothing half done), so the
lock is a :class:`LaneLock`: whoever else wants it first wakes the lane through an
eventfd in the hot path's epoll, and the lane is not entered again while anyone waits.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable

from agent_worker import settings

try:
    from agent_worker._hot_lane import lane as _native_lane
except ImportError:  # not built (no compiler at install): the Python loop does it all
    _native_lane = None

# What ended a lane() call (the C source's WHY_* values).
DUE, WOKEN, KEYS, TERM_END, UNLOGGED, PTY_END, SHORT, TERM_GONE, MORE = range(9)
# Its ``more``: which descriptors a read filled its buffer from, or that reported a
# hang-up (MORE_* in the C source).
MORE_PTY, MORE_KEYS, MORE_PTY_HUNG_UP, MORE_KEYS_HUNG_UP = 1, 2, 4, 8

# lane(...) -> (why, news, rest, unshown, last_at, first_mono, last_mono, key_at, echo_left,
# agent_first, agent_last, more, indexed_at, last_indexed): see the C source.
Lane = Callable[..., tuple[int, bytes, bytes, int, float, float, float, float, int, float, float,
                           int, float, int]]


def built() -> bool:
    return _native_lane is not None


def chosen() -> Lane | None:
    """The lane this worker uses: None if it was not built or ``SUPERV_HOT_PATH=python``."""
    if settings.current().hot_path != "native":
        return None
    return _native_lane


class LaneLock:
    """A ``threading.Lock`` (``with``, ``acquire``, ``release``; usable by a
    ``threading.Condition``) that the lane's thread may hold while it waits in C: taking
    it from another thread writes to :attr:`wake_fd` first when the lane is in C."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._waiting = 0
        self.wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.in_lane = False  # (set by the lane's thread while it holds the lock)
        self._wake_on_release = False  # (the holder's) it waited for the lock
        self.stood_aside = False  # (set under the lock) the loop left the lane for a waiter

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if self._lock.acquire(False):
            return True
        if not blocking:
            return False
        with self._count_lock:
            self._waiting += 1
        try:
            # Read after counting ourselves: the lane's thread sets in_lane, then looks at
            # wanted() before it goes into C, so one of the two sees the other.
            if self.in_lane:
                self.wake()
            got = self._lock.acquire(True, timeout)
            # The loop may stand aside for us (out of the lane, or not going in while we
            # wait) and wait in Python's poll: it is woken when we are done, to go into
            # the lane again, not left there until the next key or output.
            self._wake_on_release = got
            return got
        finally:
            with self._count_lock:
                self._waiting -= 1

    def release(self) -> None:
        wake = self._wake_on_release and self.stood_aside
        self._wake_on_release = False
        if wake:
            self.stood_aside = False
        self._lock.release()
        if wake:
            self.wake()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def wake(self) -> None:
        """Wake the hot path's loop (in C or in Python's poll) to look at its state."""
        os.eventfd_write(self.wake_fd, 1)

    def wanted(self) -> bool:
        """Another thread waits for the lock: do not go into C now."""
        return self._waiting > 0

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.eventfd_read(self.wake_fd)
