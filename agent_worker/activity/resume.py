"""What ``superv resume`` (and a restart after a reboot) runs: the agent's own conversation
when one was recorded, else the command as before, with the reason in one line."""

from __future__ import annotations

import shlex
from pathlib import Path

import attrs

from agent_worker import agent_kinds
from agent_worker.snapshot import read_snapshot
from agent_worker.spec import SessionSpec


@attrs.frozen
class ResumePlan:
    argv: list[str]
    continues: str | None = None  # the conversation id it continues
    reason: str | None = None  # why it does not continue one, when it does not


def plan(spec: SessionSpec, directory: Path) -> ResumePlan:
    """``--resume-cmd`` first; then the recorded conversation, if its transcript exists and
    is not empty and the agent can be told to continue it; else the session's command."""
    if spec.resume_cmd:
        return ResumePlan(shlex.split(spec.resume_cmd))
    try:
        snap, _ = read_snapshot(directory)
    except Exception:
        return ResumePlan(list(spec.argv), reason="no conversation recorded (no snapshot)")
    conversation, transcript = snap.conversation_id, snap.transcript
    if not conversation:
        return ResumePlan(list(spec.argv), reason="no conversation recorded")
    resumed = agent_kinds.resume_argv(spec.agent, spec.argv, conversation)
    if resumed is None:
        return ResumePlan(list(spec.argv), reason=f"{spec.agent} sessions cannot be resumed")
    if transcript:
        try:
            size = Path(transcript).stat().st_size
        except OSError:
            return ResumePlan(list(spec.argv),
                              reason=f"conversation {conversation}'s transcript {transcript} is gone")
        if size == 0:
            return ResumePlan(list(spec.argv),
                              reason=f"conversation {conversation}'s transcript is empty")
    return ResumePlan(resumed, continues=conversation)
