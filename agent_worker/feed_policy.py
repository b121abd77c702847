"""What one attach client is fed: how much output may be in flight to it, and when it gets
the current screen instead of its backlog (issue 12, "the present first").

Sans-I/O and clock-free (every call takes ``now``): the worker's sender asks
:meth:`FeedPolicy.room` before it sends, tells :meth:`sent` what it sent, and hands on the
client's acks (:meth:`acked`); the policy never touches a socket, so any transport (the
trio sender, the reader's fast path, a future hot-path thread) can drive it.

- **In flight.** A client that acks is sent at most :meth:`window` bytes beyond what it
  has acknowledged: about what its link drains in one round trip (measured drain rate x
  smallest round trip seen), times :data:`GAIN` so a faster link is found, plus
  :data:`MARGIN` for acks that arrive in batches (at most :data:`MARGIN_TIME` of the
  link).  The rest waits in the log, not in the SSH window or the kernel's buffers, so
  the present is never more than a round trip away.
- **Skip.** When a client that may be skipped has more than :data:`SKIP_AFTER` seconds of
  backlog at its measured rate, :meth:`should_skip` says so: the sender paints the current
  screen at the current offset and goes on live from there.  Until the client has shown
  that screen, a client still that far behind is sent nothing more (:meth:`should_hold`):
  the next screen follows a round trip later.  Before any rate is measured
  (a reconnect far behind), :data:`ASSUMED_RATE` stands in: a slow link's rate, so a
  backlog is never replayed for long.
- **A flood's end.** During a flood (a skip less than :data:`FLOOD_MEMORY` ago; a Repaint's
  answer does not count), a backlog
  of more than :data:`SCREENS_WORTH` screens is far behind too: it would scroll past
  unseen, and what ends the flood (the prompt after a Ctrl-C, a build's last line) would
  wait behind it.  And once the output has been quiet for :data:`QUIET_GAP`, the flood may
  be over: its last screen goes out at once, not a round trip later when the one before is
  shown; up to :data:`EARLY_SCREENS` of them before one is shown, and one more for the
  output that follows each key the user types (:meth:`typed`: the quiet after it is most
  likely the answer, and a pause in the flood must not have used the allowance up).
- A client that does not ack (a version-1 client, ``logs -f``) is sent every byte as fast
  as its socket takes them: :meth:`room` is unbounded and it is never skipped.

Bytes are counted on the wire (a Screen of a few kB can stand for megabytes of log), and
acks are log offsets: each frame sent is remembered with the offset it brings the client
to, so an ack of offset N retires every frame that ends at or before N.
"""

from __future__ import annotations

import collections

SKIP_AFTER = 0.5  # seconds of backlog, at the measured rate, before skipping to the screen
GAIN = 2.0  # window over rate x round trip: room to find that the link is faster (doubles)
MARGIN = 16 * 1024  # bytes of window on top, for acks that come in batches...
# ...but no more than this much of the link's time: on a link of 20 kB/s, 16 kB in flight
# was 0.8 s that a screen waited behind, and the present came 2-4 s late in a flood.
MARGIN_TIME = 0.1  # seconds
# Output in flight delays the present by window / rate; this much delay is allowed whatever
# the round trip, so a fast local link is not held to a tiny window (a round trip of 0.1 ms
# gave ~30 kB windows and halved drain), while a slow link's window hardly changes.
LATENCY_ALLOWANCE = 0.03  # seconds
INITIAL_WINDOW = 16 * 1024  # before anything is measured (0.8 s of a 20 kB/s link)
MIN_CHUNK = 4 * 1024
MAX_CHUNK = 256 * 1024
ASSUMED_RATE = 200_000.0  # bytes/s, a slow link: stands in until a rate is measured
RATE_MEMORY = 3.0  # seconds a drain-rate sample counts towards the estimate
RATE_SPAN = 0.02  # shortest span of acks that makes a drain-rate sample (or 2 round trips)
RTT_MEMORY = 10.0  # seconds a round-trip sample counts towards the smallest
UNBOUNDED = 1 << 62  # the window of a client that does not ack
HOLD_MIN = 0.5  # seconds a hold lasts at least without the screen's ack (or 2 round trips)
FLOOD_MEMORY = 1.0  # seconds after a skip that the client counts as in a flood
SCREENS_WORTH = 4  # in a flood, a backlog over this many screens' bytes is skipped too
# Output quiet this long has ended, for now: its last screen should not wait for the one
# before to be shown.  Well under a frame of a TUI at 60/s, well over a PTY's read gaps.
QUIET_GAP = 0.01
EARLY_SCREENS = 2  # screens sent on a quiet before the one before them was shown, at most


class FeedPolicy:
    """One client's feed: its frames in flight, its drain rate and round trip."""

    def __init__(self, *, acks: bool, may_skip: bool) -> None:
        self.acks = acks
        self.may_skip = acks and may_skip  # no acks, no measure of how far behind it is
        self.skips = 0
        self.repaint_wanted = False  # the client asked for the screen again
        self._sent = 0  # wire bytes sent, in all
        self._acked_wire = 0  # of which the client acknowledged
        self._frames: collections.deque[tuple[int, int, float]] = collections.deque()
        self._span: tuple[float, int] | None = None  # (time, acked wire) a rate span began
        self._rates: collections.deque[tuple[float, float]] = collections.deque()
        self._rtts: collections.deque[tuple[float, float]] = collections.deque()
        self._backlogged_since: float | None = None  # output waited for this client since
        self._acked_offset = 0  # the client's last ack
        self._skipped_to = 0  # the offset of the last screen it was skipped to
        self._skipped_at: float | None = None  # when
        self._screen_wire = 0  # that screen's bytes on the wire
        self._flood_at: float | None = None  # the last skip that was not a Repaint's answer
        self._early = 0  # screens sent on a quiet since the last one shown (a flood's end)
        self._answer_after: int | None = None  # a key came at this log end: its answer's
        # screen may go early (once)

    # -- what the sender tells the policy

    def sent(self, offset_after: int, wire: int, now: float) -> None:
        """A frame of ``wire`` bytes went out; it brings the client to ``offset_after``."""
        if not self.acks:
            return
        self._sent += wire
        self._frames.append((offset_after, self._sent, now))

    def acked(self, offset: int, now: float) -> None:
        """The client has shown the stream up to ``offset`` (checked by the conversation)."""
        self._acked_offset = max(self._acked_offset, offset)
        retired = None
        while self._frames and self._frames[0][0] <= offset:
            retired = self._frames.popleft()
        if retired is None:
            return
        _, self._acked_wire, sent_at = retired
        _remember(self._rtts, now, now - sent_at, RTT_MEMORY)
        if self._span is None:
            self._span = (now, self._acked_wire)
            return
        then, base = self._span
        # A span of at least two round trips: acks come in clumps (SSH packets, the
        # client's reads), and a short span between two clumps close together measured
        # up to 3.5x the link's rate at 200 kB/s (and so a window, and a delay to the
        # present, as many times too big).
        if now - then < max(RATE_SPAN, 2 * (self.rtt() or 0.0)):
            return
        # A span of acks is a fair sample of the link only if the client had output
        # waiting all along; otherwise it measures how fast output trickled in.
        if self._backlogged_since is not None and self._backlogged_since <= then:
            _remember(self._rates, now, (self._acked_wire - base) / (now - then), RATE_MEMORY)
        self._span = (now, self._acked_wire)

    def backlogged(self, now: float) -> None:
        """The sender has output this client has not been sent yet."""
        if self._backlogged_since is None:
            self._backlogged_since = now

    def caught_up(self) -> None:
        """The sender has sent this client everything there is."""
        self._backlogged_since = None

    # -- what the policy tells the sender

    @property
    def in_flight(self) -> int:
        return self._sent - self._acked_wire

    def rate(self, now: float) -> float | None:
        """The client's drain rate (wire bytes/s) measured lately, if it has been."""
        while self._rates and now - self._rates[0][0] > RATE_MEMORY and len(self._rates) > 1:
            self._rates.popleft()
        return max((r for _, r in self._rates), default=None)

    def rtt(self) -> float | None:
        return min((r for _, r in self._rtts), default=None)

    def window(self) -> int:
        """Most wire bytes in flight to this client."""
        if not self.acks:
            return UNBOUNDED
        rate = max((r for _, r in self._rates), default=None)
        rtt = self.rtt()
        if rate is None or rtt is None:
            return INITIAL_WINDOW
        return int(max(GAIN * rtt, LATENCY_ALLOWANCE) * rate + min(MARGIN, MARGIN_TIME * rate))

    def room(self) -> int:
        """Wire bytes that may be sent now (0: wait for an ack)."""
        if not self.acks:
            return MAX_CHUNK
        return max(0, self.window() - self.in_flight)

    def chunk(self) -> int:
        """The largest Output frame to send: a quarter window, so a frame's own length
        counts little in the round trip it measures."""
        if not self.acks:
            return MAX_CHUNK
        return max(MIN_CHUNK, min(MAX_CHUNK, self.window() // 4))

    def should_skip(self, position: int, end: int, now: float, quiet_for: float) -> bool:
        """Send the current screen instead of the log from ``position`` to ``end``?

        True when the backlog (in flight, plus not yet sent) is far behind (see
        :meth:`_far_behind`), and either the client has shown the last screen it was
        skipped to (so screens go out at the link's pace, one a round trip at most, not
        one per new output) or the output has been quiet for ``QUIET_GAP`` (``quiet_for``:
        seconds since the last output), so this screen is the flood's last."""
        if not self.may_skip or end <= position:
            return False
        if self._acked_offset < self._skipped_to and not self._may_go_early(end, quiet_for):
            return False
        return self._far_behind(position, end, now)

    def should_hold(self, position: int, end: int, now: float, quiet_for: float) -> bool:
        """Send nothing until the last screen is shown (or the output goes quiet)?

        True while a client that is still far behind has not yet shown the screen it was
        skipped to, and output still flows: the output after that screen would most likely
        be skipped by the next one, and in flight it would delay that screen by window /
        rate (0.2-0.7 s on the slow-link bench, for megabytes nobody saw).  So a flood
        costs a screen a round trip, as with mosh, and the present is never more than a
        round trip away."""
        return (self.may_skip and end > position and self._acked_offset < self._skipped_to
                and not self._may_go_early(end, quiet_for) and now < self.hold_until()
                and self._far_behind(position, end, now))

    def _may_go_early(self, end: int, quiet_for: float) -> bool:
        """May a screen go out before the last one is shown?  When the output has gone
        quiet, a few times per screen shown: output that comes in bursts gets no more than
        a few screens a round trip (each is a paint, up to tens of milliseconds of the
        worker's time, and a screen's bytes on the link); and once for output that came
        after a key the user typed (its answer)."""
        if quiet_for < QUIET_GAP:
            return False
        answer = self._answer_after is not None and end > self._answer_after
        return answer or self._early < EARLY_SCREENS

    def typed(self, end: int) -> None:
        """The user typed a key when the log ended at ``end``: the output after it is most
        likely the agent's answer (the prompt after a Ctrl-C), and once it is quiet its
        screen may go out early, whatever screens went early before."""
        self._answer_after = end

    def hold_until(self) -> float:
        """When a hold ends even without the screen's ack: a client older than the rule
        "a Screen is acked at once" acks one only with more output after it."""
        return (self._skipped_at or 0.0) + max(HOLD_MIN, 2 * (self.rtt() or 0.0))

    def look_again_at(self, now: float, end: int, quiet_for: float) -> float:
        """When a hold should be looked at again if nothing wakes the sender: when it
        expires, or when the output will have been quiet for ``QUIET_GAP`` (if that would
        let a screen go early)."""
        if not self._may_go_early(end, QUIET_GAP):
            return self.hold_until()
        return min(self.hold_until(), now + max(0.0, QUIET_GAP - quiet_for))

    def takes_live(self, position: int, end: int, now: float) -> bool:
        """May output from ``position`` to ``end`` go to this caught-up client as it is
        logged (the reader's fast path)?  Not when the sender would skip it or hold it:
        the tail of a flood after its last screen (the fast path sent the 45 kB before a
        Ctrl-C's prompt whole, behind that screen)."""
        return not (self.may_skip and self._far_behind(position, end, now))

    def _far_behind(self, position: int, end: int, now: float) -> bool:
        rate = self.rate(now) or ASSUMED_RATE
        if (self.in_flight + end - position) / rate > SKIP_AFTER:
            return True
        flooding = self._flood_at is not None and now - self._flood_at < FLOOD_MEMORY
        return flooding and end - position > SCREENS_WORTH * self._screen_wire

    def repaint(self) -> None:
        """The client asks for the current screen (its status line covered a row)."""
        self.repaint_wanted = True

    def skipped(self, offset: int, wire: int, now: float) -> None:
        """The client was sent the screen as of ``offset`` (``wire`` bytes) instead of its
        backlog."""
        self.skips += 1
        shown = self._acked_offset >= self._skipped_to  # the screen before this one
        answer = self._answer_after is not None and offset > self._answer_after
        if answer:
            self._answer_after = None  # this is the answer's screen: not one of the few
        if shown:
            self._early = 0
        elif not answer:
            self._early += 1
        self._skipped_to = offset
        self._skipped_at = now
        self._screen_wire = wire
        if not self.repaint_wanted:  # a status line went, not a flood came
            self._flood_at = now
        self.repaint_wanted = False


def _remember(samples: collections.deque[tuple[float, float]], now: float, value: float,
              memory: float) -> None:
    samples.append((now, value))
    while len(samples) > 1 and now - samples[0][0] > memory:
        samples.popleft()
