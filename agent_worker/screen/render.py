"""Render: the bytes that repaint a client's terminal to a model's screen and state.

Bytes that repaint a terminal of this size to this screen and state.

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

from __future__ import annotations

from typing import Any

from pyte import modes as mo

from agent_worker.screen.buffer import Saved
from agent_worker.screen.cells import BLANK, Cell, is_wide, sgr, wcwidth
from agent_worker.screen.modes import BLINK, DECCKM, FOCUS, PASTE
from agent_worker.screen.vt import VTScreen


def cup(row: int, col: int) -> bytes:
    return b"\x1b[%d;%dH" % (row + 1, col + 1)


def render(s: VTScreen, unfinished: bytes, last: bool = False) -> bytes:
    """The repaint of ``s``; ``unfinished``: the bytes the feed ended in (see above).
    ``last``: the program has ended, and this is its last screen: what it showed, painted
    on the main screen (step 2 left out), so that it stays there once the attach ends and
    puts the terminal back (which leaves the alternate screen)."""
    out: list[bytes] = [
        b"\x1b[?2026h\x1b[?25l\x1b[?1049l\x1b[0m\x1b(B\x1b)B\x0f\x1b[4l\x1b[20l"
        b"\x1b[?6l\x1b[?7h\x1b[r"
        b"\x1b[?1;5;9;12;1000;1001;1002;1003;1004;1005;1006;1015;1016;2004l"
    ]
    if s.main is not None and not last:
        _paint(s, out, s.main.buffer)
        # ?1049h saves the cursor again, as the main screen's slot: same state.
        _save(out, s.main.saved, then=b"\x1b[?1049h")
    _paint(s, out, s.buffer)
    out.append(b"\x1b[3g")  # tab stops: clear all, then set the program's
    out.extend(b"\x1b[%dG\x1bH" % (x + 1) for x in sorted(s.tabstops) if x < s.columns)
    _save(out, s.saved)
    out.append(b"\x1b[0m\x1b(B\x1b)B\x0f")
    if s.margins is not None:  # after the saved cursors: origin mode would clamp them
        out.append(b"\x1b[%d;%dr" % (s.margins.top + 1, s.margins.bottom + 1))
    last = _place_cursor(s, out)
    private = [m >> 5 for m in (DECCKM, BLINK, FOCUS, PASTE) if m in s.mode]
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
    out.append(sgr(s.cursor.attrs))
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
    out.append(unfinished)
    return b"".join(out)

def _paint(s: VTScreen, out: list[bytes], buffer: Any) -> None:
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
        parts: list[bytes] = [cup(y, 0)]
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
                parts.append(sgr(cell))
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

def _save(out: list[bytes], saved: Saved, then: bytes = b"") -> None:
    """Recreate a DECSC slot: put cursor, pen and charsets where they were, ESC 7."""
    if saved.origin:
        out.append(b"\x1b[?6h")  # no scroll region yet: positions stay absolute
    out.append(cup(saved.y, saved.x))
    out.append(sgr(saved.attrs))
    out.append(b"\x1b(0" if saved.g0 is not None else b"\x1b(B")
    out.append(b"\x1b)0" if saved.g1 is not None else b"\x1b)B")
    out.append(b"\x0e" if saved.charset else b"\x0f")
    out.append(b"\x1b7" + then + (b"\x1b[?6l" if saved.origin else b""))

def _place_cursor(s: VTScreen, out: list[bytes]) -> bytes:
    """Origin and autowrap modes, then the cursor (after them: DECOM homes it).

    Two states live in the cell before the cursor rather than in the cursor: the
    pending wrap (after the last column was written, the next character wraps) and
    the character REP would repeat (only if nothing came after it).  Both are recreated
    by writing that cell again.  A pending wrap is recreated here; the REP character
    must be the very last byte of the render, so it is returned for render to append.
    """
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
    end = min(col + (2 if is_wide(cell) else 1), columns - (col == x)) if col is not None else 0
    if col is not None and x < columns and end != x:
        col = None
    if col is None or (x < columns and not _repeatable(s, cell)):
        out.append(cup(y - top, min(x, columns - 1)))
        return b""
    redraw = cup(y - top, col) + (cell.data or " ").encode("utf-8", "replace")
    if _repeatable(s, cell):
        return redraw  # the pen equals the cell's attributes: nothing after it
    out.append(sgr(cell) + redraw)
    return b""

def _repeatable(s: VTScreen, cell: Cell) -> bool:
    """Whether REP after the render repeats what it would repeat in the model."""
    return (
        bool(s.last_char)
        and cell.data == s.last_char
        and cell[1:] == s.cursor.attrs[1:]
        and mo.IRM not in s.mode
    )
