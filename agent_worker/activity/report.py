"""A session's activity and conversation as ``ls --json`` and ``export`` show them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent_worker.snapshot import Snapshot


def activity_fields(kind: str | None, snap: Snapshot | None, running: bool, ended_at: float | None,
                    live: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """``agent``, ``activity``, ``activity_since``, ``activity_source``, ``attention``,
    ``last_line``, ``conversation_id``, ``transcript`` from the session's last snapshot, and ``live``, the
    last ``activity`` event its running worker sent (the snapshot takes up to a second to
    get it).

    A session that is not running has ended, whatever its worker last wrote (a SIGKILLed
    worker's snapshot may still say ``working``); without a snapshot nothing is known.
    """
    if snap is None:
        fields = {"agent": kind, "activity": "ended" if not running else "unknown",
                  "activity_since": ended_at, "activity_source": None, "attention": None,
                  "last_line": None, "conversation_id": None, "transcript": None}
    else:
        fields = {"agent": kind or snap.agent, "activity": snap.activity,
                  "activity_since": snap.activity_since, "activity_source": snap.activity_source,
                  "attention": snap.attention, "last_line": snap.last_line,
                  "conversation_id": snap.conversation_id,
                  "transcript": snap.transcript}
    since = live.get("since") if live else None
    if running and live and isinstance(since, int | float) and \
            (snap is None or since >= (snap.activity_since or 0)):
        # The newest word wins: a snapshot newer than the event (one the supervisor missed)
        # has a later ``activity_since``.
        fields.update(activity=live.get("activity"), activity_since=since,
                      activity_source=live.get("source"), attention=live.get("attention"))
        if isinstance(live.get("last_line"), str):
            fields["last_line"] = live["last_line"]
    if snap is None:
        return fields
    if not running and snap.activity != "ended":
        fields.update(activity="ended", activity_since=ended_at or snap.ended_at,
                      activity_source="process", attention=None)
    return fields
