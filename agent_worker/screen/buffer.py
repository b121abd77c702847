"""The screen's storage: rows of cells, the saved-cursor slot, the hidden main screen."""

from __future__ import annotations

from typing import Any, NamedTuple

from pyte.screens import StaticDefaultDict

from agent_worker.screen.cells import BLANK, Cell

Line = StaticDefaultDict[int, Cell]


class Rows:
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


class Saved(NamedTuple):
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
UNSAVED = Saved(0, 0, BLANK, None, None, 0, False)


class Main(NamedTuple):
    """The main screen, put aside while the alternate screen is shown."""

    buffer: Rows
    saved: Saved


class CellCache(dict[str, Cell]):
    """char -> Cell for one pen: building a NamedTuple per drawn character is the cost."""

    def __init__(self, pen: Cell) -> None:
        super().__init__()
        self.pen = pen

    def __missing__(self, char: str) -> Cell:
        if len(self) >= 512:  # CJK text: keep memory bounded
            self.clear()
        cell = self[char] = self.pen._replace(data=char)
        return cell
