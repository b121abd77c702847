"""Hooks: what a hook call from the agent means, and how a launch asks for them.

Claude Code runs the hooks named in ``--settings FILE-OR-JSON`` in its interactive TUI
too.  Per launch, superv writes a settings file into the session directory whose hooks
run :mod:`agent_worker.activity.hook_client` (standard library only, ``python -I -S``),
which hands the event's JSON to the worker's hook socket and exits 0 whatever happens.
A ``--settings`` the user passed is merged into it, so the user's own hooks keep firing.

Sans-I/O apart from reading and writing that settings file.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from agent_worker import json_input
from agent_worker.activity.approvals import MAX_WAIT

MAX_PAYLOAD = 1 << 20  # bytes of one hook call; the client trims tool inputs beyond it
ATTENTION_MAX = 200  # characters of the attention line
SETTINGS_NAME = "hooks.json"
# The events we ask for.  Claude Code waits for a tool's hooks before and after every tool
# call, and each costs it far more than our client does (measured: PreToolUse and
# PostToolUse for every tool made a tool call ~270 ms slower): so PreToolUse only for the
# tool that asks the user a question, and no PostToolUse (the title shows a granted
# approval's tool running).
EVENTS = ("SessionStart", "UserPromptSubmit", "PreToolUse", "PermissionRequest",
          "Notification", "Stop", "StopFailure", "SessionEnd")
_MATCHERS = {"PreToolUse": "AskUserQuestion", "PermissionRequest": "*"}  # tool events
HOOK_TIMEOUT = 5  # seconds Claude Code allows our hook (it never needs more than ~0.1)
# ...except PermissionRequest's, which waits up to SUPERV_APPROVAL_WAIT for superv
# approve/deny; Claude Code ends it after this many seconds whatever the worker does.
PERMISSION_HOOK_TIMEOUT = int(MAX_WAIT) + 30
CLIENT = Path(__file__).with_name("hook_client.py")


def hook_socket(name: str) -> Path:
    """The session's hook socket, beside its session socket (approvals are answered there too)."""
    from agent_worker import paths

    return paths.check_socket_path(paths.session_socket(name).with_suffix(".hook"))


class HookError(ValueError):
    """A hook call that is refused; the message says why (it goes back to the caller)."""


@attrs.frozen
class HookReport:
    """What one hook call says."""

    event: str
    state: str | None = None  # the activity it implies; None: no change
    attention: str | None = None
    conversation_id: str | None = None
    transcript: str | None = None
    ended: bool = False


def short(text: str) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= ATTENTION_MAX else line[: ATTENTION_MAX - 1] + "…"


def tool_line(payload: dict[str, Any]) -> str:
    """``Bash: rm -rf build`` — the tool and what it would do."""
    tool = str(payload.get("tool_name") or "a tool")
    data = payload.get("tool_input")
    what = ""
    if isinstance(data, dict):
        for key in ("command", "file_path", "path", "url", "pattern", "prompt", "description"):
            if isinstance(data.get(key), str) and data[key]:
                what = data[key]
                break
    return short(f"{tool}: {what}" if what else tool)


def _question(payload: dict[str, Any]) -> str:
    data = payload.get("tool_input")
    if isinstance(data, dict):
        questions = data.get("questions")
        if isinstance(questions, list) and questions and isinstance(questions[0], dict):
            return short(str(questions[0].get("question") or "a question"))
    return "a question"


def parse(raw: bytes, session: str, conversation_id: str | None) -> HookReport:
    """Check and interpret one hook call; HookError if it is refused.

    ``raw`` is the client's line, ``{"session": NAME, "payload": <Claude Code's event>}``.
    A call for another superv session is refused, and so is one naming another
    conversation than ``conversation_id`` (the session's recorded one), except
    SessionStart, which is how the agent announces a new one (``/clear``, an in-app resume).
    """
    if len(raw) > MAX_PAYLOAD + 4096:
        raise HookError(f"hook call of {len(raw)} bytes is over the {MAX_PAYLOAD}-byte limit")
    try:
        call = json_input.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise HookError("hook call is not JSON") from None
    if not isinstance(call, dict) or not isinstance(call.get("payload"), dict):
        raise HookError("hook call is not {\"session\": NAME, \"payload\": {...}} "
                        "(the agent's event was not a JSON object)")
    if call.get("session") != session:
        raise HookError(f"hook call for session {call.get('session')!r} reached session {session!r}")
    payload: dict[str, Any] = call["payload"]
    if payload.get("type") == "agent-turn-complete":
        return _codex_turn_complete(payload)
    event = payload.get("hook_event_name")
    if not isinstance(event, str) or not event:
        raise HookError("hook payload has no hook_event_name")
    session_id = payload.get("session_id")
    if session_id is not None and not isinstance(session_id, str):
        raise HookError("hook payload's session_id is not a string")
    transcript = payload.get("transcript_path")
    if transcript is not None and not isinstance(transcript, str):
        raise HookError("hook payload's transcript_path is not a string")
    if event != "SessionStart" and conversation_id and session_id and session_id != conversation_id:
        raise HookError(f"hook call for conversation {session_id}, but this session's is "
                        f"{conversation_id}")
    match event:
        case "SessionStart":
            return HookReport(event, "idle", None, session_id, transcript)
        case "UserPromptSubmit":
            return HookReport(event, "working")
        case "PreToolUse" | "PermissionRequest" if payload.get("tool_name") == "AskUserQuestion":
            return HookReport(event, "needs_input", _question(payload))
        case "PreToolUse" | "PostToolUse":
            return HookReport(event, "working")
        case "PermissionRequest":
            return HookReport(event, "needs_approval", tool_line(payload))
        case "Notification":
            kind = payload.get("notification_type")
            message = short(str(payload.get("message") or ""))
            if kind == "permission_prompt":
                return HookReport(event, "needs_approval", message or None)
            if kind == "elicitation_dialog":
                return HookReport(event, "needs_input", message or None)
            return HookReport(event)  # idle_prompt and the like: nothing new
        case "Stop":
            return HookReport(event, "idle")
        case "StopFailure":
            return HookReport(event, "idle", short(f"turn failed: {payload.get('error') or '?'}"))
        case "SessionEnd":
            # Not the end of the agent: /clear ends one conversation and starts another in
            # the same process (SessionEnd reason "clear", then SessionStart).  The agent's
            # exit, a moment later, is what ends the activity.
            return HookReport(event)
    return HookReport(event)


def _codex_turn_complete(payload: dict[str, Any]) -> HookReport:
    """Codex CLI's ``notify`` program call: a turn finished.  It is Codex's only word on
    its thread (no session-start event), so its ``thread-id`` is taken as the conversation
    whenever it comes (a ``/new`` in Codex starts another thread)."""
    thread = payload.get("thread-id")
    if thread is not None and not isinstance(thread, str):
        raise HookError("codex notify payload's thread-id is not a string")
    return HookReport("agent-turn-complete", "idle", None, thread or None, None)


# ---- per-launch settings ---------------------------------------------------------------


def hook_command(socket_path: Path, session: str) -> str:
    """The command line Claude Code runs for each hook (through ``sh -c``)."""
    # -I: isolated (no user site, no PYTHON* variables); -S: no site import at all.  The
    # words are ours (an interpreter path, our module, a socket path, a validated name),
    # quoted anyway.
    import shlex

    return shlex.join([sys.executable, "-I", "-S", str(CLIENT), str(socket_path), session])


def our_hooks(command: str) -> dict[str, list[dict[str, Any]]]:
    hooks: dict[str, list[dict[str, Any]]] = {}
    for event in EVENTS:
        timeout = PERMISSION_HOOK_TIMEOUT if event == "PermissionRequest" else HOOK_TIMEOUT
        entry: dict[str, Any] = {"hooks": [{"type": "command", "command": command,
                                            "timeout": timeout}]}
        if event in _MATCHERS:
            entry["matcher"] = _MATCHERS[event]
        hooks[event] = [entry]
    return hooks


def _user_settings(value: str, cwd: str) -> dict[str, Any]:
    """The settings the user passed with ``--settings``: a JSON string or a file."""
    text = value
    if not value.lstrip().startswith("{"):
        path = Path(value) if os.path.isabs(value) else Path(cwd) / value
        text = path.read_text()
    data = json_input.loads(text)
    if not isinstance(data, dict):
        raise ValueError("--settings is not a JSON object")
    return data


def merged_settings(user: dict[str, Any], command: str) -> dict[str, Any]:
    """``user``'s settings with our hooks added after theirs, event by event."""
    merged = dict(user)
    hooks = dict(user.get("hooks") or {})
    for event, entries in our_hooks(command).items():
        existing = hooks.get(event)
        hooks[event] = [*(existing if isinstance(existing, list) else []), *entries]
    merged["hooks"] = hooks
    return merged


def with_claude_hooks(argv: list[str], at: int, cwd: str, directory: Path,
                      socket_path: Path, session: str) -> list[str]:
    """``argv`` (Claude Code at ``argv[at]``) with our hooks in its ``--settings``.

    If the user's own ``--settings`` cannot be read, their command runs unchanged: an
    agent without our hooks is better than no agent (the screen and title still tell).
    """
    command = hook_command(socket_path, session)
    head, rest = list(argv[: at + 1]), list(argv[at + 1 :])
    user: dict[str, Any] = {}
    position = None
    for i, word in enumerate(rest):
        if word == "--settings" and i + 1 < len(rest):
            position, value = i, rest[i + 1]
        elif word.startswith("--settings="):
            position, value = i, word.split("=", 1)[1]
        else:
            continue
        try:
            user = _user_settings(value, cwd)
        except (OSError, ValueError):
            return list(argv)
        break
    path = directory / SETTINGS_NAME
    from agent_worker.atomic import write_json_atomic

    write_json_atomic(path, merged_settings(user, command))
    if position is not None:
        width = 1 if rest[position].startswith("--settings=") else 2
        del rest[position : position + width]
    return [*head, "--settings", str(path), *rest]


def _codex_has_notify(rest: list[str], session_env: Mapping[str, str]) -> bool:
    """Whether the user configured their own Codex ``notify`` (``-c notify=...`` or the
    ``config.toml`` in ``$CODEX_HOME``, ``~/.codex`` by default, as Codex will see them:
    the session's ``--env`` over the worker's environment): Codex runs one notify
    program, and theirs must keep working."""
    for i, word in enumerate(rest):
        value = rest[i + 1] if word in ("-c", "--config") and i + 1 < len(rest) else word
        if value.replace(" ", "").startswith("notify="):
            return True
    import tomllib

    env = {**os.environ, **session_env}
    home = Path(env.get("CODEX_HOME") or Path(env.get("HOME") or "~").expanduser() / ".codex")
    try:
        config = tomllib.loads((home / "config.toml").read_text())
    except (OSError, ValueError):
        return False
    return "notify" in config


def with_codex_notify(argv: list[str], at: int, socket_path: Path, session: str,
                      session_env: Mapping[str, str]) -> list[str]:
    """``argv`` (Codex at ``argv[at]``) with our notify program, unless the user has one;
    ``session_env``: the session's own environment (``--env``)."""
    head, rest = list(argv[: at + 1]), list(argv[at + 1 :])
    if _codex_has_notify(rest, session_env):
        return list(argv)
    program = [sys.executable, "-I", "-S", str(CLIENT), str(socket_path), session]
    # A TOML array of basic strings: JSON's string escapes are TOML's.
    return [*head, "-c", "notify=" + json.dumps(program), *rest]
