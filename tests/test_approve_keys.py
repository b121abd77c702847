"""superv approve / deny by keystrokes, for agents whose prompt only the keyboard answers
(aider here; Codex and Gemini the same way with their keys): a scripted program in the
session's real PTY draws aider's prompt and records every line it reads, so the test sees
exactly which keys arrived, and that none did when the answer was refused."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import SupervEnv, wait_until

from agent_worker.activity import approvals

pytestmark = pytest.mark.timeout(120)

QUESTION = "Run shell command?"
PROMPT = f"{QUESTION} (Y)es/(N)o [Yes]: "

# Draws a request (a command line, then aider's question) each time a file "next-N"
# appears, and writes every line it reads to "got"; "redraw" replaces the command shown
# above the same question, as a new request drawn at once would.  After each answer it
# clears the screen (a prompt still on the screen after its answer is not answered again).
AGENT = textwrap.dedent(f"""\
    import os, sys, time
    here = sys.argv[1]
    def wait(name):
        while not os.path.exists(os.path.join(here, name)):
            time.sleep(0.02)
    def ask(command):
        sys.stdout.write("\\x1b[H\\x1b[2J$ " + command + "\\n" + {PROMPT!r})
        sys.stdout.flush()
    print("working..."); sys.stdout.flush()
    for n, command in enumerate(["make test", "rm -rf build"]):
        wait(f"next-{{n}}")
        ask(command)
        if n == 1:
            wait("redraw")
            ask("rm -rf /home")
        line = sys.stdin.readline()
        with open(os.path.join(here, "got"), "a") as f:
            f.write(repr(line) + "\\n")
        sys.stdout.write("\\x1b[H\\x1b[2Jran it\\n"); sys.stdout.flush()
    print("done"); sys.stdout.flush()
    time.sleep(600)
""")


def ls_row(senv: SupervEnv, name: str) -> dict[str, Any]:
    rows = json.loads(senv.superv("ls", "--json", check=True).stdout)
    return next(r for r in rows if r["name"] == name)


def hook_socket(senv: SupervEnv, name: str) -> str:
    code = f"from agent_worker.activity.monitor import hook_socket; print(hook_socket({name!r}))"
    return subprocess.run([sys.executable, "-c", code], env=senv.env, capture_output=True,
                          text=True, check=True, timeout=30).stdout.strip()


def raw_answer(path: str, call: bytes) -> dict[str, Any]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(10)
        sock.connect(path)
        sock.sendall(call)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    return json.loads(reply)


def test_keys_are_pressed_only_for_the_prompt_on_screen(superv_env: SupervEnv,
                                                         tmp_path: Path) -> None:
    senv = superv_env
    program = tmp_path / "agent.py"
    program.write_text(AGENT)
    got = tmp_path / "got"
    senv.superv("start", "--agent", "aider", "ai", "--", sys.executable, str(program),
                str(tmp_path), check=True)
    wait_until(lambda: "working..." in senv.superv("peek", "ai").stdout, timeout=20)

    # No prompt yet: refused, nothing pressed.
    refused = senv.superv("approve", "ai")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1, refused.stderr
    assert "nothing pressed" in refused.stderr

    (tmp_path / "next-0").touch()
    row = wait_until(lambda: (r := ls_row(senv, "ai"))["activity"] == "needs_approval" and r,
                     timeout=20)
    assert row["attention"] == QUESTION
    # --expect naming another question: refused, nothing pressed.
    other = senv.superv("approve", "--expect", "Add file to the chat?", "ai")
    assert other.returncode == 1 and "not 'Add file to the chat?'" in other.stderr
    approved = senv.superv("approve", "ai")
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout == f"approved ai: {QUESTION}\n"
    assert wait_until(lambda: got.exists() and got.read_text()) == "'y\\n'\n"
    again = senv.superv("approve", "ai")  # answered once: never pressed twice
    assert again.returncode == 1 and "nothing pressed" in again.stderr, again.stderr

    # A second request: what ls showed is read, then the same question is drawn again for
    # another command before the activity could change: the answer is refused.
    wait_until(lambda: "ran it" in senv.superv("peek", "ai").stdout, timeout=20)
    (tmp_path / "next-1").touch()
    wait_until(lambda: "rm -rf build" in senv.superv("peek", "ai").stdout, timeout=20)
    row = wait_until(lambda: (r := ls_row(senv, "ai"))["activity"] == "needs_approval" and r,
                     timeout=20)
    seen = {"since": row["activity_since"], "attention": row["attention"], "at": time.time()}
    time.sleep(0.05)  # the redraw must come after "at" on the worker's clock too
    (tmp_path / "redraw").touch()
    wait_until(lambda: "rm -rf /home" in senv.superv("peek", "ai").stdout, timeout=20)
    path = hook_socket(senv, "ai")
    reply = raw_answer(path, approvals.answer_call("ai", "deny", None, seen))
    assert reply["ok"] is False and "changed since you looked" in reply["error"], reply
    assert reply.get("tool") is None
    assert got.read_text() == "'y\\n'\n"  # nothing more arrived
    # A malformed 'seen' is refused as such.
    bad = raw_answer(path, approvals.answer_call("ai", "deny", None, {"since": "x"}))
    assert bad["ok"] is False and "seen" in bad["error"]

    # Looked at again (a fresh ls): deny presses n.
    denied = senv.superv("deny", "ai")
    assert denied.returncode == 0, denied.stderr
    assert wait_until(lambda: got.read_text().count("\n") == 2 and got.read_text()) == \
        "'y\\n'\n'n\\n'\n"
    wait_until(lambda: "done" in senv.superv("peek", "ai").stdout, timeout=20)


def test_kinds_without_keystrokes_or_hooks_are_refused(superv_env: SupervEnv) -> None:
    senv = superv_env
    senv.superv("start", "--agent", "opencode", "oc", "--", "sleep", "600", check=True)
    refused = senv.superv("approve", "oc")
    assert refused.returncode == 1
    assert refused.stderr == ("superv: oc takes no answers from outside (approve and deny "
                              "answer running Claude Code, Codex, aider and Gemini sessions; "
                              "others: superv attach oc)\n")


def test_press_refuses_each_way_a_prompt_can_differ() -> None:
    a = approvals.Approvals()
    found = ("needs_approval", QUESTION)
    screen = f"$ make test\n{PROMPT}"
    a.screen_seen(found, screen, now=10.0)
    seen = {"since": 10.0, "attention": QUESTION, "at": 11.0}
    up = ("needs_approval", 10.0, QUESTION)

    def press(**kw: Any) -> bytes:
        args: dict[str, Any] = {"kind": "aider", "behavior": "allow", "expect": None,
                                "seen": seen, "activity": up, "found": found, "screen": screen}
        args.update(kw)
        return a.press("s", args.pop("kind"), args.pop("behavior"), args.pop("expect"),
                       args.pop("seen"), args.pop("activity"), args.pop("found"),
                       args.pop("screen"))

    for kw, words in [
        ({"kind": "opencode"}, "takes no answers"),
        ({"found": None}, "no approval prompt on its screen"),
        ({"expect": "Other?"}, "not 'Other?'"),
        ({"seen": None}, "needs the prompt you saw"),
        ({"seen": {**seen, "since": 5.0}}, "not the one ls showed"),
        ({"activity": ("working", 10.0, None)}, "not the one ls showed"),
        ({"screen": "$ rm -rf /\n" + PROMPT}, "changed since you looked"),
        ({"seen": {**seen, "at": 9.0}}, "changed since you looked"),
    ]:
        with pytest.raises(approvals.AnswerError, match=re.escape(words)):
            press(**kw)
    assert press(behavior="deny") == b"n\r"
    with pytest.raises(approvals.AnswerError, match="already answered"):
        press()
    a.screen_seen(None, "", now=12.0)
    a.screen_seen(found, screen, now=13.0)
    assert press(kind="codex", seen={**seen, "at": 14.0}) == b"y"
