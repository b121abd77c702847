"""Approvals answered from outside the session: ``superv approve NAME`` / ``superv deny NAME``.

Claude Code runs its PermissionRequest hooks while its own approval prompt is on the
screen, and takes the first answer it gets: a key pressed in the prompt, or a decision our
hook prints.  So the hook client holds its call open, and the worker keeps it here as a
*pending request* until one of:

- ``superv approve`` / ``superv deny`` answers it: the worker sends the hook's decision
  output (:func:`decision_output`) down the held call, the client prints it for Claude Code;
- SUPERV_APPROVAL_WAIT seconds pass: the worker closes the call with no decision, so the
  hook ends and the prompt simply stays for the person (a hook never holds the agent forever);
- the call goes away (Claude Code stopped waiting for the hook: the prompt was answered
  on the screen), or the turn moved on: the request is no longer pending, and answering
  it is refused.

The wire, on the session's hook socket (0600, peer uid checked), one JSON object per
connection, sent and then the sender's side closed:

- the hook client's PermissionRequest call gets :data:`HELD` at once, then one line later
  (the decision output) or none;
- an answer is ``{"answer": "allow"|"deny", "session": NAME, "expect": TOOL-LINE|null}``;
  its reply ``{"ok": true, "tool": TOOL-LINE}`` or ``{"ok": false, "error": SENTENCE}``.
  With ``expect``, the request is answered only if it is for exactly that tool line (what
  the person was shown), so a request that replaced it in between is never answered blind.

Sans-I/O: the monitor does the sockets and the waiting.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import attrs

# Seconds a PermissionRequest hook waits for an answer from outside: SUPERV_APPROVAL_WAIT
# (600 by default), at most MAX_WAIT, which the hook client's own timeout covers.
MAX_WAIT = 3600.0
HELD = b'{"ok": true, "held": true}'  # the hook client knows this line (it imports nothing)
ANSWER_PREFIX = b'{"answer": '
ANSWERS = ("allow", "deny")
DENY_MESSAGE = "The user denied this tool call (superv deny)."


class AnswerError(ValueError):
    """An answer that is refused; the message is the sentence for the person."""


@attrs.define
class Pending:
    """One PermissionRequest held open: the tool it asks for, and how to deliver its answer."""

    tool: str
    deliver: Callable[[bytes], bool]  # sends the decision; False if the hook is gone
    gone: Callable[[], bool]  # True once the hook's call has been closed
    drop: Callable[[], None]  # ends the call without a decision (the hook exits, prints nothing)


def decision_output(behavior: str) -> bytes:
    """The JSON a PermissionRequest hook prints on stdout to decide it."""
    decision: dict[str, Any] = {"behavior": behavior}
    if behavior == "deny":
        decision["message"] = DENY_MESSAGE  # Claude goes on, told why (no interrupt)
    return json.dumps({"hookSpecificOutput": {"hookEventName": "PermissionRequest",
                                              "decision": decision}}).encode()


def answer_call(session: str, behavior: str, expect: str | None) -> bytes:
    """What ``superv approve`` / ``deny`` sends to the hook socket."""
    return ANSWER_PREFIX + json.dumps(behavior).encode() + b", " + json.dumps(
        {"session": session, "expect": expect})[1:].encode()


def is_answer(raw: bytes) -> bool:
    return raw.startswith(ANSWER_PREFIX)


def parse_answer(raw: bytes, session: str) -> tuple[str, str | None]:
    """(behavior, expect) of an answer call; AnswerError if it is malformed."""
    try:
        call = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise AnswerError("the answer is not JSON") from None
    if not isinstance(call, dict) or call.get("answer") not in ANSWERS:
        raise AnswerError('the answer is not {"answer": "allow"|"deny", ...}')
    if call.get("session") != session:
        raise AnswerError(f"an answer for session {call.get('session')!r} reached {session!r}")
    expect = call.get("expect")
    if expect is not None and not isinstance(expect, str):
        raise AnswerError("the answer's expect is not a string")
    return call["answer"], expect


@attrs.define
class Approvals:
    """The session's pending requests, oldest first."""

    pending: list[Pending] = attrs.Factory(list)

    def hold(self, request: Pending) -> None:
        self.pending.append(request)

    def release(self, request: Pending) -> None:
        if request in self.pending:
            self.pending.remove(request)

    def moved_on(self) -> None:
        """The turn went on (a prompt, a stop, an end): nothing asked before is pending, and
        a hook Claude Code left running is let go at once rather than when the wait runs out."""
        for request in self.pending:
            request.drop()
        self.pending.clear()

    def answer(self, session: str, behavior: str, expect: str | None, asking: bool) -> str:
        """Answer the one pending request; the tool line answered, or AnswerError.
        ``asking``: the session's activity is ``needs_approval`` (a prompt on the screen)."""
        self.pending = [r for r in self.pending if not r.gone()]
        if not self.pending and asking:
            raise AnswerError(f"{session}'s prompt no longer waits for an answer from outside "
                              f"(SUPERV_APPROVAL_WAIT ran out): answer it in the session "
                              f"(superv attach {session})")
        if not self.pending:
            raise AnswerError(f"{session} has no pending approval")
        if len(self.pending) > 1:
            tools = "; ".join(r.tool for r in self.pending)
            raise AnswerError(f"{session} has {len(self.pending)} pending approvals ({tools}): "
                              f"answer them in the session (superv attach {session})")
        request = self.pending[0]
        if expect is not None and request.tool != expect:
            raise AnswerError(f"{session}'s pending approval is for {request.tool!r}, "
                              f"not {expect!r}: nothing answered")
        self.pending.clear()
        if not request.deliver(decision_output(behavior)):
            raise AnswerError(f"{session}'s approval was answered in the session meanwhile")
        return request.tool
