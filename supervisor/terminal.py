"""The user's own terminal during an attach: raw mode, size, detach key, status line.

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

__all__ = ["DEFAULT_DETACH_KEY", "parse_key", "set_window_size", "window_size"]


# What a client terminal must be put back to after showing a session: leave the alternate
# screen, show the cursor, turn off mouse reporting, bracketed paste and application
# cursor/keypad modes, reset colours.  A TUI may have switched any of them on.
RESET_MODES = (
    b"\x1b[?25h\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l"
    b"\x1b[?2004l\x1b[?1l\x1b>\x1b[0m"
)
LEAVE_ALT_SCREEN = b"\x1b[?1049l"
_ALT_ENTER = (b"\x1b[?1049h", b"\x1b[?1047h", b"\x1b[?47h")
_ALT_LEAVE = (b"\x1b[?1049l", b"\x1b[?1047l", b"\x1b[?47l")


class AltScreen:
    """Whether the stream shown so far left the terminal in the alternate screen.

    Leaving it on detach restores the user's own screen; sending "leave" when it was never
    entered would move the cursor to a stale saved position instead.
    """

    def __init__(self) -> None:
        self.active = False

    def feed(self, data: bytes) -> None:
        if b"\x1b[?" not in data:
            return
        enter = max(data.rfind(seq) for seq in _ALT_ENTER)
        leave = max(data.rfind(seq) for seq in _ALT_LEAVE)
        if enter != leave:
            self.active = enter > leave

    def reset_bytes(self) -> bytes:
        return (LEAVE_ALT_SCREEN if self.active else b"") + RESET_MODES


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


def status_line(rows: int, text: str) -> bytes:
    """Bytes that show ``text`` in reverse video on the bottom row, keeping the cursor."""
    return b"\x1b7\x1b[%d;1H\x1b[0;7m %s \x1b[0m\x1b[K\x1b8" % (rows, text.encode())


def clear_status_line(rows: int) -> bytes:
    return b"\x1b7\x1b[%d;1H\x1b[0m\x1b[K\x1b8" % rows


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            import select

            select.select([], [fd], [])
