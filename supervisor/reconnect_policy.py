"""When the remote attach tries again after its link dropped, and how long one try may take.

Pure: no clock, no I/O; the caller says how long things took.  The remote attach
(:mod:`supervisor.remote_attach`) asks :meth:`ReconnectPolicy.budget` before each try and
reports how it went; the answers are how long to wait before the next one.

The aim is the user's: from the link coming back to the session's next byte on the
screen in well under a second.  So while a user is attached, a quick failure (refused,
unreachable) is retried within half a second, at most (a TCP SYN, or a DNS lookup, each
time: cheap), and a try that hangs (packets dropped: the link is still down) is given up
after about 2 s and started afresh, rather than left to the kernel's SYN retransmissions,
which back off to 3, 7, 15 s.  A try's budget adapts to the link: at least four times the
last successful set-up, doubled after each try that ran out of time, so a slow link is
never cut off for good.  A network change on the laptop (:mod:`supervisor.network_watch`)
makes the next try immediate; the remote attach handles that, not this module.
"""

from __future__ import annotations

import attrs

BACKOFF_START = 0.25  # seconds from one quick failure to the next try
BACKOFF_MAX = 0.5  # the longest wait between tries while the user is attached
# A session that streamed this long before its link dropped is retried at once: the drop
# was a blip, not a box that drops us right after every Welcome (that one waits 0.25 s).
STABLE_SESSION = 1.0
FIRST_CONNECT_BUDGET = 20.0  # TCP + key exchange + authentication + Welcome, first time
RECONNECT_BUDGET_MIN = 2.0  # the shortest a reconnect try may take
RECONNECT_BUDGET_MAX = 20.0
SETUP_MARGIN = 4.0  # a reconnect try may take this many times the last successful set-up
MAX_DOUBLINGS = 4


@attrs.define
class ReconnectPolicy:
    """The timing of the tries of one remote attach, across every outage it lives through."""

    delay: float = BACKOFF_START  # the wait after the next quick failure
    last_setup: float | None = None  # connect to Welcome, the last time it worked
    timeouts: int = 0  # tries in a row that ran out of their budget

    def budget(self) -> float:
        """How long the next try may take, from connecting to the worker's Welcome."""
        if self.last_setup is None:
            return FIRST_CONNECT_BUDGET
        base = max(RECONNECT_BUDGET_MIN, SETUP_MARGIN * self.last_setup)
        return min(RECONNECT_BUDGET_MAX, base * 2**self.timeouts)

    def connected(self, setup: float) -> None:
        """A try reached the Welcome after ``setup`` seconds."""
        self.last_setup = setup
        self.timeouts = 0

    def dropped(self, lived: float) -> float:
        """A streaming link ended after ``lived`` seconds: the wait before the first try."""
        self.delay = BACKOFF_START
        return 0.0 if lived >= STABLE_SESSION else BACKOFF_START

    def failed(self, took: float, *, timed_out: bool) -> float:
        """A try failed after ``took`` seconds: the wait before the next one.

        Tries start at most ``delay`` apart, so a try that took long is followed at once.
        """
        if timed_out:
            self.timeouts = min(self.timeouts + 1, MAX_DOUBLINGS)
        wait = max(0.0, self.delay - took)
        self.delay = min(self.delay * 2, BACKOFF_MAX)
        return wait
