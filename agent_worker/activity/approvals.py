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

Other agents (Codex CLI, aider, Gemini CLI) have no such hook: only keystrokes answer
their prompt, so approve / deny press :data:`KEYSTROKES` for the kind, and only when the
prompt is exactly the one the person was shown (:meth:`Approvals.press`): a screen rule
(``rules.json``) finds an approval prompt on the screen *at the moment of pressing*, its
attention and the activity's start are what ``ls`` showed the caller (``seen`` in the
answer), and the whole screen has not changed since the caller read ``ls`` (a new request
with the same question, drawn before the activity could change, differs there). Anything
else is refused and nothing is pressed; a prompt is answered once.

Sans-I/O: the monitor does the sockets, the screen, the waiting and the pressing.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import attrs

from agent_worker import json_input

# Seconds a PermissionRequest hook waits for an answer from outside: SUPERV_APPROVAL_WAIT
# (600 by default), at most MAX_WAIT, which the hook client's own timeout covers.
MAX_WAIT = 3600.0
HELD = b'{"ok": true, "held": true}'  # the hook client knows this line (it imports nothing)
ANSWER_PREFIX = b'{"answer": '
ANSWERS = ("allow", "deny")
DENY_MESSAGE = "The user denied this tool call (superv deny)."

# What approve / deny press, per agent kind whose prompt only keystrokes answer; each from
# the prompt the CLI draws (the screens in tests/test_activity.py cite their sources):
# aider's confirm_ask reads a line ("(Y)es/(N)o [Yes]: "); Codex's "1. Yes, proceed (y)" /
# "3. No, and tell Codex what to do differently (esc)"; Gemini CLI's "1. Allow once" (a
# number picks its line) / "No, suggest changes (esc)".
KEYSTROKES: dict[str, dict[str, bytes]] = {
    "aider": {"allow": b"y\r", "deny": b"n\r"},
    "codex": {"allow": b"y", "deny": b"\x1b"},
    "gemini": {"allow": b"1", "deny": b"\x1b"},
}
SINCE_SLACK = 1e-3  # seconds: the activity's start as ls printed it, after a JSON round trip


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


def answer_call(session: str, behavior: str, expect: str | None,
                seen: dict[str, Any] | None = None) -> bytes:
    """What ``superv approve`` / ``deny`` sends to the hook socket.  ``seen``: the session's
    ``activity_since`` and ``attention`` as ``ls`` showed them, and ``at`` when (what a
    keystroke answer must still find, on a screen unchanged since)."""
    return ANSWER_PREFIX + json.dumps(behavior).encode() + b", " + json.dumps(
        {"session": session, "expect": expect, "seen": seen})[1:].encode()


def is_answer(raw: bytes) -> bool:
    return raw.startswith(ANSWER_PREFIX)


def parse_answer(raw: bytes, session: str) -> tuple[str, str | None, dict[str, Any] | None]:
    """(behavior, expect, seen) of an answer call; AnswerError if it is malformed."""
    try:
        call = json_input.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise AnswerError("the answer is not JSON") from None
    if not isinstance(call, dict) or call.get("answer") not in ANSWERS:
        raise AnswerError('the answer is not {"answer": "allow"|"deny", ...}')
    if call.get("session") != session:
        raise AnswerError(f"an answer for session {call.get('session')!r} reached {session!r}")
    expect = call.get("expect")
    if expect is not None and not isinstance(expect, str):
        raise AnswerError("the answer's expect is not a string")
    seen = call.get("seen")
    if seen is not None and not (
            isinstance(seen, dict)
            and all(isinstance(seen.get(k), int | float) and not isinstance(seen.get(k), bool)
                    for k in ("since", "at"))
            and isinstance(seen.get("attention"), str | None)):
        raise AnswerError('the answer\'s seen is not {"since": T, "attention": TEXT, "at": T}')
    return call["answer"], expect, seen


@attrs.define
class ScreenPrompt:
    """An approval prompt a screen rule found: its attention, the screen as last checked,
    and when that screen last changed while this question was up."""

    attention: str | None
    screen: str
    changed_at: float
    answered: bool = False


@attrs.define
class Approvals:
    """The session's pending requests, oldest first."""

    pending: list[Pending] = attrs.Factory(list)
    prompt: ScreenPrompt | None = None  # the keystroke kinds' prompt on screen, if any

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

    # ---- keystroke answers ---------------------------------------------------------------

    def screen_seen(self, found: tuple[str, str | None] | None, screen: str, now: float) -> None:
        """A screen check at ``now``: what the rules found on ``screen`` (None: nothing)."""
        if found is None or found[0] != "needs_approval":
            self.prompt = None
        elif self.prompt is None or self.prompt.attention != found[1]:
            self.prompt = ScreenPrompt(found[1], screen, now)
        elif self.prompt.screen != screen:  # still drawing, or another request: note when
            self.prompt.screen, self.prompt.changed_at = screen, now

    def press(self, session: str, kind: str, behavior: str, expect: str | None,
              seen: dict[str, Any] | None, activity: tuple[str, float, str | None],
              found: tuple[str, str | None] | None, screen: str) -> bytes:
        """The keys that answer the prompt on the screen now, or AnswerError (press nothing).

        ``activity`` is the session's (state, since, attention); ``found`` what the screen
        rules find on ``screen``, the screen as it is at this moment."""
        keys = KEYSTROKES.get(kind)
        if keys is None:
            raise AnswerError(f"{session} takes no answers from outside ({kind} sessions: "
                              f"answer in the session, superv attach {session})")
        state, since, attention = activity
        if found is None or found[0] != "needs_approval" or self.prompt is None:
            raise AnswerError(f"{session} has no approval prompt on its screen: nothing pressed")
        shown = found[1]
        if expect is not None and shown != expect:
            raise AnswerError(f"{session}'s prompt on the screen is for {shown!r}, not "
                              f"{expect!r}: nothing pressed")
        if seen is None:
            raise AnswerError(f"{session}: a keystroke answer needs the prompt you saw "
                              "(superv approve sends what ls shows): nothing pressed")
        if state != "needs_approval" or abs(float(seen["since"]) - since) > SINCE_SLACK \
                or seen.get("attention") != attention or attention != shown:
            raise AnswerError(f"{session}'s prompt is not the one ls showed (it changed "
                              f"meanwhile): nothing pressed; look again (superv peek {session})")
        if self.prompt.attention != shown or self.prompt.screen != screen \
                or self.prompt.changed_at > float(seen["at"]):
            raise AnswerError(f"{session}'s screen changed since you looked: nothing "
                              f"pressed; look again (superv peek {session})")
        if self.prompt.answered:
            raise AnswerError(f"{session}'s prompt was already answered: nothing pressed")
        self.prompt.answered = True
        return keys[behavior]
