"""The activity of one session, resolved from every signal: a sans-I/O state machine.

Each *source* keeps its latest opinion (a state, or none) and when it last changed:

- ``hook``: the agent told us (Claude Code's hooks): the most exact;
- ``screen``: a screen rule matches what is on screen now (an approval prompt);
- ``terminal``: the window title (Claude's braille spinner / ``✳``), OSC 9/777/99
  notifications, a real BEL;
- ``output``: quiet time, for agents that give no other signal.

The activity is the opinion of the most exact source that has one, unless a less exact
source (never ``output``) *changed its mind later* (by more than ``OVERRIDE_AFTER``) and
disagrees: hooks miss transitions (a user interrupt fires no Stop hook), and the title
then shows the truth.  ``output`` counts only when no other source has an opinion.
"""

from __future__ import annotations

import attrs

STATES = ("starting", "working", "needs_approval", "needs_input", "idle", "ended", "unknown")
SOURCES = ("hook", "screen", "terminal", "output")  # most exact first
OVERRIDE_AFTER = 0.3  # seconds a less exact signal must come after a more exact one
BURST_GAP = 0.1  # a pause in the output this long ends a burst
QUIET_AFTER = 2.0  # seconds without output before a quiet-time session counts as idle


@attrs.frozen
class Activity:
    state: str = "starting"
    since: float = 0.0
    source: str | None = None
    attention: str | None = None

    def to_fields(self) -> dict[str, object]:
        """The snapshot's and ``ls --json``'s fields."""
        return {"activity": self.state, "activity_since": self.since,
                "activity_source": self.source, "attention": self.attention}


@attrs.frozen
class Change:
    """An activity change, as the ``activity`` event carries it."""

    activity: Activity
    previous: str

    def event(self) -> dict[str, object]:
        return {"event": "activity", "activity": self.activity.state, "previous": self.previous,
                "source": self.activity.source, "attention": self.activity.attention,
                "since": self.activity.since}


@attrs.define
class _Opinion:
    state: str | None = None
    attention: str | None = None
    changed_at: float = 0.0


@attrs.define
class Tracker:
    """Feed it reports; each returns the :class:`Change` it caused, or None."""

    quiet_after: float = QUIET_AFTER
    current: Activity = attrs.Factory(Activity)
    _opinions: dict[str, _Opinion] = attrs.Factory(lambda: {s: _Opinion() for s in SOURCES})
    _last_output: float | None = None
    _ended: bool = False

    def start(self, now: float) -> None:
        self.current = Activity("starting", now, None, None)

    def report(self, source: str, state: str | None, now: float, attention: str | None = None,
               at: float | None = None) -> Change | None:
        """``source`` now thinks ``state`` (None: no opinion); ``at``: when that became true."""
        if source not in SOURCES:
            raise ValueError(f"unknown activity source {source!r}")
        if state is not None and state not in STATES:
            raise ValueError(f"unknown activity {state!r}")
        opinion = self._opinions[source]
        # A hook is an event: the agent says it *now*, even if it said the same before
        # (a new prompt after an interrupt the hooks missed).  The other sources are
        # levels: only a change of mind counts.
        if opinion.state != state or source == "hook":
            opinion.changed_at = now if at is None else at
        opinion.state, opinion.attention = state, attention
        return self._resolve(now)

    def output(self, now: float) -> Change | None:
        """The agent printed something (quiet-time rule: output flowing means working)."""
        previous = self._last_output
        was_quiet = previous is None or now - previous >= self.quiet_after
        self._last_output = now
        if self._answered(now, previous):
            was_quiet = True  # resolve again
        if was_quiet or self._opinions["output"].state != "working":
            return self.report("output", "working", now)
        return None

    def echoed(self, now: float) -> Change | None:
        """The user's keys were echoed: the user at work, not the agent, so the quiet-time
        rule does not hear of it; but like the agent's own output, it answers a bell."""
        return self._resolve(now) if self._answered(now, self._last_output) else None

    def _answered(self, now: float, previous: float | None) -> bool:
        """Output again after a pause that followed the bell's burst: the question a bell
        or notification asked has been answered (True: its opinion is dropped)."""
        bell = self._opinions["terminal"]
        if bell.state == "needs_input" and previous is not None and \
                bell.changed_at <= previous and now - previous >= BURST_GAP:
            bell.state, bell.attention, bell.changed_at = None, None, now
            return True
        return False

    def tick(self, now: float) -> Change | None:
        """Time passed: quiet for ``quiet_after`` means idle (as of when it went quiet)."""
        last = self._last_output
        if last is not None and now - last >= self.quiet_after and \
                self._opinions["output"].state == "working":
            return self.report("output", "idle", now, at=last)
        return None

    def next_tick(self) -> float | None:
        """When :meth:`tick` could next change something (None: not until more output)."""
        if self._last_output is None or self._opinions["output"].state != "working":
            return None
        return self._last_output + self.quiet_after

    def ended(self, now: float, source: str | None = None, attention: str | None = None
              ) -> Change | None:
        """The agent's process ended: final, whatever any source says afterwards."""
        if self._ended:
            return None
        self._ended = True
        return self._set(Activity("ended", now, source or self.current.source, attention))

    def _resolve(self, now: float) -> Change | None:
        if self._ended:
            return None
        winner: str | None = None
        for source in SOURCES[:-1]:
            opinion = self._opinions[source]
            if opinion.state is None:
                continue
            if winner is None:
                winner = source
                continue
            best = self._opinions[winner]
            if opinion.state != best.state and opinion.changed_at > best.changed_at + OVERRIDE_AFTER:
                winner = source  # a later change a more exact signal missed
        if winner is None and self._opinions["output"].state is not None:
            winner = "output"
        if winner is None:
            return None
        opinion = self._opinions[winner]
        assert opinion.state is not None
        if (opinion.state, opinion.attention) == (self.current.state, self.current.attention):
            return None
        since = now if opinion.state != self.current.state else self.current.since
        return self._set(Activity(opinion.state, since, winner, opinion.attention))

    def _set(self, activity: Activity) -> Change | None:
        previous = self.current
        self.current = activity
        if (previous.state, previous.attention, previous.source) == \
                (activity.state, activity.attention, activity.source):
            return None
        return Change(activity, previous.state)
