"""Rebuilding a session's screen from the end of its log, without replaying all of it.

The terminal model parses a few MB/s, so a screen is never rebuilt from a whole log: it
starts from recent output, and the result is exact when that output has a point after
which the screen is fully known (an anchor: a reset, a clear, entering the alternate
screen).  Anchors are read with the one escape tokenizer, so they are found in whatever
form the program wrote them (``CSI ? 1049 ; 25 h``, ``CSI 1 ; 1 H CSI J``).
"""

from __future__ import annotations

import re

from agent_worker.escapes import CSI, Escape, Text, Token, Tokenizer
from agent_worker.log import LogReader
from agent_worker.screen import ScreenModel

WINDOW = 64 * 1024  # how far back to look: ~15-90 ms of parsing
_ALTERNATE = (1047, 1049)  # CSI ? n h: a fresh alternate screen
# Not plain text: an escape or a control byte that may change more than the cursor's place
# along and down a screen of lines.
_NOT_PLAIN = re.compile(rb"[^\x20-\x7e\x80-\xff\r\n\t\b]")


def is_anchor(token: Token, previous: Token | None) -> bool:
    """Whether the whole screen is known after ``token`` (``previous`` came right before):
    a reset (``ESC c``), ``CSI 2 J``, ``CSI ? 1049 h`` / ``? 1047 h``, or ``CSI J`` right
    after the cursor went home (``CSI H``)."""
    if type(token) is Escape:
        return token == ("", "c")
    if type(token) is not CSI or token.intermediates:
        return False
    if token.final == "h":
        return token.prefix == "?" and any(mode in _ALTERNATE for mode in token.values())
    if token.final != "J" or token.prefix:
        return False
    if token.params == "2":
        return True
    return (
        token.params in ("", "0")
        and type(previous) is CSI
        and previous.final == "H"
        and not previous.intermediates
        and not previous.prefix
        and all(v <= 1 for v in previous.values())
    )


def recent_start(reader: LogReader, until: int, window: int = WINDOW,
                 rows: int | None = None) -> tuple[int, bool]:
    """Where to start the model to show the screen at ``until``, and whether it is exact.

    The start is the first line start in the last ``window`` bytes.  Not exact means no
    anchor follows it: the model may miss what was drawn before, and the caller may ask
    the program to redraw.  Given the screen's ``rows``, plain text at the window's start
    (a flood of lines: ``yes``, ``cat``, a runaway loop) is skipped to its last lines
    (:func:`_past_plain_lines`): a paint after a flood parses a screenful, not 64 kB
    (~30 ms of the worker's time, while the prompt after a Ctrl-C waits for it).
    """
    start = max(0, until - window)
    if start == 0:
        return 0, True  # the whole log is within reach
    chunk = reader.read(start, until - start)
    newline = chunk.find(b"\n")
    skip = newline + 1 if newline >= 0 else 0
    if rows is not None:
        skip = _past_plain_lines(chunk, skip, rows + 1)
    previous: Token | None = None
    for token in Tokenizer().feed(chunk[skip:].decode("latin-1")):
        if type(token) is not Text and is_anchor(token, previous):
            return start + skip, True
        previous = token
    return start + skip, False


def _past_plain_lines(chunk: bytes, first: int, lines: int) -> int:
    """Where a model may start instead of at ``first``: at the last ``lines`` lines of the
    plain text that runs from ``first`` to the first escape or control byte.

    Plain text only writes and scrolls.  A fresh model fed those last lines (more than a
    screenful, each after a ``CR LF``) holds what a fresh model fed all of it holds when
    the escape comes: the same rows, the cursor on the bottom one in the first column, no
    mode set.  From there both parse the same bytes, so they show the same screen."""
    found = _NOT_PLAIN.search(chunk, first)
    pos = found.start() if found else len(chunk)
    for _ in range(lines):
        pos = chunk.rfind(b"\r\n", first, pos)
        if pos < 0:
            return first
    return pos + 2


def screen_at(reader: LogReader, until: int, rows: int, cols: int) -> tuple[ScreenModel, bool]:
    """A model showing the screen as of log offset ``until``, and whether it is exact."""
    start, exact = recent_start(reader, until, rows=rows)
    model = ScreenModel(rows, cols)
    model.feed(reader.read(start, until - start))
    return model, exact
