"""The user's own terminal during an attach: raw mode, size, detach key, modes to reset.

(The status line is :mod:`supervisor.status_line`'s.)

Shared by the local attach (plain sockets) and the SSH attach (asyncio), so both restore
the terminal the same way on every exit path.
"""

from __future__ import annotations

import contextlib
import os
import re
import termios
import tty
from collections.abc import Iterator

from agent_worker.escapes import CSI, Escape, Tokenizer
from agent_worker.screen_size import get_window_size as window_size
from agent_worker.screen_size import set_window_size
from agent_worker.settings import DEFAULT_DETACH_KEY, parse_key  # the detach key is a setting

__all__ = ["DEFAULT_DETACH_KEY", "parse_key", "set_window_size", "window_size"]


# Put back on every detach, whatever the stream seemed to do: the stream a client was
# shown may have started after the program set them (``attach --tail``), and each is
# harmless when it was not set.  Cursor shown; mouse reporting, focus reporting, bracketed
# paste, application cursor keys and keypad off; colours reset.
RESET_MODES = (
    b"\x1b[?25h\x1b[?1000l\x1b[?1002l\x1b[?1003l\x1b[?1006l\x1b[?1004l"
    b"\x1b[?2004l\x1b[?1l\x1b>\x1b[0m"
)
LEAVE_ALT_SCREEN = b"\x1b[?1049l"
_ALTERNATE = frozenset({47, 1047, 1049})
_ON_BY_DEFAULT = frozenset({7, 25})  # autowrap, cursor visible: the rest start off
_MAX_MODES = 64  # distinct modes remembered (a hostile stream could name thousands)
_STARTS = re.compile(r"\x1b(?:\[\?|[=>c])")  # where a tracked sequence begins


class ShownModes:
    """The modes the stream shown so far left the user's terminal in, and how to undo them.

    Fed every byte shown (the repaint included, which sets every mode it relies on), it
    reads the private modes (``CSI ? n h`` / ``l``), the keypad mode and full resets with
    the one escape tokenizer, so a sequence split across reads counts.  On detach,
    :meth:`reset_bytes` leaves the alternate screen only if the program is in it (leaving
    when it was never entered would move the cursor to a stale saved position), puts back
    every other private mode the program changed, and always sends :data:`RESET_MODES`.
    """

    def __init__(self) -> None:
        self._tokens = Tokenizer(text=False, controls=False)
        self.alternate = False  # the program is on the alternate screen
        self.modes: dict[int, bool] = {}  # private mode -> set, for the modes the stream named

    def feed(self, data: bytes) -> None:
        if b"\x1b" not in data and self._tokens.idle:
            return  # the common case on the attach client's output path: one scan
        for token in self._tokens.feed_at(data.decode("latin-1"), _STARTS, 3):
            if type(token) is CSI:
                if token.final in "hl" and token.prefix == "?" and not token.intermediates:
                    for mode in token.values():
                        self._set(mode, token.final == "h")
            elif type(token) is Escape and not token.intermediates:
                if token.final in "=>":
                    self._set(-1, token.final == "=")  # -1: the keypad (ESC = / ESC >)
                elif token.final == "c":  # a full reset: every mode back to its default
                    self.modes.clear()
                    self.alternate = False

    def _set(self, mode: int, on: bool) -> None:
        if mode in _ALTERNATE:
            self.alternate = on
        elif mode in self.modes or len(self.modes) < _MAX_MODES:
            self.modes[mode] = on

    def reset_bytes(self) -> bytes:
        """What puts the user's terminal back: see the class docstring."""
        restore = b"".join(
            b"\x1b[?%d%s" % (m, b"h" if m in _ON_BY_DEFAULT else b"l")
            for m, on in sorted(self.modes.items())
            if m >= 0 and on != (m in _ON_BY_DEFAULT)
        )
        return (LEAVE_ALT_SCREEN if self.alternate else b"") + restore + RESET_MODES


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
