"""The user's own terminal during an attach: raw mode, size, detach key, modes to reset.

(The status line is :mod:`supervisor.status_line`'s.)

Shared by the local attach (plain sockets) and the SSH attach (asyncio), so both restore
the terminal the same way on every exit path.
"""

from __future__ import annotations

import contextlib
import os
import termios
import tty
from collections.abc import Iterator

from agent_worker.screen_size import get_window_size as window_size
from agent_worker.screen_size import set_window_size
from agent_worker.settings import DEFAULT_DETACH_KEY, parse_key  # the detach key is a setting
from agent_worker.user_terminal import LEAVE_ALT_SCREEN, RESET_MODES, ShownModes

__all__ = [
    "DEFAULT_DETACH_KEY", "LEAVE_ALT_SCREEN", "RESET_MODES", "ShownModes", "parse_key",
    "set_window_size", "window_size",
]


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """Put the terminal on ``fd`` in raw mode and restore it however the block ends."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield
    finally:
        with contextlib.suppress(termios.error):
            termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            import select

            select.select([], [fd], [])
