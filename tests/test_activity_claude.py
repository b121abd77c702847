"""Activity, conversation and a clean environment, proven on the real Claude Code CLI.

Claude Code runs offline against tests/fake_anthropic.py (see tests/claude_helpers.py);
``scripts/test`` installs it.  What a person would see is checked through ``superv peek``.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from claude_helpers import ClaudeSetup, claude_fixture  # noqa: F401  (the fixture)
from conftest import wait_until
from fake_anthropic import Text, ToolUse

from agent_worker.activity.monitor import hook_socket

pytestmark = pytest.mark.timeout(180)

MARKERS = {"CLAUDECODE": "1", "CLAUDE_CODE_CHILD_SESSION": "1", "CLAUDE_CODE_ENTRYPOINT": "cli",
           "CLAUDE_CODE_SESSION_ID": "00000000-0000-0000-0000-000000000000", "AI_AGENT": "x"}


def environ_of(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return {k.decode(): v.decode() for k, _, v in
            (item.partition(b"=") for item in raw.split(b"\0") if item)}


def test_started_from_inside_an_agent_it_still_saves_its_transcript(claude: ClaudeSetup) -> None:
    """`superv start` run from Claude Code's Bash tool: its markers must not reach the new one.

    With CLAUDE_CODE_CHILD_SESSION=1 inherited, Claude Code silently saves no transcript
    and can never be resumed.
    """
    claude.api.on("hello", Text("Hello back."))
    claude.start("inner", env={**claude.env, **MARKERS})
    session = claude.wait_activity("inner", "idle")
    agent_env = environ_of(session["agent_pid"])
    claude.superv("send", "--enter", "inner", "hello there")
    claude.wait_screen("inner", "Hello back.")
    session = claude.wait_activity("inner", "idle")
    assert session["agent"] == "claude"
    assert session["conversation_id"], session
    transcript = Path(session["transcript"])
    assert transcript.name == f"{session['conversation_id']}.jsonl"
    wait_until(lambda: transcript.exists() and b"hello there" in transcript.read_bytes(),
               message="the transcript to hold the prompt")
    assert not set(MARKERS) & set(agent_env), "session markers leaked into the agent"
    assert agent_env["ANTHROPIC_BASE_URL"] == claude.api.url  # user settings stay


def test_every_transition_of_a_claude_session(claude: ClaudeSetup, tmp_path: Path) -> None:
    """starting -> idle -> working -> idle -> needs_approval -> working -> idle -> ended,
    with the user's own --settings hooks still firing beside ours."""
    claude.api.on("slowly", Text("one two three four five six seven eight", delay=0.4))
    claude.api.on("make", ToolUse("Bash", {"command": "touch made-by-tool",
                                           "description": "make a file"}, Text("Made it.")))
    user_hook_log = tmp_path / "user-hook.log"
    user_settings = {"hooks": {"UserPromptSubmit": [{"hooks": [
        {"type": "command", "command": f"cat >> {user_hook_log}"}]}]}}
    events = subprocess.Popen([sys.executable, "-m", "supervisor", "events", "--json"],
                              env=claude.env, stdout=subprocess.PIPE, text=True)
    try:
        claude.start("t", "--settings", json.dumps(user_settings))
        first = claude.session("t")
        assert first["activity"] in ("starting", "working", "idle"), first
        claude.wait_activity("t", "idle")

        claude.superv("send", "--enter", "t", "answer slowly please")
        working = claude.wait_activity("t", "working", timeout=10)
        assert working["activity_source"] in ("hook", "terminal")
        claude.wait_screen("t", "eight")
        claude.wait_activity("t", "idle")
        assert b"answer slowly please" in user_hook_log.read_bytes(), "the user's hook did not fire"

        claude.superv("send", "--enter", "t", "make the file")
        asking = claude.wait_activity("t", "needs_approval")
        assert asking["attention"] == "Bash: touch made-by-tool"
        assert "Do you want to proceed?" in claude.screen("t")
        claude.superv("send", "t", "1")  # "1. Yes"
        claude.wait_screen("t", "Made it.")
        done = claude.wait_activity("t", "idle")
        assert (claude.project / "made-by-tool").exists()
        assert done["attention"] is None

        claude.superv("send", "--enter", "t", "/exit")
        ended = claude.wait_activity("t", "ended")
        assert ended["activity_source"] in ("hook", "process")
    finally:
        events.terminate()
        out, _ = events.communicate(timeout=10)
    seen = [json.loads(line) for line in out.splitlines()]
    changes = [(e["previous"], e["activity"]) for e in seen
               if e["event"] == "activity" and e["session"] == "t"]
    states = [after for _, after in changes]
    for wanted in ("idle", "working", "needs_approval", "ended"):
        assert wanted in states, changes
    approval = next(e for e in seen if e["event"] == "activity" and e["activity"] == "needs_approval")
    assert set(approval) >= {"event", "session", "activity", "previous", "source", "attention", "time"}
    assert states.index("needs_approval") < len(states) - 1 and states[-1] == "ended"


def hook_call(path: Path, data: bytes) -> dict[str, object]:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        try:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
        except BrokenPipeError:
            pass  # refused before it was all sent (too big): the reply says why
        reply = b""
        while chunk := sock.recv(4096):
            reply += chunk
    return json.loads(reply)


def test_hostile_hook_calls_are_refused_and_change_nothing(claude: ClaudeSetup) -> None:
    claude.start("h")
    claude.wait_activity("h", "idle")
    before = wait_until(lambda: (s := claude.session("h"))["conversation_id"] and s,
                        message="SessionStart to record the conversation")
    path = hook_socket_of(claude, "h")
    fake_start = {"hook_event_name": "UserPromptSubmit", "session_id": before["conversation_id"]}
    cases = {
        b"this is not json\n": "not JSON",
        b'{"session": "h", "payload": "a string"}\n': "not a JSON object",
        json.dumps({"session": "other", "payload": fake_start}).encode() + b"\n": "for session",
        json.dumps({"session": "h", "payload": {**fake_start, "session_id": "someone-else"}}
                   ).encode() + b"\n": "for conversation",
        b'{"session": "h", "payload": {"x": "' + b"a" * (2 << 20) + b'"}}\n': "limit",
        b"[" * 200_000 + b"]" * 200_000: "not JSON",  # deeper than json parses
    }
    for data, error in cases.items():
        reply = hook_call(path, data)
        assert reply.get("ok") is False and error in str(reply.get("error")), (data[:60], reply)
    after = claude.session("h")
    keys = ("activity", "activity_since", "activity_source", "conversation_id", "transcript")
    assert {k: after[k] for k in keys} == {k: before[k] for k in keys}
    # And the session still works.
    claude.superv("send", "--enter", "h", "still there?")
    claude.wait_screen("h", "ok")


def hook_socket_of(claude: ClaudeSetup, name: str) -> Path:
    import os

    old = os.environ.get("SUPERV_RUNTIME_DIR"), os.environ.get("SUPERV_HOME")
    os.environ["SUPERV_RUNTIME_DIR"] = str(claude.senv.run)
    os.environ["SUPERV_HOME"] = str(claude.senv.home)
    try:
        return hook_socket(name)
    finally:
        for key, value in zip(("SUPERV_RUNTIME_DIR", "SUPERV_HOME"), old, strict=True):
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def test_resume_after_a_reboot_continues_the_conversation(claude: ClaudeSetup) -> None:
    """SIGKILL of every process, then: `superv resume` and a `--restart always` session both
    run `claude --resume ID`, and the fake API's next request carries the earlier messages."""
    from test_reboot import reboot

    claude.api.on("banana", Text("Noted: banana."))
    claude.start("r", "--model", "sonnet")
    claude.superv("start", "--restart", "always", "--cwd", str(claude.project), "k", "--",
                  claude.binary)
    for name in ("r", "k"):
        claude.wait_activity(name, "idle")
        claude.superv("send", "--enter", name, f"remember banana for {name}")
    before = {}
    for name in ("r", "k"):
        claude.wait_screen(name, "Noted: banana.")
        before[name] = wait_until(
            lambda n=name: (s := claude.session(n))["activity"] == "idle" and s["transcript"]
            and f"banana for {n}".encode() in Path(s["transcript"]).read_bytes() and s,
            message=f"{name}'s transcript to hold the prompt")

    reboot(claude.senv)

    resumed = claude.superv("resume", "r")  # starts the supervisor again, too
    assert f"continuing conversation {before['r']['conversation_id']}" in resumed.stdout
    claude.api.on("what did", Text("You said banana."))
    for name in ("r", "k"):
        wait_until(lambda n=name: claude.session(n)["state"] == "running", timeout=30,
                   message=f"{name} running again")
        claude.wait_activity(name, "idle")
        claude.superv("send", "--enter", name, f"what did I say, {name}?")
        request = claude.api.wait_for_request(
            lambda r, n=name: r.get("tools") and f"what did I say, {n}?" in json.dumps(r["messages"]))
        assert f"remember banana for {name}" in json.dumps(request["messages"]), (
            f"{name} did not continue its conversation")
        claude.wait_screen(name, "You said banana.")
    log = (claude.senv.session_dir("k") / "output.log").read_bytes()
    assert f"continuing conversation {before['k']['conversation_id']}".encode() in log
    spec = json.loads((claude.senv.session_dir("r") / "spec.json").read_text())
    assert spec["resumed_argv"][-4:] == ["--resume", before["r"]["conversation_id"], "--model", "sonnet"]


def test_resume_without_a_transcript_starts_afresh_and_says_why(claude: ClaudeSetup) -> None:
    claude.start("f")
    session = wait_until(lambda: (s := claude.session("f"))["transcript"] and s,
                         message="a recorded conversation")
    claude.superv("send", "--enter", "f", "/exit")
    claude.wait_activity("f", "ended")
    wait_until(lambda: claude.session("f")["state"] != "running", message="f to end")
    exported = json.loads(claude.superv("export", "--format", "jsonl", "f").stdout.splitlines()[0])
    assert (exported["agent"], exported["conversation_id"], exported["transcript"]) == (
        "claude", session["conversation_id"], session["transcript"])
    Path(session["transcript"]).unlink(missing_ok=True)  # never written, or removed
    resumed = claude.superv("resume", "f")
    assert "starting afresh" in resumed.stdout and "transcript" in resumed.stdout, resumed.stdout
    spec = json.loads((claude.senv.session_dir("f") / "spec.json").read_text())
    assert "--resume" not in (spec.get("resumed_argv") or spec["argv"])


def test_an_interrupt_the_hooks_miss_is_seen_in_the_title(claude: ClaudeSetup) -> None:
    """Esc during an answer fires no Stop hook; Claude's title goes back to its idle mark."""
    claude.api.on("long", Text(" ".join(f"word{i}" for i in range(60)), delay=0.5))
    claude.start("esc")
    claude.wait_activity("esc", "idle")
    claude.superv("send", "--enter", "esc", "a long answer please")
    claude.wait_screen("esc", "word1")
    working = claude.session("esc")
    assert working["activity"] == "working"
    claude.superv("send", "esc", "\x1b")  # Esc: interrupt
    idle = claude.wait_activity("esc", "idle", timeout=15)
    assert idle["activity_source"] == "terminal", idle


def test_a_question_from_the_agent_is_needs_input(claude: ClaudeSetup) -> None:
    claude.api.on("choose", ToolUse("AskUserQuestion", {"questions": [{
        "question": "Which colour should the button be?", "header": "Colour", "multiSelect": False,
        "options": [{"label": "Red", "description": "warm"},
                    {"label": "Blue", "description": "cool"}]}]}, Text("Blue it is.")))
    claude.start("q")
    claude.wait_activity("q", "idle")
    claude.superv("send", "--enter", "q", "choose a colour")
    asking = claude.wait_activity("q", "needs_input")
    assert asking["attention"] == "Which colour should the button be?"
    claude.wait_screen("q", "Which colour should the button be?")
    time.sleep(1.5)  # long enough for any later title change to have been read
    assert claude.session("q")["activity"] == "needs_input", "the question was lost"


def test_clear_starts_another_conversation_and_the_session_goes_on(claude: ClaudeSetup) -> None:
    claude.start("c")
    claude.wait_activity("c", "idle")
    claude.superv("send", "--enter", "c", "first conversation")
    claude.wait_screen("c", "ok")
    first = wait_until(lambda: (s := claude.session("c"))["activity"] == "idle"
                       and s["conversation_id"] and s)
    claude.superv("send", "--enter", "c", "/clear")
    second = wait_until(lambda: (s := claude.session("c"))["conversation_id"] != first["conversation_id"]
                        and s, message="the new conversation after /clear")
    assert second["activity"] != "ended" and second["state"] == "running"
    assert second["transcript"] != first["transcript"]
    claude.superv("send", "--enter", "c", "second conversation")
    request = claude.api.wait_for_request(
        lambda r: r.get("tools") and "second conversation" in json.dumps(r["messages"]))
    assert "first conversation" not in json.dumps(request["messages"])
    claude.wait_activity("c", "idle")
