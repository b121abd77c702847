"""pyte's Screen with the fixes and the state this package owns (see its docstring):
drawing, scrolling, erasing, cursor movement, modes, the alternate screen, resizing."""

from __future__ import annotations

import re
import unicodedata
from collections import deque
from typing import Any

import pyte
from pyte import modes as mo
from pyte.screens import Cursor, Margins, StaticDefaultDict

from agent_worker.screen.buffer import UNSAVED, CellCache, Line, Main, Rows, Saved
from agent_worker.screen.cells import BLANK, Cell, is_wide, wcwidth
from agent_worker.screen.modes import ALT_MODES, DECCKM, KEPT_PRIVATE, MOUSE_ENCODING, MOUSE_TRACKING

_ASCII_RUNS = re.compile(r"[\x00-\x7f]+|[^\x00-\x7f]+")

# DEC Special Graphics (``ESC ( 0``): xterm maps 0x5f..0x7e only.
_DEC_GRAPHICS = {ord(ch): pyte.charsets.VT100_MAP[ord(ch)] for ch in map(chr, range(0x5F, 0x7F))}


class VTScreen(pyte.Screen):
    """pyte's Screen with the fixes and the state described in the package docstring."""

    def __init__(self, columns: int, lines: int, history: int) -> None:
        self.history: deque[Line] = deque(maxlen=max(history, 0))
        super().__init__(columns, lines)

    @property
    def default_char(self) -> Cell:
        return BLANK

    # -- state ---------------------------------------------------------------------------

    def reset(self) -> None:
        super().reset()
        self.buffer = self._new_buffer()  # type: ignore[assignment]
        self.cursor = Cursor(0, 0, BLANK)
        self.g0_charset: dict[int, str] | None = None  # type: ignore[assignment]
        self.g1_charset: dict[int, str] | None = None  # type: ignore[assignment]
        self.saved = UNSAVED
        self.main: Main | None = None  # set while the alternate screen is shown
        self.keypad_app = False
        self.mouse_tracking: int | None = None
        self.mouse_encoding: int | None = None
        self.cursor_style = 0  # DECSCUSR
        self.last_char = ""
        self._cells = CellCache(BLANK)
        self._pens: dict[Cell, CellCache] = {}

    def _cell_cache(self) -> CellCache:
        """The cells of the current pen; pens recur (a TUI alternates a few), so keep some."""
        pen = self.cursor.attrs
        cells = self._cells
        if cells.pen is not pen:
            cells = self._pens.get(pen)
            if cells is None:
                if len(self._pens) >= 64:
                    self._pens.clear()
                cells = self._pens[pen] = CellCache(pen)
            self._cells = cells
        return cells

    def _new_line(self) -> Line:
        return StaticDefaultDict(BLANK)

    def _blank(self) -> Cell:
        """What erasing and scrolling leave: the pen's background only (BCE)."""
        bg = self.cursor.attrs.bg
        return BLANK if bg == "default" else BLANK._replace(bg=bg)

    def _clear_wrap(self) -> None:
        """Drop the pending-wrap state (cursor one past the last column), as movement does."""
        if self.cursor.x >= self.columns:
            self.cursor.x = self.columns - 1

    # -- drawing -------------------------------------------------------------------------

    def draw(self, data: str) -> None:
        table = self.g1_charset if self.charset else self.g0_charset
        if table is not None:
            data = data.translate(table)
        if not data:
            return
        last = data[-1]
        self.last_char = last if last.isascii() or wcwidth(last) > 0 else ""
        if mo.IRM in self.mode:
            for char in data:
                self._draw_char(char)
        elif data.isascii():
            self._draw_ascii(data)
        else:  # ASCII runs take the fast path, the rest goes one character at a time
            for run in _ASCII_RUNS.findall(data):
                if run[0] < "\x80":
                    self._draw_ascii(run)
                else:
                    for char in run:
                        self._draw_char(char)

    def _draw_ascii(self, data: str) -> None:
        cursor, columns = self.cursor, self.columns
        autowrap = mo.DECAWM in self.mode
        cells = self._cell_cache()
        pos, end = 0, len(data)
        while pos < end:
            if cursor.x >= columns:
                if autowrap:
                    cursor.x = 0
                    self.index()
                else:
                    cursor.x = columns - 1
                    pos = max(pos, end - 1)  # only the last character lands
            x = cursor.x
            take = min(end - pos, columns - x)
            line = self.buffer[cursor.y]
            self._split_wide(line, x, x + take)
            line.update(zip(range(x, x + take), map(cells.__getitem__, data[pos : pos + take]), strict=True))
            pos += take
            cursor.x = x + take
            if not autowrap and cursor.x >= columns:
                cursor.x = columns - 1

    def _split_wide(self, line: Line, start: int, stop: int) -> None:
        """Before cells start..stop-1 are overwritten: blank the halves of wide characters
        that would be left without their other half (what xterm and tmux show)."""
        if start > 0:
            first = line.get(start)
            if first is not None and first.data == "":
                head = line.get(start - 1)
                if head is not None:
                    line[start - 1] = head._replace(data=" ")
        after = line.get(stop)
        if after is not None and after.data == "":
            line[stop] = after._replace(data=" ")

    def _draw_char(self, char: str) -> None:
        cursor, columns = self.cursor, self.columns
        width = wcwidth(char)
        if width < 0:
            return
        if width == 0:
            self._combine(char)
            return
        if width > columns:
            return  # a wide character on a one-column screen: tmux drops it too
        autowrap = mo.DECAWM in self.mode
        if cursor.x + width > columns:
            if autowrap:
                cursor.x = 0
                self.index()
            else:
                cursor.x = columns - width
        if mo.IRM in self.mode:
            self.insert_characters(width)
        line = self.buffer[cursor.y]
        x = cursor.x
        self._split_wide(line, x, x + width)
        cells = self._cell_cache()
        line[x] = cells[char]
        if width == 2:
            line[x + 1] = cells[""]
        cursor.x = x + width
        if not autowrap and cursor.x >= columns:
            cursor.x = columns - 1

    def _combine(self, char: str) -> None:
        """Attach a zero-width character (combining mark, ZWJ, VS16) to the previous cell."""
        x = min(self.cursor.x, self.columns) - 1
        if x < 0:
            return
        line = self.buffer[self.cursor.y]
        cell = line[x]
        if cell.data == "" and x > 0:
            x -= 1
            cell = line[x]
        if len(cell.data) < 16:  # bound a hostile run of combining marks
            line[x] = cell._replace(data=unicodedata.normalize("NFC", cell.data + char))

    def repeat(self, count: int | None = None) -> None:
        """REP (``CSI n b``): ncurses uses it for runs of one character under xterm."""
        if self.last_char:
            self.draw(self.last_char * min(count or 1, self.lines * self.columns))

    # -- scrolling -----------------------------------------------------------------------

    def _region(self) -> Margins:
        return self.margins or Margins(0, self.lines - 1)

    def _scroll_up(self, top: int, bottom: int, count: int, keep: bool = False) -> None:
        rows = self.buffer.rows
        count = min(max(count, 1), bottom - top + 1)
        if keep and self.history.maxlen and top == 0 and self.main is None:
            self.history.extend(line or self._new_line() for line in rows[:count])
        rows[top : bottom + 1] = [*rows[top + count : bottom + 1], *self._fill(count)]

    def _scroll_down(self, top: int, bottom: int, count: int) -> None:
        rows = self.buffer.rows
        count = min(max(count, 1), bottom - top + 1)
        rows[top : bottom + 1] = [*self._fill(count), *rows[top : bottom + 1 - count]]

    def _fill(self, count: int) -> list[Line | None]:
        """New rows scrolled in: empty, or the pen's background all along (BCE)."""
        blank = self._blank()
        if blank is BLANK:
            return [None] * count
        filled = []
        for _ in range(count):
            line = self._new_line()
            line.update(dict.fromkeys(range(self.columns), blank))
            filled.append(line)
        return filled

    def index(self) -> None:
        top, bottom = self._region()
        if self.cursor.y == bottom:
            self._scroll_up(top, bottom, 1, keep=True)
        elif self.cursor.y < self.lines - 1:
            self.cursor.y += 1

    def reverse_index(self) -> None:
        self._clear_wrap()
        top, bottom = self._region()
        if self.cursor.y == top:
            self._scroll_down(top, bottom, 1)
        elif self.cursor.y > 0:
            self.cursor.y -= 1

    def linefeed(self) -> None:
        self._clear_wrap()
        self.index()
        if mo.LNM in self.mode:
            self.carriage_return()

    def next_line(self) -> None:
        """NEL (``ESC E``): a line feed that always returns to column 0."""
        self._clear_wrap()
        self.index()
        self.carriage_return()

    def scroll_up(self, count: int | None = None) -> None:
        """SU (``CSI n S``)."""
        top, bottom = self._region()
        self._scroll_up(top, bottom, count or 1)

    def scroll_down(self, count: int | None = None) -> None:
        """SD (``CSI n T``)."""
        top, bottom = self._region()
        self._scroll_down(top, bottom, count or 1)

    def insert_lines(self, count: int | None = None) -> None:
        top, bottom = self._region()
        if top <= self.cursor.y <= bottom:
            self._scroll_down(self.cursor.y, bottom, count or 1)
            self.cursor.x = 0

    def delete_lines(self, count: int | None = None) -> None:
        top, bottom = self._region()
        if top <= self.cursor.y <= bottom:
            self._scroll_up(self.cursor.y, bottom, count or 1)
            self.cursor.x = 0

    def insert_characters(self, count: int | None = None) -> None:
        """ICH: shift right from the cursor, fill with the pen's background."""
        self._clear_wrap()
        x, columns = self.cursor.x, self.columns
        n = min(count or 1, columns - x)
        line = self.buffer[self.cursor.y]
        cells = [line.get(i) for i in range(x, columns - n)]
        self._set_run(line, x, [self._blank()] * n + cells)

    def delete_characters(self, count: int | None = None) -> None:
        """DCH: shift left onto the cursor, fill the right end with the pen's background."""
        self._clear_wrap()
        x, columns = self.cursor.x, self.columns
        n = min(count or 1, columns - x)
        line = self.buffer[self.cursor.y]
        cells = [line.get(i) for i in range(x + n, columns)]
        self._set_run(line, x, [*cells, *[self._blank()] * n])

    def _set_run(self, line: Line, x: int, cells: list[Any]) -> None:
        for i, cell in enumerate(cells, start=x):
            if cell is None or cell is BLANK:
                line.pop(i, None)
            else:
                line[i] = cell
        # Shifting can split a wide character from its right half: blank the orphans.
        columns = self.columns
        for i in [i for i in line if i >= columns]:
            del line[i]
        for i, cell in list(line.items()):
            if cell.data == "":
                head = line.get(i - 1)
                if head is None or not is_wide(head):
                    line[i] = cell._replace(data=" ")
            elif not cell.data.isascii() and is_wide(cell):
                stub = line.get(i + 1)
                if stub is None or stub.data != "":
                    line[i] = cell._replace(data=" ")

    # -- erasing -------------------------------------------------------------------------

    def _erase(self, y: int, start: int, stop: int) -> None:
        line = self.buffer.get(y)
        blank = self._blank()
        if line is None and blank is BLANK:
            return
        if line is None:
            line = self.buffer[y]
        self._split_wide(line, start, stop)
        if blank is BLANK:
            if start == 0 and stop >= self.columns:
                del self.buffer[y]
                return
            for x in [x for x in line if start <= x < stop]:
                del line[x]
        else:
            line.update(dict.fromkeys(range(start, stop), blank))

    def erase_characters(self, count: int | None = None) -> None:
        self._clear_wrap()
        x = self.cursor.x
        self._erase(self.cursor.y, x, min(x + (count or 1), self.columns))

    def erase_in_line(self, how: int = 0, private: bool = False) -> None:
        x = min(self.cursor.x, self.columns - 1)
        start, stop = {0: (x, self.columns), 1: (0, x + 1), 2: (0, self.columns)}.get(how, (0, 0))
        if start < stop:
            self._erase(self.cursor.y, start, stop)

    def erase_in_display(self, how: int = 0, *args: Any, **kwargs: Any) -> None:
        y = self.cursor.y
        if how == 0:
            self.erase_in_line(0)
            rows = range(y + 1, self.lines)
        elif how == 1:
            self.erase_in_line(1)
            rows = range(y)
        elif how == 2:
            rows = range(self.lines)
        else:  # 3: xterm clears the scrollback, not the screen
            if how == 3:
                self.history.clear()
            return
        for row in rows:
            self._erase(row, 0, self.columns)

    # -- cursor --------------------------------------------------------------------------

    def cursor_up(self, count: int | None = None) -> None:
        self._clear_wrap()
        top = self.margins.top if self.margins and self.cursor.y >= self.margins.top else 0
        self.cursor.y = max(self.cursor.y - (count or 1), top)

    def cursor_down(self, count: int | None = None) -> None:
        self._clear_wrap()
        bottom = self.lines - 1
        if self.margins and self.cursor.y <= self.margins.bottom:
            bottom = self.margins.bottom
        self.cursor.y = min(self.cursor.y + (count or 1), bottom)

    def cursor_to_line(self, line: int | None = None) -> None:
        """VPA; pyte's asserts on origin mode without a scroll region."""
        self._clear_wrap()
        y = (line or 1) - 1
        if mo.DECOM in self.mode and self.margins is not None:
            y = min(y + self.margins.top, self.margins.bottom)
        self.cursor.y = y
        self.ensure_vbounds()

    def tab(self, count: int | None = None) -> None:
        for _ in range(min(count or 1, self.columns)):
            x = self.cursor.x
            stops = [s for s in self.tabstops if s > x]
            self.cursor.x = min(min(stops) if stops else self.columns - 1, self.columns - 1)

    def set_tab_stop(self) -> None:
        self.tabstops.add(min(self.cursor.x, self.columns - 1))

    def back_tab(self, count: int | None = None) -> None:
        """CBT (``CSI n Z``)."""
        for _ in range(min(count or 1, self.columns)):
            x = min(self.cursor.x, self.columns - 1)
            stops = [s for s in self.tabstops if s < x]
            self.cursor.x = max(stops) if stops else 0

    def set_margins(self, top: int | None = None, bottom: int | None = None) -> None:
        """DECSTBM as xterm does it: a missing or 0 parameter means the screen edge, an
        invalid region is ignored, a valid one homes the cursor."""
        first = (top or 1) - 1
        last = min((bottom or self.lines) - 1, self.lines - 1)
        if first < last:
            self.margins = None if (first, last) == (0, self.lines - 1) else Margins(first, last)
            self.cursor_position()

    def save_cursor(self) -> None:
        c = self.cursor
        self.saved = Saved(
            min(c.x, self.columns - 1),
            c.y,
            c.attrs,
            self.g0_charset,
            self.g1_charset,
            self.charset,
            mo.DECOM in self.mode,
        )

    def restore_cursor(self) -> None:
        saved = self.saved
        self.cursor.x, self.cursor.y, self.cursor.attrs = saved.x, saved.y, saved.attrs
        self.g0_charset, self.g1_charset, self.charset = saved.g0, saved.g1, saved.charset
        if saved.origin:
            self.mode.add(mo.DECOM)
        else:
            self.mode.discard(mo.DECOM)
        self.ensure_hbounds()
        self.ensure_vbounds()

    def define_charset(self, code: str, mode: str) -> None:
        table = _DEC_GRAPHICS if code == "0" else None
        if mode == "(":
            self.g0_charset = table
        elif mode == ")":
            self.g1_charset = table

    def soft_reset(self) -> None:
        """DECSTR (``CSI ! p``), as xterm does it."""
        self.mode.difference_update({mo.IRM, mo.DECOM, DECCKM})
        self.mode.update({mo.DECAWM, mo.DECTCEM})
        self.cursor.hidden = False
        self.keypad_app = False
        self.margins = None
        self.cursor.attrs = BLANK
        self.g0_charset = self.g1_charset = None
        self.charset = 0
        self.saved = UNSAVED

    # -- modes ---------------------------------------------------------------------------

    def set_mode(self, *modes: int, **kwargs: Any) -> None:
        self._modes(modes, bool(kwargs.get("private")), on=True)

    def reset_mode(self, *modes: int, **kwargs: Any) -> None:
        self._modes(modes, bool(kwargs.get("private")), on=False)

    def _modes(self, modes: tuple[int, ...], private: bool, on: bool) -> None:
        for m in modes:
            if not private:
                if m in (4, 20):  # IRM, LNM
                    (self.mode.add if on else self.mode.discard)(m)
                continue
            if m in ALT_MODES:
                self._alternate(m, on)
            elif m in MOUSE_TRACKING:
                # xterm and tmux: one tracking mode at a time; resetting any one turns off.
                self.mouse_tracking = m if on else None
            elif m in MOUSE_ENCODING:
                if on:
                    self.mouse_encoding = m
                elif self.mouse_encoding == m:
                    self.mouse_encoding = None
            elif m == 3:  # DECCOLM: tmux clears and homes, and does not resize
                self.erase_in_display(2)
                self.cursor_position()
            elif m in KEPT_PRIVATE:
                (self.mode.add if on else self.mode.discard)(m << 5)
                if m == 25:
                    self.cursor.hidden = not on
                elif m == 7 and not on:
                    self._clear_wrap()  # without autowrap, nothing waits to wrap
                elif m == 6:
                    self.cursor_position()

    def _alternate(self, mode: int, on: bool) -> None:
        """Enter or leave the alternate screen the way xterm does.

        ``?1049h`` saves the cursor, switches and clears; ``?1049l`` switches back and
        restores the cursor.  ``?47`` / ``?1047`` switch without saving the cursor.  The
        alternate screen always starts blank here (xterm keeps ``?47``'s old content, which
        no program relies on).
        """
        if on:
            if mode == 1049:
                self.save_cursor()
            if self.main is None:
                self.main = Main(self.buffer, self.saved)
                self.buffer = self._new_buffer()
                self.saved = UNSAVED
            else:
                self.buffer.clear()
        elif self.main is not None:
            self.buffer, self.saved = self.main.buffer, self.main.saved
            self.main = None
            if mode == 1049:
                self.restore_cursor()
            self._clear_wrap()

    def _new_buffer(self, lines: int | None = None) -> Rows:
        return Rows(lines or self.lines)

    def keypad(self, application: bool) -> None:
        self.keypad_app = application

    def set_cursor_style(self, style: int) -> None:
        self.cursor_style = min(style, 6)

    # -- size ----------------------------------------------------------------------------

    def resize(self, lines: int | None = None, columns: int | None = None) -> None:
        """Resize like a terminal without reflow: rows drop from the top when the cursor
        would fall off the bottom (a shell's prompt stays visible), else from the bottom;
        columns are cut on the right.  The program redraws on its SIGWINCH anyway."""
        lines, columns = lines or self.lines, columns or self.columns
        if (lines, columns) == (self.lines, self.columns):
            return
        shift = max(0, self.cursor.y - (lines - 1))
        self.buffer = self._reshape(self.buffer, lines, columns, shift)
        if self.main is not None:
            main_y = self.main.saved.y
            self.main = self.main._replace(
                buffer=self._reshape(self.main.buffer, lines, columns, max(0, main_y - (lines - 1)))
            )
        if self.tabstops == set(range(8, self.columns, 8)):
            self.tabstops = set(range(8, columns, 8))
        self.lines, self.columns = lines, columns
        self.margins = None
        self.cursor.y -= shift
        self.cursor.x = min(self.cursor.x, columns - 1)
        self.ensure_vbounds()
        if self.saved is not None:
            self.saved = self.saved._replace(x=min(self.saved.x, columns - 1), y=min(self.saved.y, lines - 1))
        self.dirty.update(range(lines))

    def _reshape(self, buffer: Rows, lines: int, columns: int, shift: int) -> Rows:
        fresh = self._new_buffer(lines)
        for y, line in buffer.items():
            y -= shift
            if not 0 <= y < lines:
                continue
            if columns < self.columns:
                for x in [x for x in line if x >= columns]:
                    del line[x]
                last = line.get(columns - 1)
                if last is not None and last.data and wcwidth(last.data[0]) == 2:
                    line[columns - 1] = last._replace(data=" ")
            fresh[y] = line
        return fresh
