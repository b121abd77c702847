"""The terminal model behind "attach shows the current screen" and ``superv peek``.

A worker keeps one :class:`ScreenModel` per session and feeds it the session's output
bytes, straight from the log.  pyte parses a few hundred kB/s, about 40 times slower than
a PTY delivers, so the worker feeds the model lazily (on attach, on peek, or coalesced in
the background), never inline with the PTY reader.

On attach the worker sends :meth:`ScreenModel.render`: a byte string that repaints the
client's terminal to the model's screen and leaves it in the model's state, so that the
live stream can continue from exactly the log offset the model was fed up to.  "State"
means everything the next bytes of the stream could depend on: the cells, the cursor and
its pending-wrap flag, the pen (SGR), the character sets, the saved cursor, the scroll
region, the main screen hidden behind the alternate one, and the private modes that change
how the terminal talks back (cursor keys, keypad, mouse, bracketed paste, focus events).

What pyte gets wrong, and this module therefore owns:

* **Parsing.**  pyte's parser applies ``CSI > 4 ; 2 m`` (vim's modifyOtherKeys) as an SGR,
  prints the payload of DCS/APC strings and the tail of ``CSI = 1 u`` / ``CSI ! p`` as
  text, and drops colon sub-parameters (``38:2::r:g:b``).  :class:`_Parser` is a small
  regex tokenizer that follows the VT500 grammar (prefix, parameters, intermediates, final
  byte; strings up to ST), keeps an incomplete sequence across ``feed`` calls, and never
  raises.  It is also faster than pyte's per-character generator.
* **Drawing.**  pyte stops drawing a text run at the first zero-width non-combining
  character (ZWJ, VS16: every coloured emoji), writes a wide character into the last
  column instead of wrapping it, loses the pending-wrap state on a line feed, and ignores
  the DEC line-drawing set in UTF-8 mode (curses boxes would read ``lqqqk``).
* **Erasing and scrolling** fill with the pen's background only (BCE, as xterm and tmux
  do), not with the whole pen; pyte only erased cells that had been written before.
* **The alternate screen** (``?47``, ``?1047``, ``?1049``), which pyte does not model, and
  the private modes it keeps only as opaque numbers.
* **SGR**: pyte folds 256-colour indexes into RGB, so ``38;5;1`` (palette red) could not be
  told from ``38;2;205;0;0``; it has no dim.  Cells here are :class:`Cell` (pyte's ``Char``
  fields plus ``dim`` and ``conceal``) and colours are lossless: a pyte colour name for the
  16 ANSI colours (``"red"``, ``"brightblue"``), the decimal palette index for 256-colour
  (``"196"``), ``"#rrggbb"`` for truecolor, ``"default"`` otherwise.

Memory is bounded: the screen is ``rows x cols`` cells (plus one hidden main screen while
the alternate one is shown), and the optional scrollback is a ``deque(maxlen=history)``.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import re
import unicodedata
from collections import deque
from collections.abc import Callable
from typing import Any, NamedTuple

import attrs
import pyte
from pyte import modes as mo
from pyte.screens import Cursor, Margins, StaticDefaultDict
from wcwidth import wcwidth as _wcwidth

from agent_worker.screen_size import clamp_size

__all__ = ["Cell", "ScreenModel", "TerminalModes"]

wcwidth = functools.lru_cache(maxsize=4096)(_wcwidth)


class Cell(NamedTuple):
    """One styled cell.  pyte's ``Char`` fields first, so code that knows pyte reads it.

    ``data`` is ``""`` for the right half of a wide character (the cell the wide character
    in the cell to its left covers), otherwise one base character plus any combining marks.
    """

    data: str = " "
    fg: str = "default"
    bg: str = "default"
    bold: bool = False
    italics: bool = False
    underscore: bool = False
    strikethrough: bool = False
    reverse: bool = False
    blink: bool = False
    dim: bool = False
    conceal: bool = False


BLANK = Cell()
_ASCII_RUNS = re.compile(r"[\x00-\x7f]+|[^\x00-\x7f]+")

# Private modes (``CSI ? n h``) kept in ``_VTScreen.mode`` (pyte's convention: shifted by 5)
# and replayed by render.  Alternate screen and mouse modes are tracked on their own.
_DECCKM = 1 << 5  # application cursor keys
_BLINK = 12 << 5  # blinking cursor (xterm, tmux)
_FOCUS = 1004 << 5  # focus in/out reports
_PASTE = 2004 << 5  # bracketed paste
_KEPT_PRIVATE = frozenset({1, 5, 6, 7, 12, 25, 1004, 2004})
_ALT_MODES = frozenset({47, 1047, 1049})
_MOUSE_TRACKING = frozenset({9, 1000, 1001, 1002, 1003})
_MOUSE_ENCODING = frozenset({1005, 1006, 1015, 1016})

# DEC Special Graphics (``ESC ( 0``): xterm maps 0x5f..0x7e only.
_DEC_GRAPHICS = {ord(ch): pyte.charsets.VT100_MAP[ord(ch)] for ch in map(chr, range(0x5F, 0x7F))}

_FG_NAMES = {
    **{code: name for code, name in pyte.graphics.FG_ANSI.items() if code != 39},
    **pyte.graphics.FG_AIXTERM,
}
_FG_CODES = {name: code for code, name in _FG_NAMES.items()}
_BG_CODES = {name: code + 10 for code, name in _FG_NAMES.items()}

_SGR_RESET = {field: getattr(BLANK, field) for field in Cell._fields if field != "data"}
_SGR_SIMPLE: dict[int, dict[str, Any]] = {
    0: _SGR_RESET,
    1: {"bold": True},
    2: {"dim": True},
    3: {"italics": True},
    4: {"underscore": True},
    5: {"blink": True},
    6: {"blink": True},
    7: {"reverse": True},
    8: {"conceal": True},
    9: {"strikethrough": True},
    21: {"underscore": True},  # double underline: shown as underline
    22: {"bold": False, "dim": False},
    23: {"italics": False},
    24: {"underscore": False},
    25: {"blink": False},
    27: {"reverse": False},
    28: {"conceal": False},
    29: {"strikethrough": False},
    39: {"fg": "default"},
    49: {"bg": "default"},
    **{code: {"fg": name} for code, name in _FG_NAMES.items()},
    **{code + 10: {"bg": name} for code, name in _FG_NAMES.items()},
}
_SGR_FLAGS = (
    ("bold", "1"),
    ("dim", "2"),
    ("italics", "3"),
    ("underscore", "4"),
    ("blink", "5"),
    ("reverse", "7"),
    ("conceal", "8"),
    ("strikethrough", "9"),
)


def _is_wide(cell: Cell) -> bool:
    return bool(cell.data) and not cell.data.isascii() and wcwidth(cell.data[0]) == 2


def _int(text: str) -> int:
    """A CSI parameter: empty or malformed is 0, values are capped like pyte's (9999)."""
    return min(int(text), 9999) if text.isdigit() else 0


def _colour(values: list[str]) -> str | None:
    """``5;N`` or ``2;R;G;B`` (after the 38/48), in this module's lossless colour form."""
    if not values:
        return None
    if values[0] == "5" and len(values) >= 2:
        return str(min(_int(values[1]), 255))
    if values[0] == "2" and len(values) >= 4:
        r, g, b = (min(_int(v), 255) for v in values[-3:])
        return f"#{r:02x}{g:02x}{b:02x}"
    return None


def _colour_sgr(colour: str, base: int, names: dict[str, int]) -> str | None:
    if colour == "default":
        return None
    if colour in names:
        return str(names[colour])
    if colour.startswith("#") and len(colour) == 7:
        return f"{base};2;{int(colour[1:3], 16)};{int(colour[3:5], 16)};{int(colour[5:7], 16)}"
    if colour.isdigit():
        return f"{base};5;{colour}"
    if len(colour) == 6:  # pyte's own "rrggbb" form, should one ever get in
        try:
            return f"{base};2;{int(colour[0:2], 16)};{int(colour[2:4], 16)};{int(colour[4:6], 16)}"
        except ValueError:
            return None
    return None


_sgr_cache: dict[tuple[Any, ...], bytes] = {}


def _sgr(cell: Cell) -> bytes:
    """The SGR that sets exactly ``cell``'s attributes, from a reset (``0;...``)."""
    key = cell[1:]
    found = _sgr_cache.get(key)
    if found is None:
        parts = ["0"]
        parts.extend(code for field, code in _SGR_FLAGS if getattr(cell, field))
        fg = _colour_sgr(cell.fg, 38, _FG_CODES)
        bg = _colour_sgr(cell.bg, 48, _BG_CODES)
        parts.extend(p for p in (fg, bg) if p)
        found = ("\x1b[" + ";".join(parts) + "m").encode()
        if len(_sgr_cache) < 4096:
            _sgr_cache[key] = found
    return found


@attrs.frozen
class TerminalModes:
    """The modes that change how the terminal talks back to the program.

    The worker can use them too: ``superv send`` should wrap pasted text in bracketed-paste
    markers only when ``bracketed_paste`` is on, and arrow keys must be encoded as ``ESC O A``
    when ``app_cursor_keys`` is on.
    """

    alt_screen: bool
    app_cursor_keys: bool
    app_keypad: bool
    mouse_tracking: int | None  # 9, 1000, 1001, 1002 or 1003: the last one set
    mouse_encoding: int | None  # 1005, 1006, 1015 or 1016
    focus_events: bool
    bracketed_paste: bool
    autowrap: bool
    cursor_visible: bool
    origin: bool
    insert: bool


Line = StaticDefaultDict[int, Cell]


class _Rows:
    """The rows of one screen buffer: a list, so scrolling is a C-speed list splice.

    Quacks like the dict pyte keeps (``buffer[y]`` creates the row, ``get``, ``pop``,
    ``items``), so pyte's own methods that touch the buffer keep working.  A row that was
    never written or was cleared is ``None``.
    """

    __slots__ = ("rows",)

    def __init__(self, lines: int) -> None:
        self.rows: list[Line | None] = [None] * lines

    def __getitem__(self, y: int) -> Line:
        line = self.rows[y]
        if line is None:
            line = self.rows[y] = StaticDefaultDict(BLANK)
        return line

    def __setitem__(self, y: int, line: Line) -> None:
        self.rows[y] = line

    def __delitem__(self, y: int) -> None:
        self.rows[y] = None

    def __contains__(self, y: int) -> bool:
        return 0 <= y < len(self.rows) and self.rows[y] is not None

    def get(self, y: int, default: Any = None) -> Any:
        if 0 <= y < len(self.rows):
            line = self.rows[y]
            if line is not None:
                return line
        return default

    def pop(self, y: int, default: Any = None) -> Any:
        line = self.get(y, default)
        if 0 <= y < len(self.rows):
            self.rows[y] = None
        return line

    def clear(self) -> None:
        self.rows = [None] * len(self.rows)

    def items(self) -> list[tuple[int, Line]]:
        return [(y, line) for y, line in enumerate(self.rows) if line is not None]

    def values(self) -> list[Line]:
        return [line for line in self.rows if line is not None]


class _Saved(NamedTuple):
    """What DECSC saves (xterm: one slot per screen buffer, not a stack like pyte's)."""

    x: int
    y: int
    attrs: Cell
    g0: dict[int, str] | None
    g1: dict[int, str] | None
    charset: int
    origin: bool


# A slot nothing was saved in: restoring it homes the cursor with the default pen and
# charsets, which is what xterm's zeroed slot does.
_UNSAVED = _Saved(0, 0, BLANK, None, None, 0, False)


class _Main(NamedTuple):
    """The main screen, put aside while the alternate screen is shown."""

    buffer: _Rows
    saved: _Saved


class _CellCache(dict[str, Cell]):
    """char -> Cell for one pen: building a NamedTuple per drawn character is the cost."""

    def __init__(self, pen: Cell) -> None:
        super().__init__()
        self.pen = pen

    def __missing__(self, char: str) -> Cell:
        if len(self) >= 512:  # CJK text: keep memory bounded
            self.clear()
        cell = self[char] = self.pen._replace(data=char)
        return cell


class _VTScreen(pyte.Screen):
    """pyte's Screen with the fixes and the state described in the module docstring."""

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
        self.saved = _UNSAVED
        self.main: _Main | None = None  # set while the alternate screen is shown
        self.keypad_app = False
        self.mouse_tracking: int | None = None
        self.mouse_encoding: int | None = None
        self.cursor_style = 0  # DECSCUSR
        self.last_char = ""
        self._cells = _CellCache(BLANK)
        self._pens: dict[Cell, _CellCache] = {}

    def _cell_cache(self) -> _CellCache:
        """The cells of the current pen; pens recur (a TUI alternates a few), so keep some."""
        pen = self.cursor.attrs
        cells = self._cells
        if cells.pen is not pen:
            cells = self._pens.get(pen)
            if cells is None:
                if len(self._pens) >= 64:
                    self._pens.clear()
                cells = self._pens[pen] = _CellCache(pen)
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
                if head is None or not _is_wide(head):
                    line[i] = cell._replace(data=" ")
            elif not cell.data.isascii() and _is_wide(cell):
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
        self.saved = _Saved(
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
        self.mode.difference_update({mo.IRM, mo.DECOM, _DECCKM})
        self.mode.update({mo.DECAWM, mo.DECTCEM})
        self.cursor.hidden = False
        self.keypad_app = False
        self.margins = None
        self.cursor.attrs = BLANK
        self.g0_charset = self.g1_charset = None
        self.charset = 0
        self.saved = _UNSAVED

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
            if m in _ALT_MODES:
                self._alternate(m, on)
            elif m in _MOUSE_TRACKING:
                # xterm and tmux: one tracking mode at a time; resetting any one turns off.
                self.mouse_tracking = m if on else None
            elif m in _MOUSE_ENCODING:
                if on:
                    self.mouse_encoding = m
                elif self.mouse_encoding == m:
                    self.mouse_encoding = None
            elif m == 3:  # DECCOLM: tmux clears and homes, and does not resize
                self.erase_in_display(2)
                self.cursor_position()
            elif m in _KEPT_PRIVATE:
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
                self.main = _Main(self.buffer, self.saved)
                self.buffer = self._new_buffer()
                self.saved = _UNSAVED
            else:
                self.buffer.clear()
        elif self.main is not None:
            self.buffer, self.saved = self.main.buffer, self.main.saved
            self.main = None
            if mode == 1049:
                self.restore_cursor()
            self._clear_wrap()

    def _new_buffer(self, lines: int | None = None) -> _Rows:
        return _Rows(lines or self.lines)

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

    def _reshape(self, buffer: _Rows, lines: int, columns: int, shift: int) -> _Rows:
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


# --------------------------------------------------------------------------------------
# The parser


_TOKEN = re.compile(
    r"(?P<text>[^\x00-\x1f\x7f-\x9f]+)"
    r"|\x1b\[(?P<cp>[\x30-\x3f]*)(?P<ci>[\x20-\x2f]*)(?P<cf>[\x40-\x7e])"
    r"|(?P<c0>[\x00-\x1a\x1c-\x1f\x7f-\x9f])"
    r"|\x1b\](?P<osc>[^\x07\x18\x1a\x1b]*)(?:\x07|\x1b\\)"
    r"|\x1b[PX^_][^\x18\x1a\x1b]*\x1b\\"
    r"|\x1b(?P<ei>[\x20-\x2f]*)(?P<ef>[\x30-\x4f\x51-\x57\x59\x5a\x5c\x60-\x7e])"
)
# An unfinished OSC/DCS/SOS/PM/APC string or ESC-with-intermediates: wait for more input.
_PARTIAL = re.compile(r"\x1b(?:[\]PX^_][^\x18\x1a\x1b]*\x1b?|[\x20-\x2f]*)\Z")
_STRING_END = re.compile(r"\x07|\x1b\\?|[\x18\x1a]")
_MAX_PENDING = 1 << 16  # longer unfinished strings (sixel, images) are skipped, not kept


class _Parser:
    """Bytes in, calls on a :class:`_VTScreen` out.  Never raises on any input."""

    def __init__(self, screen: _VTScreen) -> None:
        self.screen = screen
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.pending = ""  # an unfinished escape sequence from the last feed
        self.skipping = False  # inside a too-long DCS/OSC/APC string: drop until ST
        self.skip_kind = "P"
        s = screen
        self.c0: dict[str, Callable[[], None]] = {
            "\x08": s.backspace,
            "\x09": s.tab,
            "\x0a": s.linefeed,
            "\x0b": s.linefeed,
            "\x0c": s.linefeed,
            "\x0d": s.carriage_return,
            "\x0e": s.shift_out,
            "\x0f": s.shift_in,
        }
        self.csi: dict[str, Callable[..., None]] = {
            "@": s.insert_characters,
            "A": s.cursor_up,
            "B": s.cursor_down,
            "C": s.cursor_forward,
            "D": s.cursor_back,
            "E": s.cursor_down1,
            "F": s.cursor_up1,
            "G": s.cursor_to_column,
            "H": s.cursor_position,
            "I": s.tab,
            "J": s.erase_in_display,
            "K": s.erase_in_line,
            "L": s.insert_lines,
            "M": s.delete_lines,
            "P": s.delete_characters,
            "S": s.scroll_up,
            "T": s.scroll_down,
            "X": s.erase_characters,
            "Z": s.back_tab,
            "`": s.cursor_to_column,
            "a": s.cursor_forward,
            "b": s.repeat,
            "d": s.cursor_to_line,
            "e": s.cursor_down,
            "f": s.cursor_position,
            "g": s.clear_tab_stop,
            "h": s.set_mode,
            "l": s.reset_mode,
            "r": s.set_margins,
            "s": s.save_cursor,
            "u": s.restore_cursor,
        }
        self.esc: dict[str, Callable[[], None]] = {
            "7": s.save_cursor,
            "8": s.restore_cursor,
            "D": s.index,
            "E": s.next_line,
            "M": s.reverse_index,
            "H": s.set_tab_stop,
            "c": s.reset,
            "=": lambda: s.keypad(True),
            ">": lambda: s.keypad(False),
        }

    def feed(self, data: bytes) -> None:
        text = self.decoder.decode(data)
        if self.pending:
            text, self.pending = self.pending + text, ""
        pos = 0
        if self.skipping:
            pos = self._skip_string(text, 0)
            if pos < 0:
                return
        end = len(text)
        match = _TOKEN.match
        screen = self.screen
        draw = screen.draw
        while pos < end:
            m = match(text, pos)
            if m is None:
                text, end, pos = self._irregular(text, pos)
                if pos < 0:
                    return
                continue
            pos = m.end()
            kind = m.lastgroup
            try:
                if kind == "text":
                    draw(m.group("text"))
                    continue
                if kind == "cf":
                    self._csi(m.group("cp"), m.group("ci"), m.group("cf"))
                elif kind == "c0":
                    handler = self.c0.get(m.group("c0"))
                    if handler is not None:
                        handler()
                elif kind == "ef":
                    self._esc(m.group("ei"), m.group("ef"))
                elif kind == "osc":
                    self._osc(m.group("osc"))
                # DCS/SOS/PM/APC strings: consumed, ignored.
            except Exception:  # garbage must never stop the model
                pass
            # REP repeats only a character printed right before it (tmux, ECMA-48): any
            # control or sequence in between, render()'s included, forgets it.
            screen.last_char = ""

    def _irregular(self, text: str, pos: int) -> tuple[str, int, int]:
        """``text[pos]`` is an ESC that starts no complete sequence the fast path knows:
        keep it for the next feed if it may still become one, else recover as a VT500
        parser would.  Returns the text, its length and where to go on (-1: stop)."""
        kind = text[pos + 1 : pos + 2]
        if kind == "[":
            return text, len(text), self._csi_slow(text, pos)
        if _PARTIAL.match(text, pos):
            if len(text) - pos <= _MAX_PENDING:
                self.pending = text[pos:]
            elif kind in ("]", "P", "X", "^", "_"):
                self.skipping = True
                self.skip_kind = kind
                if text.endswith("\x1b"):
                    self.pending = "\x1b"
            return text, len(text), -1
        if kind in ("]", "P", "X", "^", "_"):
            found = _STRING_END.search(text, pos + 2)
            if found is None:  # pragma: no cover - _PARTIAL matched that case
                return text, len(text), -1
            cut = found.start()
            # An ESC that is not ST, or CAN/SUB, aborts the string.
            return text, len(text), cut if text[cut] == "\x1b" else cut + 1
        return text, len(text), pos + 1  # ESC + something that is no sequence: drop ESC

    def _csi_slow(self, text: str, pos: int) -> int:
        """A CSI the regex did not take: C0 controls inside it are executed and the CSI
        goes on, CAN/SUB abort it, ESC restarts, parameter bytes after intermediates make
        it ignored (VT500 "CSI ignore").  Returns where to go on, -1 if it is unfinished."""
        params: list[str] = []
        inter: list[str] = []
        ignore = False
        for i in range(pos + 2, len(text)):
            ch = text[i]
            if "\x40" <= ch <= "\x7e":
                if not ignore and len(params) + len(inter) < 256:
                    self._dispatch_csi("".join(params), "".join(inter), ch)
                self.screen.last_char = ""
                return i + 1
            if "\x30" <= ch <= "\x3f":
                if inter:
                    ignore = True
                params.append(ch)
            elif "\x20" <= ch <= "\x2f":
                inter.append(ch)
            elif ch in "\x18\x1a":
                return i + 1
            elif ch == "\x1b":
                return i
            elif ch < " ":
                handler = self.c0.get(ch)
                if handler is not None:
                    handler()
            else:  # DEL or a non-ASCII character: not a CSI after all
                return i
        if len(text) - pos <= _MAX_PENDING:
            # Unfinished; controls already executed are not repeated: keep only the CSI.
            self.pending = "\x1b[" + "".join(params) + "".join(inter)
        return -1

    def _dispatch_csi(self, params: str, inter: str, final: str) -> None:
        with contextlib.suppress(Exception):  # garbage must never stop the model
            self._csi(params, inter, final)

    def unfinished(self) -> bytes:
        """The incomplete sequence (and UTF-8 character) the last feed ended in, as bytes
        that put another terminal's parser in the same state: the stream's next bytes then
        complete it there as they do here."""
        pending = self.pending
        if self.skipping:
            pending = "\x1b" + self.skip_kind + pending
        return pending.encode("utf-8", "replace") + self.decoder.getstate()[0]

    def _skip_string(self, text: str, pos: int) -> int:
        found = _STRING_END.search(text, pos)
        if found is None:
            return -1
        token = found.group()
        if token == "\x1b" and found.end() == len(text):
            self.pending = "\x1b"
            return -1
        self.skipping = False
        return found.start() if token == "\x1b" else found.end()

    def _csi(self, params: str, inter: str, final: str) -> None:
        screen = self.screen
        prefix = params[:1] if params[:1] in ("<", "=", ">", "?") else ""
        if inter:
            if inter == " " and final == "q" and not prefix:
                screen.set_cursor_style(_int(params))
            elif inter == "!" and final == "p":
                screen.soft_reset()
            return
        if prefix:
            if prefix == "?":
                if final in "hl":
                    values = [_int(p) for p in params[1:].split(";")]
                    (screen.set_mode if final == "h" else screen.reset_mode)(*values, private=True)
                elif final in "JK":
                    args = [_int(p) for p in params[1:].split(";")] if params[1:] else []
                    handler = screen.erase_in_display if final == "J" else screen.erase_in_line
                    handler(*args[:1])
            return
        if final == "m":
            self._sgr(params)
            return
        handler = self.csi.get(final)
        if handler is None:
            return
        if not params:
            handler()
        else:
            handler(*(_int(p.split(":", 1)[0]) for p in params.split(";")))

    def _sgr(self, params: str) -> None:
        cursor = self.screen.cursor
        if not params or params == "0":
            cursor.attrs = BLANK
            return
        replace: dict[str, Any] = {}
        groups = params.split(";")
        i, n = 0, len(groups)
        while i < n:
            group = groups[i]
            i += 1
            if ":" in group:
                sub = group.split(":")
                code = _int(sub[0])
                if code in (38, 48, 58):
                    colour = _colour(sub[1:])
                    if colour is not None and code != 58:
                        replace["fg" if code == 38 else "bg"] = colour
                    continue
                if code == 4:
                    replace["underscore"] = _int(sub[1]) != 0
                    continue
            else:
                code = _int(group)
            if code in (38, 48, 58):
                kind = groups[i] if i < n else ""
                take = 2 if kind == "5" else 4 if kind == "2" else 1
                colour = _colour(groups[i : i + take])
                i += take
                if colour is not None and code != 58:
                    replace["fg" if code == 38 else "bg"] = colour
                continue
            simple = _SGR_SIMPLE.get(code)
            if simple is not None:
                replace.update(simple)
        if replace:
            cursor.attrs = cursor.attrs._replace(**replace)

    def _esc(self, inter: str, final: str) -> None:
        screen = self.screen
        if not inter:
            handler = self.esc.get(final)
            if handler is not None:
                handler()
        elif inter in ("(", ")"):
            screen.define_charset(final, inter)
        elif inter == "#" and final == "8":
            screen.alignment_display()

    def _osc(self, body: str) -> None:
        code, _, value = body.partition(";")
        if code in ("0", "2"):
            self.screen.title = value[:256]


# --------------------------------------------------------------------------------------
# The public model


def _cup(row: int, col: int) -> bytes:
    return b"\x1b[%d;%dH" % (row + 1, col + 1)


class ScreenModel:
    """A terminal screen fed with a session's output, that can repaint a client to it.

    Not thread-safe; one owner (the worker) feeds, renders and reads it.
    """

    def __init__(self, rows: int, cols: int, history: int = 0) -> None:
        rows, cols = clamp_size(rows, cols)  # a client's size must not break the model
        self._screen = _VTScreen(cols, rows, history)
        self._parser = _Parser(self._screen)

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
        next call; invalid UTF-8 becomes U+FFFD; nothing raises.
        """
        try:
            self._parser.feed(data)
        except Exception:  # a bug here must not take the worker down: drop the rest
            self._parser.pending = ""
            self._parser.skipping = False

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
            app_cursor_keys=_DECCKM in s.mode,
            app_keypad=s.keypad_app,
            mouse_tracking=s.mouse_tracking,
            mouse_encoding=s.mouse_encoding,
            focus_events=_FOCUS in s.mode,
            bracketed_paste=_PASTE in s.mode,
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

    def render(self) -> bytes:
        """Bytes that repaint a terminal of this size to this screen and state.

        The terminal may show anything before (a fresh terminal, a shell, the previous
        screen of the same session): every mode render relies on or restores is set
        explicitly, in both directions.  The sequence, in order:

        1. begin a synchronized update (``?2026h``, ignored where unsupported), hide the
           cursor, leave the alternate screen, reset SGR, charsets, insert mode, origin
           mode, the scroll region, autowrap on, and every mouse/paste/focus mode off;
        2. if the program is on the alternate screen: paint the hidden main screen and its
           saved cursor first, then ``?1049h``, so that when the program leaves the
           alternate screen the client shows what a never-detached terminal would;
        3. clear and paint every cell with its SGR.  After any non-ASCII cell the column
           is re-set with CHA, so a client whose width table differs from wcwidth's cannot
           shift the rest of the row;
        4. the tab stops, the saved cursor (DECSC: position, pen, charsets, origin mode),
           the scroll region, origin and autowrap modes, the cursor at its place, the
           private modes the program enabled, keypad, insert/newline modes, the cursor
           style, the title, visibility;
        5. the pen: SGR reset, then the attributes the program had set, and the charsets.
           The stream goes on with whatever pen the program last chose, and a program may
           print more text without repeating its SGR, so the pen is restored rather than
           left reset (the brief allowed either; this is the one that stays correct);
        6. state that lives in the cell before the cursor: when the cursor waits to wrap,
           that cell is written again so the terminal waits too; when the stream ended
           right after a printed character (which REP would repeat), that character is the
           very last thing written;
        7. if the fed bytes ended inside an escape sequence or a UTF-8 character, those
           bytes, so the client's parser is mid-sequence exactly like the model's and the
           continuing stream completes it in both.

        The result is what :meth:`feed` of the same bytes into a fresh model of this size
        turns into an equal model (tested cell by cell, mode by mode).
        """
        s = self._screen
        out: list[bytes] = [
            b"\x1b[?2026h\x1b[?25l\x1b[?1049l\x1b[0m\x1b(B\x1b)B\x0f\x1b[4l\x1b[20l"
            b"\x1b[?6l\x1b[?7h\x1b[r"
            b"\x1b[?1;5;9;12;1000;1001;1002;1003;1004;1005;1006;1015;1016;2004l"
        ]
        if s.main is not None:
            self._paint(out, s.main.buffer)
            # ?1049h saves the cursor again, as the main screen's slot: same state.
            self._save(out, s.main.saved, then=b"\x1b[?1049h")
        self._paint(out, s.buffer)
        out.append(b"\x1b[3g")  # tab stops: clear all, then set the program's
        out.extend(b"\x1b[%dG\x1bH" % (x + 1) for x in sorted(s.tabstops) if x < s.columns)
        self._save(out, s.saved)
        out.append(b"\x1b[0m\x1b(B\x1b)B\x0f")
        if s.margins is not None:  # after the saved cursors: origin mode would clamp them
            out.append(b"\x1b[%d;%dr" % (s.margins.top + 1, s.margins.bottom + 1))
        last = self._place_cursor(out)
        private = [m >> 5 for m in (_DECCKM, _BLINK, _FOCUS, _PASTE) if m in s.mode]
        private += [m for m in (s.mouse_tracking, s.mouse_encoding) if m is not None]
        if private:
            out.append(b"\x1b[?" + ";".join(map(str, private)).encode() + b"h")
        if mo.DECSCNM in s.mode:
            out.append(b"\x1b[?5h")
        out.append(b"\x1b=" if s.keypad_app else b"\x1b>")
        if mo.IRM in s.mode:
            out.append(b"\x1b[4h")
        if mo.LNM in s.mode:
            out.append(b"\x1b[20h")
        out.append(b"\x1b[%d q" % s.cursor_style)
        if s.title:
            safe = "".join(ch for ch in s.title if ch >= " " and ch != "\x7f")
            out.append(b"\x1b]2;" + safe.encode("utf-8", "replace") + b"\x07")
        out.append(_sgr(s.cursor.attrs))
        if s.g0_charset is not None:
            out.append(b"\x1b(0")
        if s.g1_charset is not None:
            out.append(b"\x1b)0")
        if s.charset:
            out.append(b"\x0e")
        if not s.cursor.hidden:
            out.append(b"\x1b[?25h")
        out.append(b"\x1b[?2026l")
        out.append(last)
        out.append(self._parser.unfinished())
        return b"".join(out)

    def _paint(self, out: list[bytes], buffer: Any) -> None:
        s = self._screen
        cols = s.columns
        out.append(b"\x1b[0m\x1b[H\x1b[2J")
        for y in range(s.lines):
            line = buffer.get(y)
            if not line:
                continue
            last = max((x for x, c in line.items() if x < cols and c != BLANK), default=-1)
            if last < 0:
                continue
            pen: Cell | None = None
            resync = False
            row: list[str] = []
            parts: list[bytes] = [_cup(y, 0)]
            x = 0
            while x <= last:
                cell = line.get(x, BLANK)
                data = cell.data or " "
                width = 1
                if not data.isascii():
                    width = wcwidth(data[0])
                    nxt = line.get(x + 1)
                    if width == 2 and (x + 1 >= cols or nxt is None or nxt.data != ""):
                        data, width = " ", 1  # a broken wide character: keep alignment
                    elif width != 2:
                        width = 1
                if cell[1:] != (pen[1:] if pen is not None else None):
                    if row:
                        parts.append("".join(row).encode("utf-8", "replace"))
                        row = []
                    parts.append(_sgr(cell))
                    pen = cell
                if resync:
                    if row:
                        parts.append("".join(row).encode("utf-8", "replace"))
                        row = []
                    parts.append(b"\x1b[%dG" % (x + 1))
                    resync = False
                row.append(data)
                resync = not data.isascii()
                x += width
            if row:
                parts.append("".join(row).encode("utf-8", "replace"))
            out.extend(parts)

    def _save(self, out: list[bytes], saved: _Saved, then: bytes = b"") -> None:
        """Recreate a DECSC slot: put cursor, pen and charsets where they were, ESC 7."""
        if saved.origin:
            out.append(b"\x1b[?6h")  # no scroll region yet: positions stay absolute
        out.append(_cup(saved.y, saved.x))
        out.append(_sgr(saved.attrs))
        out.append(b"\x1b(0" if saved.g0 is not None else b"\x1b(B")
        out.append(b"\x1b)0" if saved.g1 is not None else b"\x1b)B")
        out.append(b"\x0e" if saved.charset else b"\x0f")
        out.append(b"\x1b7" + then + (b"\x1b[?6l" if saved.origin else b""))

    def _place_cursor(self, out: list[bytes]) -> bytes:
        """Origin and autowrap modes, then the cursor (after them: DECOM homes it).

        Two states live in the cell before the cursor rather than in the cursor: the
        pending wrap (after the last column was written, the next character wraps) and
        the character REP would repeat (only if nothing came after it).  Both are recreated
        by writing that cell again.  A pending wrap is recreated here; the REP character
        must be the very last byte of the render, so it is returned for render to append.
        """
        s = self._screen
        x, y, columns = s.cursor.x, s.cursor.y, s.columns
        if mo.DECOM in s.mode:
            out.append(b"\x1b[?6h")
        if mo.DECAWM not in s.mode:
            out.append(b"\x1b[?7l")
        top = s.margins.top if (s.margins is not None and mo.DECOM in s.mode) else 0
        line = s.buffer.get(y, {})
        col: int | None = None
        if x >= columns:
            col = columns - 1
        elif s.last_char:
            if mo.DECAWM not in s.mode and x == columns - 1 and line.get(x, BLANK).data:
                col = x
            elif x > 0:
                col = x - 1
        if col is not None and col > 0 and line.get(col, BLANK).data == "":
            col -= 1  # the right half of a wide character: write the character again
        cell = line.get(col, BLANK) if col is not None else BLANK
        # Writing the cell again must leave the cursor exactly where it is.
        end = min(col + (2 if _is_wide(cell) else 1), columns - (col == x)) if col is not None else 0
        if col is not None and x < columns and end != x:
            col = None
        if col is None or (x < columns and not self._repeatable(cell)):
            out.append(_cup(y - top, min(x, columns - 1)))
            return b""
        redraw = _cup(y - top, col) + (cell.data or " ").encode("utf-8", "replace")
        if self._repeatable(cell):
            return redraw  # the pen equals the cell's attributes: nothing after it
        out.append(_sgr(cell) + redraw)
        return b""

    def _repeatable(self, cell: Cell) -> bool:
        """Whether REP after the render repeats what it would repeat in the model."""
        s = self._screen
        return (
            bool(s.last_char)
            and cell.data == s.last_char
            and cell[1:] == s.cursor.attrs[1:]
            and mo.IRM not in s.mode
        )
