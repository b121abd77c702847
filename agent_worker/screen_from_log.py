"""Rebuilding a session's screen from the end of its log, without replaying all of it.

The terminal model parses a few MB/s, so a screen is never rebuilt from a whole log: it
starts from recent output, at the last point after which the screen is fully known (a
reset, a clear, entering the alternate screen) when there is one in reach.
"""

from __future__ import annotations

from agent_worker.log import LogReader
from agent_worker.screen import ScreenModel

WINDOW = 64 * 1024  # how far back to look: ~15-90 ms of parsing
# After any of these the whole screen is known again.
ANCHORS = (b"\x1bc", b"\x1b[?1049h", b"\x1b[?1047h", b"\x1b[2J", b"\x1b[H\x1b[J")


def recent_start(reader: LogReader, until: int, window: int = WINDOW) -> tuple[int, bool]:
    """Where to start the model to show the screen at ``until``, and whether it is exact.

    Not exact means the model starts mid-stream (at a line start) and may miss what was
    drawn before: the caller may ask the program to redraw.
    """
    start = max(0, until - window)
    if start == 0:
        return 0, True  # the whole log is within reach
    chunk = reader.read(start, until - start)
    anchor = max(chunk.rfind(a) for a in ANCHORS)
    if anchor >= 0:
        return start + anchor, True
    newline = chunk.find(b"\n")
    return start + (newline + 1 if newline >= 0 else 0), False


def screen_at(reader: LogReader, until: int, rows: int, cols: int) -> tuple[ScreenModel, bool]:
    """A model showing the screen as of log offset ``until``, and whether it is exact."""
    start, exact = recent_start(reader, until)
    model = ScreenModel(rows, cols)
    model.feed(reader.read(start, until - start))
    return model, exact
