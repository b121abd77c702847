"""Answering the terminal queries a program sends while no terminal is attached.

A TUI asks its terminal questions at start (where is the cursor, what kind of terminal are
you, what are your colours) and some wait for the answer.  With no interactive client
attached nobody else would answer, so the worker does, as a plain xterm-like terminal would.

The queries are read with :class:`agent_worker.escapes.Tokenizer`, so one split across two
PTY reads is answered like one that came whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from agent_worker.escapes import CSI, OSC, Tokenizer

# CSI queries: (private prefix + parameters, final) -> answer.
_CSI_ANSWERS = {
    ("", "c"): b"\x1b[?62;22c",  # primary device attributes: a VT220 with ANSI colour
    ("0", "c"): b"\x1b[?62;22c",
    (">", "c"): b"\x1b[>0;10;1c",  # secondary device attributes
    (">0", "c"): b"\x1b[>0;10;1c",
}
# OSC colour queries: the body -> the colour answered (white on black).
_OSC_ANSWERS = {
    "10;?": "10;rgb:ffff/ffff/ffff",  # foreground
    "11;?": "11;rgb:0000/0000/0000",  # background
}

_MAY_BEGIN = re.compile(r"\x1b\[[>0-9]*[cn]|\x1b\]1[01];")  # what every query starts with
_LONGEST = 8  # the longest match of _MAY_BEGIN that any query makes


class QueryAnswerer:
    """Feed it the session's output; it returns the answers to the queries in it.

    ``cursor`` gives the cursor position (row, col, 0-based) for a cursor-position report,
    or None when it is not known (the query then goes unanswered).
    """

    def __init__(self) -> None:
        self._tokens = Tokenizer(text=False, controls=False)

    def feed(self, data: bytes, cursor: Callable[[], tuple[int, int] | None]) -> bytes:
        # On the PTY reader's path: only where a query may begin is the output read.
        answers: list[bytes] = []
        for token in self._tokens.feed_at(data.decode("latin-1"), _MAY_BEGIN, _LONGEST):
            if type(token) is CSI:
                if token.intermediates:
                    continue
                if token.final == "n" and token.params == "6":
                    where = cursor()
                    if where is not None:
                        answers.append(b"\x1b[%d;%dR" % (where[0] + 1, where[1] + 1))
                    continue
                found = _CSI_ANSWERS.get((token.params, token.final))
                if found is not None:
                    answers.append(found)
            elif type(token) is OSC:
                colour = _OSC_ANSWERS.get(token.body)
                if colour is not None:
                    answers.append(("\x1b]" + colour + token.terminator).encode())
        return b"".join(answers)

    def skip(self) -> None:
        """Part of the output was not fed (a client answered it): forget any open sequence."""
        self._tokens.reset()
