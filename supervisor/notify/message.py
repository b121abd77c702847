"""What a supervisor event means for a person, and when to tell them (sans-I/O).

:func:`change_of` names the change an event is (or None), :func:`notice` builds the
notification's JSON (the webhook's body, the command's stdin, the ``notice`` event), and
:class:`Debouncer` holds an activity change until it has lasted :data:`SETTLE` seconds, so
a flicker (working -> idle -> working within the settle time) sends nothing and the same
change is never sent twice in a row.  :class:`QuietTurns` decides when a session known only
by quiet time has really finished a turn, rather than merely paused.
"""

from __future__ import annotations

from typing import Any

import attrs

SETTLE = 0.4  # seconds an activity must last before it is notified
QUIET_SOURCE = "output"  # the activity source that is only quiet time (tracker.SOURCES)
# Claude Code's StopFailure (a usage limit, an API error) reaches us as an idle activity
# whose attention says so (agent_worker/activity/hooks.py spells it).
TURN_FAILED = "turn failed:"


def change_of(event: dict[str, Any]) -> str | None:
    """The change a supervisor event is, in the words of ``notify.on``, or None."""
    kind = event.get("event")
    if kind == "activity":
        activity = event.get("activity")
        attention = event.get("attention") or ""
        if activity == "idle" and str(attention).startswith(TURN_FAILED):
            return "error"
        if activity == "idle":
            return "idle" if event.get("previous") == "working" else None
        if activity in ("working", "needs_approval", "needs_input"):
            return str(activity)
        return None  # ended is told by the exited event, with how it ended
    if kind == "exited":
        return "ended"
    if kind == "stalled":
        return "stalled"
    if kind in ("launch_failed", "restart_limit"):
        return "error"  # superv's own errors about the session: it will not run by itself
    if kind == "log_write_failed" and not event.get("ongoing"):
        return "error"  # held till the disk has room (ongoing: told before a restart of ours)
    return None


def line(host: str, session: str, change: str, event: dict[str, Any]) -> str:
    """The notification's one line: host, session and reason."""
    who = f"{host}:{session}"
    attention = event.get("attention")
    tail = f": {attention}" if attention else ""
    match change:
        case "needs_approval":
            return f"{who} needs approval{tail}"
        case "needs_input":
            return f"{who} needs input{tail}"
        case "idle":
            return f"{who} finished its turn{tail}"
        case "error" if event.get("event") == "launch_failed":
            return f"{who} failed to start: {event.get('error')}"
        case "error" if event.get("event") == "restart_limit":
            return f"{who} keeps failing: not restarted after {event.get('restarts')} restarts"
        case "error" if event.get("event") == "log_write_failed":
            return held(who, event.get("error"))
        case "error":
            return f"{who} {attention}"
        case "ended":
            return f"{who} ended: {event.get('state') or 'ended'}"
        case "stalled":
            return f"{who} stalled: no output for {event.get('idle', '?')} s"
        case "test":
            return f"{who} test notification from superv"
    return f"{who} is {change}{tail}"


def held(who: str, error: object) -> str:
    """The words for a session whose disk refuses its log: the notification's, and what an
    attach that comes meanwhile shows."""
    return (f"{who} is held: the disk refused its log ({error}); "
            f"nothing is lost, it goes on once there is room")


def notice(host: str, event: dict[str, Any], change: str, agent: str | None) -> dict[str, Any]:
    """The notification as JSON: what the webhook receives and the command reads on stdin."""
    session = str(event.get("session", ""))
    activity = event.get("activity")
    if activity is None:
        activity = "ended" if change == "ended" else change
    return {"host": host, "session": session, "reason": change, "activity": activity,
            "attention": event.get("attention"), "message": line(host, session, change, event),
            "agent": agent, "time": event.get("time")}


@attrs.define
class Debouncer:
    """Per session: the change waiting to settle, and the last one sent."""

    settle: float = SETTLE
    pending: dict[str, tuple[float, tuple[str, Any], dict[str, Any]]] = attrs.Factory(dict)
    sent: dict[str, tuple[str, Any]] = attrs.Factory(dict)

    def activity(self, session: str, key: tuple[str, Any] | None, item: dict[str, Any] | None,
                 now: float, settle: float | None = None) -> None:
        """A new activity: it replaces whatever was waiting.  ``key`` (change, attention)
        and ``item`` are None for an activity nobody is told of; ``settle`` replaces the
        usual settle time for this one."""
        self.pending.pop(session, None)
        if key is None or item is None:
            self.sent.pop(session, None)  # back to work: the next change is news again
        elif self.sent.get(session) != key:
            wait = self.settle if settle is None else max(self.settle, settle)
            self.pending[session] = (now + wait, key, item)

    def final(self, session: str) -> None:
        """The session ended: what waited is outdated (the end is told at once)."""
        self.pending.pop(session, None)
        self.sent.pop(session, None)

    def next_due(self) -> float | None:
        return min((due for due, _, _ in self.pending.values()), default=None)

    def due(self, now: float) -> list[dict[str, Any]]:
        """The changes that have lasted, each marked as sent."""
        ready = [s for s, (due, _, _) in self.pending.items() if due <= now]
        out = []
        for session in ready:
            _, key, item = self.pending.pop(session)
            self.sent[session] = key
            out.append(item)
        return out


@attrs.define
class QuietTurns:
    """Per session known only by quiet time: whether its pause is a finished turn.

    Quiet time sees pauses, not turns: an agent that prints a line every few seconds is
    "idle" 2 s after each line, and telling the user "finished its turn" each time is
    noise.  So a quiet-time idle counts as a finished turn only once the session has been
    working for at least ``length`` seconds since its last long pause (short pauses do not
    start the count again), and it is notified only once the pause itself has lasted
    ``length`` seconds (the debounce's settle time for it).  Times are any one clock.
    """

    busy_since: dict[str, float] = attrs.Factory(dict)
    quiet_since: dict[str, float] = attrs.Factory(dict)

    def see(self, session: str, activity: str | None, source: str | None, now: float,
            length: float) -> None:
        """An activity event of ``session``."""
        if activity == "working":
            quiet = self.quiet_since.pop(session, None)
            if session not in self.busy_since or (quiet is not None and now - quiet >= length):
                self.busy_since[session] = now  # a new stretch of work
        elif activity == "idle" and source == QUIET_SOURCE:
            self.quiet_since[session] = now
        else:  # asked something, ended, or told by an exact source: counting starts again
            self.forget(session)

    def turn_ended(self, session: str, now: float, length: float) -> bool:
        """Whether the quiet-time idle just seen follows ``length`` seconds of work."""
        since = self.busy_since.get(session)
        return since is not None and now - since >= length

    def forget(self, session: str) -> None:
        self.busy_since.pop(session, None)
        self.quiet_since.pop(session, None)
