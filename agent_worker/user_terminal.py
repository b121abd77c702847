"""The modes the stream shown left a user's terminal in, and the bytes that put it back
on detach (:class:`ShownModes`).

In :mod:`agent_worker` because the writer of a handed-over terminal is the worker (issue
13: a local attach hands its terminal to the worker, which is then its only writer);
:mod:`supervisor.terminal` re-exports these names for the clients that still write
themselves (the SSH attach, a fallback local attach).
"""

from __future__ import annotations

import re

from agent_worker.escapes import CSI, Escape, Tokenizer

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

    def leaving_bytes(self) -> bytes:
        """What ends an attach on the user's terminal: its modes put back, then a new line
        cleared to the end of the screen, for what is said next (``[detached from ...]``,
        the shell's prompt): the rows of the agent's screen below its cursor (a TUI's input
        box, its footer) showed through both."""
        return self.reset_bytes() + b"\r\n\x1b[J"

    def reset_bytes(self) -> bytes:
        """What puts the user's terminal back: see the class docstring."""
        restore = b"".join(
            b"\x1b[?%d%s" % (m, b"h" if m in _ON_BY_DEFAULT else b"l")
            for m, on in sorted(self.modes.items())
            if m >= 0 and on != (m in _ON_BY_DEFAULT)
        )
        return (LEAVE_ALT_SCREEN if self.alternate else b"") + restore + RESET_MODES
