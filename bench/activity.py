"""Activity: how fast ``ls --json`` reports what the agent shows, and what hooks cost.

``python -m bench --only activity`` (superv only; it needs the Claude Code CLI that
``scripts/test`` installs into ``.tools/`` and the fake Messages API of the tests).

- **With hooks** (real Claude Code, offline): each cycle asks for a Bash command that needs
  approval, then approves it.  Two transitions per cycle: ``needs_approval`` and ``idle``.
  Timed until the supervisor's ``ls`` answer reports it (polled in-process every 5 ms, the
  way ``superv ls --json`` asks, without the CLI's start), from two moments: the fake API
  finishing the answer that causes the state, and the screen showing it (the session's
  log receiving the approval prompt's "proceed?" or the answer's "Made":
  every byte reaches the log before any client sees it; the log is polled every 2 ms).
- **Without hooks** (a scripted program, ``--agent aider``): it prints aider's approval
  prompt (a screen rule) or a question with a BEL (a terminal signal) when told to; timed
  from the input being sent until ``ls`` reports ``needs_approval`` / ``needs_input``.
- **Cost per hook event**: wall time of the hook program (``python -I -S hook_client.py``)
  delivering one PreToolUse event to a live session, and with no receiver at all.
- **Tool-call latency**: Claude Code running an auto-allowed Bash command, from the fake
  API's ``tool_use`` answer to Claude's next request (the tool result), with our hooks
  (on an auto-allowed tool none of them runs: see agent_worker/activity/hooks.EVENTS) and
  without (``--agent generic``: no hooks).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.harness import REPO, Config, Result, tagged_env

sys.path.insert(0, str(REPO / "tests"))  # the fake API lives with the tests that use it
from fake_anthropic import FakeAnthropic, Text, ToolUse

CLAUDE = REPO / ".tools/node_modules/.bin/claude"
API_KEY = "sk-ant-test-0000000000000000"
PROGRAM = r"""
while read -r what; do
  case "$what" in
    ask) printf '\033[2J\033[HApply these changes? (Y)es/(N)o ' ;;
    bell) printf '\033[2J\033[HContinue? \a' ;;
  esac
done
"""


class Bench:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.project = root / "project"
        self.project.mkdir(parents=True)
        home = root / "claude-home"
        home.mkdir()
        (home / ".claude.json").write_text(json.dumps({
            "hasCompletedOnboarding": True,
            "customApiKeyResponses": {"approved": [API_KEY[-20:]], "rejected": []},
            "projects": {str(self.project): {"hasTrustDialogAccepted": True}}}))
        self.api = FakeAnthropic()
        self.api.start()
        self.env = tagged_env("activity", {
            "SUPERV_HOME": str(root / "sv"), "SUPERV_RUNTIME_DIR": str(root / "run"),
            "HOME": str(home), "ANTHROPIC_BASE_URL": self.api.url, "ANTHROPIC_API_KEY": API_KEY,
            "DISABLE_TELEMETRY": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"})
        os.environ["SUPERV_HOME"] = self.env["SUPERV_HOME"]  # for the in-process ls
        os.environ["SUPERV_RUNTIME_DIR"] = self.env["SUPERV_RUNTIME_DIR"]

    def superv(self, *args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "supervisor", *args], env=self.env,
                              capture_output=True, text=True, timeout=60, cwd=self.project,
                              stdin=subprocess.DEVNULL)
        if proc.returncode:
            raise RuntimeError(f"superv {' '.join(args)}: {proc.stderr.strip()}")
        return proc.stdout

    def session(self, name: str) -> dict[str, Any]:
        from supervisor import control

        sessions = control.request("ls")["sessions"]
        return next(s for s in sessions if s["name"] == name)

    def until(self, name: str, activity: str, timeout: float = 60) -> float:
        """Poll ls until ``name`` reports ``activity``; the time it first did."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.session(name)["activity"] == activity:
                return time.time()
            time.sleep(0.005)
        raise RuntimeError(f"{name} never reported {activity} (now {self.session(name)})")

    def stop(self) -> None:
        self.api.stop()


def answered(api: FakeAnthropic, marker: str, after: int) -> dict[str, Any]:
    """The first conversation request after index ``after`` whose last turn holds
    ``marker`` and whose answer is complete."""
    while True:
        for r in api.requests[after:]:
            if r.get("tools") and "_answered_at" in r and marker in json.dumps(r["messages"][-2:]):
                return r
        time.sleep(0.002)


class LogWatch:
    """When each byte of a session's log arrived: a thread polls the file every 2 ms."""

    def __init__(self, path: Path) -> None:
        self.data = bytearray()
        self.arrivals: list[tuple[int, float]] = []  # (log size, when it was first seen)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(path,), daemon=True)
        self._thread.start()

    def _run(self, path: Path) -> None:
        with path.open("rb") as log:
            while not self._stop.is_set():
                chunk = log.read()
                if chunk:
                    self.data += chunk
                    self.arrivals.append((len(self.data), time.time()))
                else:
                    time.sleep(0.002)

    def when(self, marker: bytes, after: int, timeout: float = 60) -> tuple[float, int]:
        """When ``marker`` first reached the log after offset ``after``, and where it ends."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = self.data.find(marker, after)
            if found >= 0:
                end = found + len(marker)
                return next(t for size, t in list(self.arrivals) if size >= end), end
            time.sleep(0.002)
        raise RuntimeError(f"{marker!r} never reached the log")

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def with_hooks(b: Bench, cycles: int) -> tuple[list[float], list[float]]:
    """From the answer's end at the API, and from the screen, to ``ls``."""
    from agent_worker import paths, session_files

    b.api.on("make", ToolUse("Bash", {"command": "touch made", "description": "make"},
                             Text("Made it.")))
    b.superv("start", "--cwd", str(b.project), "hooked", "--", str(CLAUDE))
    b.until("hooked", "idle")
    watch = LogWatch(paths.session_dir("hooked") / session_files.LOG)
    from_api, from_screen = [], []
    try:
        for i in range(cycles):
            mark, offset = len(b.api.requests), len(watch.data)
            b.superv("send", "--enter", "hooked", f"make file {i}")
            request = answered(b.api, f"make file {i}", mark)
            seen = b.until("hooked", "needs_approval")
            # Claude Code places each word with a cursor move: "Do\e[5Gyou\e[9Gwant...".
            shown, offset = watch.when(b"proceed?", offset)
            from_api.append(seen - request["_answered_at"])
            from_screen.append(seen - shown)
            mark = len(b.api.requests)
            b.superv("send", "hooked", "1")
            request = answered(b.api, "tool_result", mark)
            seen = b.until("hooked", "idle")
            shown, _ = watch.when(b"Made", offset)  # "Made it.", placed word by word
            from_api.append(seen - request["_answered_at"])
            from_screen.append(seen - shown)
    finally:
        watch.stop()
    b.superv("stop", "hooked")
    return from_api, from_screen


def without_hooks(b: Bench, cycles: int) -> tuple[list[float], list[float]]:
    b.superv("start", "--agent", "aider", "--cwd", str(b.project), "plain", "--",
             "sh", "-c", PROGRAM)
    screen, bell = [], []
    for _ in range(cycles):
        sent = time.time()
        b.superv("send", "--enter", "plain", "ask")
        screen.append(b.until("plain", "needs_approval") - sent)
        sent = time.time()
        b.superv("send", "--enter", "plain", "bell")
        bell.append(b.until("plain", "needs_input") - sent)
    b.superv("stop", "plain")
    return screen, bell


def hook_cost(b: Bench, rounds: int) -> tuple[list[float], list[float]]:
    from agent_worker.activity.hooks import CLIENT
    from agent_worker.activity.monitor import hook_socket

    b.superv("start", "--cwd", str(b.project), "costly", "--", str(CLAUDE))
    b.until("costly", "idle")
    conversation = b.session("costly")["conversation_id"]
    payload = json.dumps({"hook_event_name": "PreToolUse", "session_id": conversation,
                          "tool_name": "Bash", "tool_input": {"command": "ls"}}).encode()

    def once(sock: Path) -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-I", "-S", str(CLIENT), str(sock), "costly"],
                       input=payload, capture_output=True, check=True)
        return time.perf_counter() - t0

    live = [once(hook_socket("costly")) for _ in range(rounds)]
    absent = [once(b.root / "nobody.hook") for _ in range(rounds)]
    b.superv("stop", "costly")
    return live, absent


def tool_latency(b: Bench, name: str, agent: str, rounds: int) -> list[float]:
    b.api.on("list", ToolUse("Bash", {"command": "echo hi", "description": "say hi"},
                             Text("Listed.")))
    b.superv("start", "--agent", agent, "--cwd", str(b.project), name, "--", str(CLAUDE))
    deadline = time.time() + 60
    while "? for shortcuts" not in b.superv("peek", name) and time.time() < deadline:
        time.sleep(0.1)
    gaps = []
    for i in range(rounds):
        mark = len(b.api.requests)
        b.superv("send", "--enter", name, f"list {i}")
        asked = answered(b.api, f"list {i}", mark)
        result = answered(b.api, "tool_result", mark)
        gaps.append(result["_received_at"] - asked["_answered_at"])
        while "Listed." not in b.superv("peek", name):
            time.sleep(0.05)
    b.superv("stop", name)
    return gaps


def ms(values: list[float]) -> str:
    return f"p50 {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms, n={len(values)}"


def run(cfg: Config, hosts: list[Any]) -> list[Result]:
    if not os.access(CLAUDE, os.X_OK):
        return [Result("activity", "superv", None, "s", ok=False, comparable=False,
                       note=f"Claude Code not installed at {CLAUDE}: run scripts/test")]
    b = Bench(cfg.scratch / "activity")
    cycles = 5 if cfg.quick else 25
    results = []
    try:
        hooked, on_screen = with_hooks(b, cycles)
        results.append(Result("activity shown -> ls, hooks (Claude)", "superv",
                              statistics.median(on_screen), "s",
                              detail=f"from the screen {ms(on_screen)}; from the API's answer "
                                     f"{ms(hooked)}",
                              comparable=False, verified="needs_approval and idle, real Claude Code"))
        screen, bell = without_hooks(b, cycles * 2)
        both = screen + bell
        results.append(Result("activity shown -> ls, no hooks", "superv", statistics.median(both),
                              "s", detail=f"screen rule {ms(screen)}; BEL {ms(bell)}",
                              comparable=False, verified="input sent -> state in ls"))
        live, absent = hook_cost(b, 10 if cfg.quick else 30)
        results.append(Result("hook event cost", "superv", statistics.median(live), "s",
                              detail=f"live receiver {ms(live)}; none {ms(absent)}",
                              comparable=False, verified="exit 0 every time"))
        rounds = 3 if cfg.quick else 10
        plain = tool_latency(b, "nohooks", "generic", rounds)
        hooks = tool_latency(b, "withhooks", "claude", rounds)
        results.append(Result("Claude tool call, with our hooks", "superv", statistics.median(hooks),
                              "s", detail=f"{ms(hooks)}; without hooks {ms(plain)}",
                              comparable=False, verified="tool_use answer -> tool_result request"))
    finally:
        b.stop()
        for key in ("SUPERV_HOME", "SUPERV_RUNTIME_DIR"):
            os.environ.pop(key, None)
    return results
