"""When the remote attach tries again after its link dropped, and how long one try may take.

Pure: no clock, no I/O; the caller says how long things took.  The remote attach
(:mod:`supervisor.remote_attach`) asks :meth:`ReconnectPolicy.budget` before each try and
reports how it went; the answers are how long to wait before the next one.

The aim is the user's: from the link coming back to the session's next byte on the
screen in well under a second.  So while a user is attached, a quick failure (refused,
unreachable) is retried within half a second, at most (a TCP SYN, or a DNS lookup, each
time: cheap).  A try on a link that drops packets hears nothing back: while it does, a
fresh TCP connection is started every :meth:`ReconnectPolicy.stagger` seconds (a quarter
of one, or three times the box's time to answer;
:func:`supervisor.ssh_link.answering_socket`) rather than left to the kernel's SYN
retransmissions, which back off to 3, 7, 15 s.  A try's budget adapts to the link: at least
four times the last successful set-up, doubled after each try that ran out of time *after
the box had answered* (a slow link, not a dead one), so a slow link is never cut off for
good and a long outage does not make the tries longer.  A network change on the laptop
(:mod:`supervisor.network_watch`) makes the next try immediate; the remote attach handles
that, not this module.
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
# Seconds between fresh TCP connections while none has answered: after an outage the link
# comes back at any moment, and the next SYN goes out within this (1 s made the slow-link
# bench's outage figure wait 0.5 s on average for it).  A SYN is 60 bytes.
STAGGER_MIN = 0.25
ANSWER_MARGIN = 3.0  # ...or this many times the box's last time to answer, if longer
MAX_DOUBLINGS = 4


@attrs.define
class ReconnectPolicy:
    """The timing of the tries of one remote attach, across every outage it lives through."""

    delay: float = BACKOFF_START  # the wait after the next quick failure
    last_setup: float | None = None  # connect to Welcome, the last time it worked
    # Connect to the box's first byte, the quickest seen: a connection that lost its SYN
    # (an outage) took longer, and that says nothing about the link.  A stagger that is
    # too short for a slower link later costs only extra SYNs: earlier connections stay.
    last_answer: float | None = None
    timeouts: int = 0  # tries in a row that ran out of their budget

    def patience(self) -> float:
        """How long the next try may wait for the box to answer at all (fresh TCP
        connections are started meanwhile, every :meth:`stagger` seconds)."""
        return FIRST_CONNECT_BUDGET if self.last_setup is None else RECONNECT_BUDGET_MAX

    def budget(self) -> float:
        """How long the next try may take, from the box's answer to the worker's Welcome
        (from its start, where the answer cannot be seen: a ProxyJump)."""
        if self.last_setup is None:
            return FIRST_CONNECT_BUDGET
        base = max(RECONNECT_BUDGET_MIN, SETUP_MARGIN * self.last_setup)
        return min(RECONNECT_BUDGET_MAX, base * 2**self.timeouts)

    def stagger(self) -> float:
        """Seconds between fresh TCP connections while the box has not answered."""
        return max(STAGGER_MIN, ANSWER_MARGIN * (self.last_answer or 0.0))

    def connected(self, setup: float, answer: float | None = None) -> None:
        """A try reached the Welcome after ``setup`` seconds (the box answered after
        ``answer``, when known)."""
        self.last_setup = setup
        if answer is not None:
            self.last_answer = answer if self.last_answer is None else min(self.last_answer, answer)
        self.timeouts = 0

    def dropped(self, lived: float) -> float:
        """A streaming link ended after ``lived`` seconds: the wait before the first try."""
        self.delay = BACKOFF_START
        return 0.0 if lived >= STABLE_SESSION else BACKOFF_START

    def failed(self, took: float, *, timed_out: bool) -> float:
        """A try failed after ``took`` seconds: the wait before the next one.

        ``timed_out``: it ran out of its budget after the box had answered.  Tries start
        at most ``delay`` apart, so a try that took long is followed at once.
        """
        if timed_out:
            self.timeouts = min(self.timeouts + 1, MAX_DOUBLINGS)
        wait = max(0.0, self.delay - took)
        self.delay = min(self.delay * 2, BACKOFF_MAX)
        return wait
