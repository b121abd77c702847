"""A session's activity and conversation as ``ls --json`` and ``export`` show them."""

from __future__ import annotations

from typing import Any

from agent_worker.snapshot import Snapshot


def activity_fields(kind: str | None, snap: Snapshot | None, running: bool, ended_at: float | None
                    ) -> dict[str, Any]:
    """``agent``, ``activity``, ``activity_since``, ``activity_source``, ``attention``,
    ``conversation_id``, ``transcript`` from the session's last snapshot.

    A session that is not running has ended, whatever its worker last wrote (a SIGKILLed
    worker's snapshot may still say ``working``); without a snapshot nothing is known.
    """
    if snap is None:
        return {"agent": kind, "activity": "ended" if not running else "unknown",
                "activity_since": ended_at, "activity_source": None, "attention": None,
                "conversation_id": None, "transcript": None}
    fields = {"agent": kind or snap.agent, "activity": snap.activity, "activity_since": snap.activity_since,
              "activity_source": snap.activity_source, "attention": snap.attention,
              "conversation_id": snap.conversation_id, "transcript": snap.transcript}
    if not running and snap.activity != "ended":
        fields.update(activity="ended", activity_since=ended_at or snap.ended_at,
                      activity_source="process", attention=None)
    return fields
