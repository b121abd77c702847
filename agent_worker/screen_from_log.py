"""Rebuilding a session's screen from the end of its log, without replaying all of it.

The terminal model parses a few MB/s, so a screen is never rebuilt from a whole log: it
starts from recent output, and the result is exact when that output has a point after
which the screen is fully known (an anchor: a reset, a clear, entering the alternate
screen).  Anchors are read with the one escape tokenizer, so they are found in whatever
form the program wrote them (``CSI ? 1049 ; 25 h``, ``CSI 1 ; 1 H CSI J``).
"""

from __future__ import annotations

from agent_worker.escapes import CSI, Escape, Text, Token, Tokenizer
from agent_worker.log import LogReader
from agent_worker.screen import ScreenModel

WINDOW = 64 * 1024  # how far back to look: ~15-90 ms of parsing
_ALTERNATE = (1047, 1049)  # CSI ? n h: a fresh alternate screen


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


def recent_start(reader: LogReader, until: int, window: int = WINDOW) -> tuple[int, bool]:
    """Where to start the model to show the screen at ``until``, and whether it is exact.

    The start is the first line start in the last ``window`` bytes.  Not exact means no
    anchor follows it: the model may miss what was drawn before, and the caller may ask
    the program to redraw.
    """
    start = max(0, until - window)
    if start == 0:
        return 0, True  # the whole log is within reach
    chunk = reader.read(start, until - start)
    newline = chunk.find(b"\n")
    skip = newline + 1 if newline >= 0 else 0
    previous: Token | None = None
    for token in Tokenizer().feed(chunk[skip:].decode("latin-1")):
        if type(token) is not Text and is_anchor(token, previous):
            return start + skip, True
        previous = token
    return start + skip, False


def screen_at(reader: LogReader, until: int, rows: int, cols: int) -> tuple[ScreenModel, bool]:
    """A model showing the screen as of log offset ``until``, and whether it is exact."""
    start, exact = recent_start(reader, until)
    model = ScreenModel(rows, cols)
    model.feed(reader.read(start, until - start))
    return model, exact
