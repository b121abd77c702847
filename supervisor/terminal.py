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


def typing_refused(target: str, read_only: bool, fd: int = 0) -> str | None:
    """Why an attach of ``target`` cannot start here, or None: one that types (not ``-r``)
    takes its keys from a terminal on ``fd``.  Local and remote attach say it alike.

    (Without one there is nobody to type, and a read-write client would size the agent's
    window to a terminal that is not there, under the people watching it.)"""
    if read_only or os.isatty(fd):
        return None
    return (f"attach needs a terminal on stdin; use 'superv attach -r {target}' to only watch, "
            f"or 'superv send {target} TEXT' to type into it")


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            import select

            select.select([], [fd], [])
