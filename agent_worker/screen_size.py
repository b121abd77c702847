"""Reading and setting a terminal's window size (TIOCGWINSZ / TIOCSWINSZ)."""

from __future__ import annotations

import fcntl
import struct
import termios

_WINSIZE = struct.Struct("HHHH")

# The largest screen superv models.  A terminal this size is already far beyond any real
# one; the bound is what keeps a client's hello or resize from asking the screen model for
# gigabytes (rows x cols cells, twice with the alternate screen) or an endless render.
MAX_ROWS = 1000
MAX_COLS = 1000


def clamp_size(rows: int, cols: int) -> tuple[int, int]:
    """``(rows, cols)`` brought into ``1..MAX_ROWS`` x ``1..MAX_COLS``."""
    return min(max(int(rows), 1), MAX_ROWS), min(max(int(cols), 1), MAX_COLS)


def get_window_size(fd: int) -> tuple[int, int]:
    """(rows, cols) of the terminal on ``fd``; 24x80 if it is not a terminal or says 0."""
    try:
        rows, cols, _, _ = _WINSIZE.unpack(fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8))
    except OSError:
        return 24, 80
    return (rows or 24), (cols or 80)


def set_window_size(fd: int, rows: int, cols: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, _WINSIZE.pack(rows, cols, 0, 0))
