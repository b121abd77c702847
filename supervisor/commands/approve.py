"""``superv approve [HOST:]NAME`` (and ``superv deny``): answer a session's pending approval
without attaching.

Claude Code sessions through the PermissionRequest hook superv installs (see
:mod:`agent_worker.activity.approvals`): the answer goes to exactly the request the hook
is holding, and is refused when there is none.  Codex CLI, aider and Gemini CLI sessions by
keystrokes, which the worker presses only while its screen shows the prompt ``ls`` showed
us (sent as ``seen``).  Other kinds are refused (answer in the session: ``superv attach``).
"""

from __future__ import annotations

import argparse
import socket
import time
from typing import Any

from agent_worker import json_input
from supervisor.errors import CliError
from supervisor.sessions import checked_name, session_directory

ANSWER_TIMEOUT = 5.0
VERBS = {"approve": "allow", "deny": "deny"}


def add_answer_parser(sub: argparse._SubParsersAction, verb: str) -> argparse.ArgumentParser:
    parser = sub.add_parser(verb, help=f"{verb} a session's pending tool approval (Claude Code)")
    parser.add_argument("name", metavar="[[USER@]HOST:]NAME")
    parser.add_argument("--expect", metavar="TOOL",
                        help="answer only if the request is for exactly this tool line, as "
                             "ls shows it (e.g. 'Bash: make test')")
    parser.set_defaults(verb=verb)
    return parser


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    return add_answer_parser(sub, "approve")


def run(args: argparse.Namespace) -> int:
    verb: str = args.verb
    if ":" in args.name:
        from supervisor.remote_run import run_on_host

        extra = ["--expect", args.expect] if args.expect is not None else []
        return run_on_host(args.name, [verb], extra)
    name = checked_name(args.name)
    tool = answer(name, VERBS[verb], args.expect)
    print(f"{'approved' if verb == 'approve' else 'denied'} {name}: {tool}")
    return 0


def answer(name: str, behavior: str, expect: str | None) -> str:
    """Send the answer to ``name``'s worker; the tool line answered, or CliError."""
    from agent_worker.activity.approvals import answer_call
    from agent_worker.activity.hooks import hook_socket

    session_directory(name)  # "no session named ..." first
    path = hook_socket(name)
    seen = what_ls_shows(name) if path.exists() else None
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(ANSWER_TIMEOUT)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise CliError(f"{name} takes no answers from outside (approve and deny answer "
                           f"running Claude Code, Codex, aider and Gemini sessions; others: "
                           f"superv attach {name})") from None
        try:
            sock.sendall(answer_call(name, behavior, expect, seen))
            sock.shutdown(socket.SHUT_WR)
            reply = b""
            while chunk := sock.recv(4096):
                reply += chunk
        except OSError as exc:
            raise CliError(f"cannot reach {name}'s worker: {exc}") from None
    try:
        result = json_input.loads(reply)
    except ValueError:
        raise CliError(f"{name}'s worker gave no answer (is it stuck? superv doctor)") from None
    if not result.get("ok"):
        raise CliError(str(result.get("error") or "refused"))
    return str(result.get("tool"))


def what_ls_shows(name: str) -> dict[str, Any] | None:
    """The session's activity start and attention as ``ls`` shows them now, and when we
    read them: the prompt a keystroke answer may press keys in (None: ls cannot say)."""
    from supervisor import control

    read_at = time.time()
    try:
        sessions = control.request("ls")["sessions"]
    except CliError:
        return None
    row = next((s for s in sessions if s.get("name") == name), None)
    since = row.get("activity_since") if row else None
    if not isinstance(since, int | float):
        return None
    return {"since": since, "attention": row.get("attention") if row else None, "at": read_at}
