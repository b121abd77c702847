"""The attach client's status line: the one owner of the user's bottom row.

Everything an attach client says of its own while attached (a notice of any session, the
skip to the present, "read-only: input ignored", the reconnect state) goes through one
:class:`StatusLine`, local attach and remote attach alike:

- **One message at a time.**  A message shows until its time is up (:data:`SHOWN_FOR`,
  per :class:`Kind`) or, for the link's state, until it is cleared; a skip said again
  within :data:`QUIET_FOR` seconds is not shown (one line per flood).  A more urgent kind
  replaces a less urgent one; a less urgent one that arrives meanwhile is not shown (the
  supervisor's events and ``superv logs`` still have it).
- **The row comes back.**  The message covers the agent's bottom row.  When it goes, the
  client asks the worker for the current screen (``Repaint``) if the session has one to
  give (the attach shows the present, and the link is up); otherwise the row is erased.
- **--exact writes nothing of its own.**  Its promise is every byte of the session, once,
  in order, and nothing else: notices, skips and refusals are not drawn (the 60 MB drain
  bench once found a notice's 49 bytes in the stream).  Only the link's state is, while
  the link is down and the stream stopped anyway, and it is erased, never repainted (a
  Screen would break the promise).

Clock-free: each call that depends on time takes ``now``; the caller's loop asks
:meth:`StatusLine.due` how long it may sleep and calls :meth:`StatusLine.tick` when it
wakes.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent_worker.conversation import ClientConversation


class Kind(enum.IntEnum):
    """What a message is about; a higher value is more urgent."""

    NOTICE = 1  # a notification, of this session or another (notify)
    INPUT = 2  # the worker refused our input (a read-only attach)
    SKIP = 3  # the worker skipped us to the present (issue 12)
    LINK = 4  # the link is down: reconnecting, keys discarded (stays until cleared)


SHOWN_FOR: dict[Kind, float | None] = {
    Kind.NOTICE: 4.0,
    Kind.INPUT: 2.0,
    # Short: the row it covers is where a shell's prompt comes back after a Ctrl-C (the
    # slow-link bench's prompt waited 3 s for a skip line that was shown for 3 s).
    Kind.SKIP: 1.5,
    Kind.LINK: None,
}
# A kind said again within this many seconds of the last time it came up is not shown:
# a flood skips a client every round trip or so, and one line per flood says it.
QUIET_FOR: dict[Kind, float] = {Kind.SKIP: 10.0}


def paint(rows: int, text: str) -> bytes:
    """Bytes that show ``text`` in reverse video on the bottom row, keeping the cursor."""
    return b"\x1b7\x1b[%d;1H\x1b[0;7m %s \x1b[0m\x1b[K\x1b8" % (rows, text.encode(errors="replace"))


def erase(rows: int) -> bytes:
    """Bytes that erase the bottom row, keeping the cursor."""
    return b"\x1b7\x1b[%d;1H\x1b[0m\x1b[K\x1b8" % rows


def can_repaint(talk: ClientConversation) -> bool:
    """May this connection ask for the screen (the attach shows the present, and the
    worker reads Repaint: version 2)?"""
    return talk.hello.may_skip and (talk.version or 0) >= 2


def fit(text: str, cols: int) -> str:
    """``text`` cut to the row (two columns of margin), with an ellipsis if cut."""
    return text if len(text) <= cols - 2 else text[: max(0, cols - 3)] + "…"


class StatusLine:
    """One attach client's bottom row.

    ``write`` puts bytes on the user's terminal; ``size`` gives its (rows, cols);
    ``repaint`` asks the worker for the current screen and says whether it could (False
    when the attach does not show the present, or the link is down).
    """

    SHOWN_FOR = SHOWN_FOR

    def __init__(self, write: Callable[[bytes], None], size: Callable[[], tuple[int, int]],
                 repaint: Callable[[], bool], *, exact: bool = False) -> None:
        self._write = write
        self._size = size
        self._repaint = repaint
        self.exact = exact
        self.text: str | None = None  # what is shown, None when nothing is
        self.kind: Kind | None = None
        self._until: float | None = None  # when it goes (None: when cleared)
        self._extra: bytes = b""  # sent after the line each time it is painted (a bell)
        self._asked = False  # a Repaint was asked for, its Screen not come yet
        self._came_up: dict[Kind, float] = {}  # when each kind was last asked to show

    def show(self, text: str, kind: Kind, now: float, extra: bytes = b"") -> bool:
        """Show ``text`` for its kind's time, unless something more urgent is shown;
        ``extra`` is written with it (a notice's bell).  Whether it is shown."""
        if self.exact and kind is not Kind.LINK:
            return False
        last, self._came_up[kind] = self._came_up.get(kind), now
        if kind in QUIET_FOR and last is not None and now - last < QUIET_FOR[kind]:
            return False
        if self.kind is not None and self.kind > kind:
            return False
        self.text, self.kind, self._extra = text, kind, extra
        shown_for = SHOWN_FOR[kind]
        self._until = None if shown_for is None else now + shown_for
        self._draw()
        self._extra = b""  # a bell rings once, not on every redraw
        return True

    def clear(self, kind: Kind | None = None) -> None:
        """Take the message away now (only if it is of ``kind``, when given)."""
        if self.kind is None or (kind is not None and self.kind is not kind):
            return
        self.text = self.kind = self._until = None
        if not self.exact and self._repaint():
            self._asked = True
        else:
            self._write(erase(self._size()[0]))

    def screen_came(self) -> bool:
        """A Screen arrived and was written: was it the one a Repaint asked for?  Then a
        skip it makes is ours, not news: announcing it would cover the row again, and ask
        again, for ever under a steady flood.

        A Screen paints the whole terminal, our row too: the message shown is painted
        again over it.  (A flood skips a client a round trip after the last skip, and the
        second skip's Screen wiped the note of the first within 20 ms, while the quiet
        rule kept the second from drawing it: a skipped user was never told.)"""
        asked, self._asked = self._asked, False
        self.redraw()
        return asked

    def due(self, now: float) -> float | None:
        """Seconds until the message shown goes (None: nothing will go by itself)."""
        return None if self._until is None else max(0.0, self._until - now)

    def tick(self, now: float) -> None:
        """Take the message away if its time is up."""
        if self._until is not None and now >= self._until:
            self.clear()

    def redraw(self) -> None:
        """Paint the message again (the window changed size, or a Screen covered it)."""
        if self.text is not None:
            self._draw()

    def leaving(self) -> bytes:
        """What erases the message when the client ends (written with the terminal reset)."""
        return erase(self._size()[0]) if self.text is not None else b""

    def _draw(self) -> None:
        assert self.text is not None
        rows, cols = self._size()
        self._write(paint(rows, fit(self.text, cols)) + self._extra)
