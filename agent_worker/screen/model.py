"""The public model: :class:`ScreenModel`, a session's screen fed from its output bytes."""

from __future__ import annotations

from typing import Any

from pyte import modes as mo

from agent_worker.screen.cells import BLANK, Cell
from agent_worker.screen.modes import DECCKM, FOCUS, PASTE, TerminalModes
from agent_worker.screen.parser import Parser
from agent_worker.screen.render import render
from agent_worker.screen.vt import VTScreen
from agent_worker.screen_size import clamp_size


class ScreenModel:
    """A terminal screen fed with a session's output, that can repaint a client to it.

    Not thread-safe; one owner (the worker) feeds, renders and reads it.
    """

    def __init__(self, rows: int, cols: int, history: int = 0) -> None:
        rows, cols = clamp_size(rows, cols)  # a client's size must not break the model
        self._screen = VTScreen(cols, rows, history)
        self._parser = Parser(self._screen)

    @property
    def rows(self) -> int:
        return int(self._screen.lines)

    @property
    def cols(self) -> int:
        return int(self._screen.columns)

    @property
    def title(self) -> str:
        """The window title the program last set (OSC 0 or 2)."""
        return str(self._screen.title)

    def feed(self, data: bytes) -> None:
        """Advance the model by bytes straight from the PTY log.

        A UTF-8 character or an escape sequence split across calls is completed by the
        next call; invalid UTF-8 becomes U+FFFD.  No input makes it raise: an exception
        here is a bug, and the caller (:mod:`agent_worker.screen.keeper`) sees it.
        """
        self._parser.feed(data)

    def resize(self, rows: int, cols: int) -> None:
        """Follow a resize of the PTY (call it when the worker sets the PTY's size).

        Sizes are brought into ``1..MAX_ROWS`` x ``1..MAX_COLS``
        (:mod:`agent_worker.screen_size`): a bigger terminal shows the model's top left."""
        self._screen.resize(*clamp_size(rows, cols))

    def cursor(self) -> tuple[int, int]:
        """(row, col), 0-based, as a terminal reports it to DSR 6 (``CSI row;col R``,
        1-based there): a cursor waiting to wrap is reported in the last column."""
        s = self._screen
        return s.cursor.y, min(s.cursor.x, s.columns - 1)

    def modes(self) -> TerminalModes:
        """The modes the program set that change what its input should look like."""
        s = self._screen
        return TerminalModes(
            alt_screen=s.main is not None,
            app_cursor_keys=DECCKM in s.mode,
            app_keypad=s.keypad_app,
            mouse_tracking=s.mouse_tracking,
            mouse_encoding=s.mouse_encoding,
            focus_events=FOCUS in s.mode,
            bracketed_paste=PASTE in s.mode,
            autowrap=mo.DECAWM in s.mode,
            cursor_visible=not s.cursor.hidden,
            origin=mo.DECOM in s.mode,
            insert=mo.IRM in s.mode,
        )

    def text(self) -> str:
        """The screen as plain text (what ``superv peek`` prints): one line per row, trailing
        spaces stripped, trailing empty lines dropped."""
        return "\n".join(self._lines(self._screen.buffer)).rstrip("\n")

    def scrollback(self) -> list[str]:
        """Lines scrolled off the top of the main screen, oldest first (at most ``history``)."""
        return [self._line_text(line) for line in self._screen.history]

    def _lines(self, buffer: Any) -> list[str]:
        empty: dict[int, Cell] = {}
        return [self._line_text(buffer.get(y, empty)) for y in range(self._screen.lines)]

    def _line_text(self, line: dict[int, Cell]) -> str:
        if not line:
            return ""
        get = line.get
        return "".join((get(x) or BLANK).data for x in range(self._screen.columns)).rstrip()

    # -- render --------------------------------------------------------------------------

    def render(self, last: bool = False) -> bytes:
        """Bytes that repaint a terminal of this size to this screen and state.

        The terminal may show anything before; every mode the repaint relies on or restores
        is set explicitly.  :mod:`agent_worker.screen.render` says what is sent, in order.
        The result is what :meth:`feed` of the same bytes into a fresh model of this size
        turns into an equal model (tested cell by cell, mode by mode).  ``last``: see
        :func:`~agent_worker.screen.render.render`.
        """
        return render(self._screen, self._parser.unfinished(), last)
