"""Activity without Claude Code: the state rules, the signal scanner, agent kinds, and a
generic session's quiet-time and BEL rules with a scripted program under the real superv."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SupervEnv, wait_until

from agent_worker import agent_kinds
from agent_worker.activity import hooks, rules
from agent_worker.activity.terminal import Signal, TerminalScanner
from agent_worker.activity.tracker import Tracker
from agent_worker.spec import agent_environment

# ---- the state rules ----------------------------------------------------------------


def test_a_later_title_overrides_a_hook_that_missed_an_interrupt() -> None:
    t = Tracker()
    t.start(0.0)
    t.report("hook", "working", 1.0)  # UserPromptSubmit
    t.report("terminal", "working", 1.1)  # spinner
    assert t.current.state == "working" and t.current.source == "hook"
    # The user pressed Esc: no Stop hook, but the title goes back to the idle mark.
    change = t.report("terminal", "idle", 5.0)
    assert change is not None and change.previous == "working"
    assert (t.current.state, t.current.source) == ("idle", "terminal")
    # A new prompt: the hook is newer again and wins.
    t.report("hook", "working", 6.0)
    assert (t.current.state, t.current.source) == ("working", "hook")


def test_an_idle_title_during_an_approval_does_not_hide_it() -> None:
    t = Tracker()
    t.start(0.0)
    t.report("terminal", "working", 1.0)
    t.report("hook", "needs_approval", 2.0, "Bash: rm -rf build")
    t.report("terminal", "idle", 2.1)  # Claude shows its idle mark under the prompt
    t.report("screen", "needs_approval", 2.2, "approval prompt on screen")
    assert (t.current.state, t.current.attention) == ("needs_approval", "Bash: rm -rf build")


def test_quiet_time_bell_and_output() -> None:
    t = Tracker(quiet_after=2.0)
    t.start(0.0)
    t.output(1.0)
    assert t.current.state == "working" and t.current.source == "output"
    assert t.tick(2.5) is None
    t.output(2.9)
    assert t.next_tick() == 4.9
    change = t.tick(5.0)
    assert change is not None and t.current.state == "idle"
    assert t.current.since == 5.0
    t.output(6.0)
    t.report("terminal", "needs_input", 6.0, "bell")  # a prompt and a BEL in one burst
    assert t.current.state == "needs_input"
    t.tick(9.0)  # quiet after the bell: still waiting for the user
    assert t.current.state == "needs_input"
    t.output(12.0)  # it printed again: working
    assert t.current.state == "working"


def test_an_echo_answers_a_bell_but_is_not_work() -> None:
    # The user's keys echoed (hot_path.ECHO_WINDOW): typing is not the agent at work, yet
    # a key that answers a bell's question (y, in raw mode) answers it.
    t = Tracker(quiet_after=2.0)
    t.start(0.0)
    t.output(1.0)
    t.tick(3.5)
    assert t.current.state == "idle"
    assert t.echoed(4.0) is None and t.current.state == "idle"  # typing into a quiet agent
    t.output(6.0)
    t.report("terminal", "needs_input", 6.0, "bell")
    assert t.echoed(6.05) is None  # the bell's own burst is still going
    change = t.echoed(7.0)  # the answer's echo
    assert change is not None and change.previous == "needs_input"
    assert t.current.state == "working"  # the output's own opinion: 2 s of quiet not yet over
    t.tick(8.5)
    assert t.current.state == "idle"


def test_ended_is_final() -> None:
    t = Tracker()
    t.start(0.0)
    t.report("hook", "idle", 1.0)
    assert t.ended(2.0, "process") is not None
    assert t.report("hook", "working", 3.0) is None and t.current.state == "ended"


# ---- terminal signals ---------------------------------------------------------------


def test_scanner_finds_titles_notifications_and_real_bells_across_reads() -> None:
    s = TerminalScanner()
    data = (b"text\x1b]0;\xe2\xa0\x82 Claude Code\x07more\x07"
            b"\x1b]9;Build done\x1b\\\x1b]777;notify;Title;Body\x07\x1b]9;4;1;50\x07"
            b"\x1b]99;i=1:d=0;kitty says\x1b\\\x1bPq#0\x07\x1b\\")  # a BEL inside a DCS is no bell
    whole = TerminalScanner().feed(data)
    pieces = [sig for i in range(len(data)) for sig in s.feed(data[i : i + 1])]
    expected = [Signal("title", "\u2802 Claude Code"), Signal("bell"), Signal("notify", "Build done"),
                Signal("notify", "Title: Body"), Signal("progress", "1;50"),
                Signal("notify", "kitty says")]
    assert whole == expected
    assert pieces == expected  # byte by byte: nothing lost at a split, no BEL from an OSC end


def test_scanner_passes_over_plain_output_at_c_speed() -> None:
    """``yes`` through a session: 3 MB of line ends and no sequence.  Tokenizing each
    control made the worker's scan ~2 s of CPU per MB, 4x slower than the PTY delivers."""
    chunk = b"y\r\n" * (64 * 1024 // 3)
    s = TerminalScanner()
    t0 = time.process_time()
    for _ in range(3 * 1024 * 1024 // len(chunk)):
        assert s.feed(chunk) == []
    assert time.process_time() - t0 < 0.5  # CPU time: another process's load does not count
    assert s.feed(b"y\r\n\x07y\r\n\x1b]0;t\x07") == [Signal("bell"), Signal("title", "t")]


# ---- agent kinds, markers, resume ---------------------------------------------------


@pytest.mark.parametrize(("argv", "kind"), [
    (["claude"], "claude"),
    (["/home/u/.tools/node_modules/.bin/claude", "--model", "x"], "claude"),
    (["env", "A=1", "npx", "-y", "@anthropic-ai/claude-code@2.1.197"], "claude"),
    (["npm", "exec", "codex"], "codex"),
    (["uvx", "aider-chat"], "aider"),
    (["gemini"], "gemini"),
    (["opencode"], "opencode"),
    (["sh", "-c", "claude"], "generic"),
])
def test_kind_from_the_command(argv: list[str], kind: str) -> None:
    assert agent_kinds.detect(argv) == kind
    assert agent_kinds.resolve("auto", argv) == kind
    assert agent_kinds.resolve("aider", argv) == "aider"


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="use one of"):
        agent_kinds.resolve("vim", ["vim"])


def test_markers_are_scrubbed_and_user_settings_kept() -> None:
    base = {"CLAUDECODE": "1", "CLAUDE_CODE_CHILD_SESSION": "1", "CLAUDE_CODE_SESSION_ID": "x",
            "CODEX_THREAD_ID": "t", "CODEX_SANDBOX_NETWORK_DISABLED": "1", "AI_AGENT": "a",
            "ANTHROPIC_API_KEY": "k", "ANTHROPIC_BASE_URL": "u", "CLAUDE_CODE_USE_BEDROCK": "1",
            "OPENAI_API_KEY": "o", "PATH": "/bin"}
    env = agent_environment(base, {}, "s")
    assert set(env) == {"ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "CLAUDE_CODE_USE_BEDROCK",
                        "OPENAI_API_KEY", "PATH", "TERM", "SUPERV_SESSION"}


# The resume command of every kind, against each CLI's documented flags (Claude Code's runs
# for real in test_activity_claude.py; the others cannot run offline here):
# - Codex: ``codex resume [SESSION_ID]`` followed by the TUI's own options (openai/codex,
#   codex-rs/cli/src/main.rs: ResumeCommand takes SESSION_ID and flattens TuiCli);
# - Gemini CLI: ``gemini --resume UUID`` (geminicli.com/docs/cli/session-management);
# - opencode: ``opencode --session ID`` (opencode.ai/docs/cli: "-s, --session: session ID
#   to continue"); its ``--continue``/``--fork`` would pick another conversation.
@pytest.mark.parametrize(("kind", "argv", "resumed"), [
    ("claude", ["env", "A=1", "claude", "--resume", "old", "-c", "--model", "opus"],
     ["env", "A=1", "claude", "--resume", "NEW", "--model", "opus"]),
    ("claude", ["claude", "--session-id=abc", "fix the tests"],
     ["claude", "--resume", "NEW", "fix the tests"]),
    ("codex", ["codex", "--full-auto", "-m", "o4", "fix it"],
     ["codex", "resume", "NEW", "--full-auto", "-m", "o4"]),
    ("codex", ["npx", "@openai/codex", "-c", "model=o3"],
     ["npx", "@openai/codex", "resume", "NEW", "-c", "model=o3"]),
    ("gemini", ["gemini", "-m", "gemini-2.5-pro", "--yolo"],
     ["gemini", "--resume", "NEW", "-m", "gemini-2.5-pro", "--yolo"]),
    ("gemini", ["npx", "@google/gemini-cli", "-r", "latest", "--yolo"],
     ["npx", "@google/gemini-cli", "--resume", "NEW", "--yolo"]),
    ("gemini", ["gemini", "--resume"], ["gemini", "--resume", "NEW"]),
    ("opencode", ["opencode", "--model", "anthropic/claude-sonnet-4-5"],
     ["opencode", "--session", "NEW", "--model", "anthropic/claude-sonnet-4-5"]),
    ("opencode", ["opencode", "-c", "--fork", "-s", "ses_old", "/src/app"],
     ["opencode", "--session", "NEW", "/src/app"]),
    ("aider", ["aider", "--model", "sonnet"], None),  # no conversation id: its history file
    ("generic", ["sh"], None),
])
def test_resume_command_of_every_kind(kind: str, argv: list[str], resumed: list[str] | None
                                      ) -> None:
    assert agent_kinds.resume_argv(kind, argv, "NEW") == resumed


# ---- hooks --------------------------------------------------------------------------


def test_user_settings_are_merged_with_ours(tmp_path: Path) -> None:
    user = {"model": "x", "hooks": {"Stop": [{"hooks": [{"type": "command", "command": "mine"}]}]}}
    argv = ["claude", "--settings", json.dumps(user), "--model", "y"]
    out = hooks.with_claude_hooks(argv, 0, str(tmp_path), tmp_path, tmp_path / "h.hook", "s")
    assert out[:2] == ["claude", "--settings"] and out[3:] == ["--model", "y"]
    merged = json.loads(Path(out[2]).read_text())
    assert merged["model"] == "x"
    stop = merged["hooks"]["Stop"]
    assert stop[0]["hooks"][0]["command"] == "mine" and "hook_client.py" in stop[1]["hooks"][0]["command"]
    assert set(merged["hooks"]) >= set(hooks.EVENTS)


def test_hook_meanings() -> None:
    def call(payload: dict[str, object]) -> hooks.HookReport:
        return hooks.parse(json.dumps({"session": "s", "payload": payload}).encode(), "s", "c1")

    start = call({"hook_event_name": "SessionStart", "session_id": "c2", "transcript_path": "/t"})
    assert (start.state, start.conversation_id, start.transcript) == ("idle", "c2", "/t")
    ask = call({"hook_event_name": "PermissionRequest", "session_id": "c1", "tool_name": "Bash",
                "tool_input": {"command": "rm -rf build"}})
    assert (ask.state, ask.attention) == ("needs_approval", "Bash: rm -rf build")
    question = call({"hook_event_name": "PreToolUse", "tool_name": "AskUserQuestion",
                     "tool_input": {"questions": [{"question": "Which one?"}]}})
    assert (question.state, question.attention) == ("needs_input", "Which one?")
    assert call({"hook_event_name": "SessionEnd", "reason": "clear"}).state is None


def test_hook_client_never_fails_the_agent(tmp_path: Path) -> None:
    """No receiver, garbage input: exit 0, quickly, without a traceback."""
    proc = subprocess.run([sys.executable, "-I", "-S", str(hooks.CLIENT), str(tmp_path / "none"), "s"],
                          input=b"garbage", capture_output=True, timeout=10)
    assert proc.returncode == 0 and proc.stderr == b""


# ---- screen rules as data -----------------------------------------------------------


def test_user_rules_come_first_and_bad_ones_are_reported(tmp_path: Path) -> None:
    mine = tmp_path / "activity-rules.json"
    mine.write_text(json.dumps({"claude": {"screen": [
        {"match": "Proceed\\? \\[y/N\\]", "activity": "needs_approval", "attention": "mine"}]}}))
    found, warning = rules.load("claude", mine)
    assert warning is None
    assert found.for_screen("Proceed? [y/N]") == ("needs_approval", "mine")
    assert found.for_screen(" Do you want to proceed?\n \u276f 1. Yes\n")[0] == "needs_approval"
    mine.write_text(json.dumps({"claude": {"screen": [{"match": "(", "activity": "idle"}]}}))
    found, warning = rules.load("claude", mine)
    assert warning is not None and "claude.screen[0]" in warning
    assert found.for_title("\u2733 Claude Code") == ("idle", None)  # the shipped rules still apply


@pytest.mark.parametrize("text", [
    json.dumps({"generic": {"screen": [{"match": "rl", "activity": "idle", "attention": 5}]}}),
    json.dumps({"generic": {"screen": [{"match": "rl", "activity": ["idle"]}]}}),
    "[" * 100_000 + "]" * 100_000,  # deeper than json can parse
])
def test_a_rules_file_of_the_wrong_shape_is_ignored_with_a_warning(tmp_path: Path, text: str) -> None:
    """Not a crash of every session that matches it, nor of every start."""
    mine = tmp_path / "activity-rules.json"
    mine.write_text(text)
    found, warning = rules.load("generic", mine)
    assert warning is not None and "using the shipped rules" in warning
    assert found.for_screen("rl") is None


# ---- a generic session under the real superv ----------------------------------------


@pytest.mark.timeout(60)
def test_generic_session_quiet_time_and_bell(superv_env: SupervEnv, tmp_path: Path) -> None:
    senv = superv_env
    go = tmp_path / "go"
    # Prints, goes quiet, then asks with a BEL and waits for a file.
    script = f"echo working; sleep 0.3; echo more; while [ ! -e {go} ]; do sleep 0.05; done; " \
             f"printf 'Continue? \\a'; read answer; echo got $answer; sleep 100"
    senv.superv("start", "g", "--", "sh", "-c", script, check=True)

    def activity() -> dict[str, object]:
        return next(s for s in json.loads(senv.superv("ls", "--json", check=True).stdout)
                    if s["name"] == "g")

    first = wait_until(lambda: (s := activity())["activity"] in ("working", "idle") and s)
    assert first["agent"] == "generic"
    idle = wait_until(lambda: (s := activity())["activity"] == "idle" and s, timeout=15)
    assert idle["activity_source"] == "output"
    go.touch()
    asking = wait_until(lambda: (s := activity())["activity"] == "needs_input" and s, timeout=15)
    assert asking["activity_source"] == "terminal"
    senv.superv("send", "--enter", "g", "yes", check=True)
    wait_until(lambda: activity()["activity"] == "working", timeout=15)
    assert "ACTIVITY" in senv.superv("ls", check=True).stdout


@pytest.mark.timeout(60)
def test_doctor_warns_about_a_supervisor_with_agent_markers(superv_env: SupervEnv) -> None:
    senv = superv_env
    inside = {**senv.env, "CLAUDECODE": "1", "CLAUDE_CODE_CHILD_SESSION": "1"}
    proc = subprocess.run([sys.executable, "-m", "supervisor", "ls"], env=inside,
                          capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr  # started the supervisor from "inside an agent"
    checks = {c["name"]: c for c in json.loads(senv.superv("doctor", "--json").stdout)}
    markers = checks["agent-markers"]
    assert not markers["ok"]
    assert "CLAUDECODE" in markers["detail"] and "CLAUDE_CODE_CHILD_SESSION" in markers["detail"]
    assert "plain shell" in markers["fix"]


# Codex CLI's notify call, exactly as Codex makes it: the payload is its own test's
# (openai/codex@898cee38, codex-rs/hooks/src/legacy_notify.rs, expected_notification_json),
# appended as the last argument; stdin is /dev/null, stderr is discarded, a stdout that
# starts with "{" is read as hook actions, and the program is killed after 1.5 s.
CODEX_NOTIFY = {
    "type": "agent-turn-complete",
    "thread-id": "b5f6c1c2-1111-2222-3333-444455556666",
    "turn-id": "12345",
    "cwd": "/Users/example/project",
    "input-messages": ["Rename `foo` to `bar` and update the callsites."],
    "last-assistant-message": "Rename complete and verified `cargo build` succeeds.",
}
CODEX_THREAD = CODEX_NOTIFY["thread-id"]
# Codex CLI cannot run offline here: this stand-in runs its `notify` program the way Codex
# does at the end of a turn (above), and records the command line it was given, so that
# the resume can be checked.
FAKE_CODEX = r'''#!/usr/bin/env python3
import json, subprocess, sys, time
args = sys.argv[1:]
open(sys.argv[0] + ".argv", "a").write(json.dumps(args) + "\n")
notify = next((a[len("notify="):] for a in args if a.startswith("notify=")), None)
print("codex> working on it", flush=True)
if notify:
    done = subprocess.run(json.loads(notify) + [PAYLOAD], stdin=subprocess.DEVNULL,
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                          timeout=30)  # a cold start of the hook under load, not a limit
    open(sys.argv[0] + ".stdout", "ab").write(done.stdout)
time.sleep(1000)
'''.replace("PAYLOAD", repr(json.dumps(CODEX_NOTIFY)))


@pytest.mark.timeout(60)
def test_codex_notify_records_the_thread_and_resume_continues_it(
        superv_env: SupervEnv, tmp_path: Path) -> None:
    senv = superv_env
    codex = tmp_path / "bin" / "codex"
    codex.parent.mkdir()
    codex.write_text(FAKE_CODEX)
    codex.chmod(0o755)
    env_home = tmp_path / "home"  # no ~/.codex/config.toml: no notify of the user's own
    env_home.mkdir()
    senv.env["HOME"] = str(env_home)
    senv.superv("start", "cx", "--", str(codex), "--model", "o4", check=True)

    def cx() -> dict[str, object]:
        return next(s for s in json.loads(senv.superv("ls", "--json", check=True).stdout)
                    if s["name"] == "cx")

    done = wait_until(lambda: (s := cx())["conversation_id"] and s, timeout=20,
                      message="the notify call to record the thread")
    assert (done["agent"], done["activity"], done["activity_source"]) == ("codex", "idle", "hook")
    assert done["conversation_id"] == CODEX_THREAD
    # Nothing on stdout, which Codex would read as hook actions.
    assert Path(str(codex) + ".stdout").read_bytes() == b""
    senv.superv("stop", "cx", check=True)
    resumed = senv.superv("resume", "cx", check=True)
    assert f"continuing conversation {CODEX_THREAD}" in resumed.stdout
    runs = wait_until(lambda: (p := Path(str(codex) + ".argv")).exists()
                      and len(lines := p.read_text().splitlines()) == 2 and lines)
    second = json.loads(runs[1])
    assert second[:2] == ["-c", second[1]] and second[1].startswith("notify=")
    assert second[2:] == ["resume", CODEX_THREAD, "--model", "o4"]


def test_codex_users_own_notify_is_left_alone(tmp_path: Path) -> None:
    (tmp_path / ".codex").mkdir()
    (tmp_path / ".codex" / "config.toml").write_text('notify = ["notify-send-codex"]\n')
    argv = ["codex", "--full-auto"]
    hook = tmp_path / "s.hook"
    assert hooks.with_codex_notify(argv, 0, hook, "s", {"HOME": str(tmp_path)}) == argv
    assert hooks.with_codex_notify(["codex", "-c", "notify=['x']"], 0, hook, "s",
                                   {"HOME": str(tmp_path / "nohome")}) == ["codex", "-c", "notify=['x']"]
    # The session's own CODEX_HOME (superv start --env CODEX_HOME=...) is where Codex looks.
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "config.toml").write_text('notify = ["mine"]\n')
    assert hooks.with_codex_notify(argv, 0, hook, "s", {"CODEX_HOME": str(tmp_path / "elsewhere"),
                                                        "HOME": str(tmp_path / "nohome")}) == argv
    assert hooks.with_codex_notify(argv, 0, hook, "s", {"HOME": str(tmp_path / "nohome")}) != argv


# Approval prompts as these CLIs draw them.  None of them runs offline here, so none is a
# capture of our own run; each comes from the CLI's own rendering tests or source:
# - Codex: its TUI's snapshot of the exec approval, rendered through a vt100 emulator
#   (openai/codex@2330732a, codex-rs/tui/src/chatwidget/snapshots/
#   codex_tui__chatwidget__tests__approval_modal_exec.snap), trailing blanks trimmed;
# - Gemini CLI: its ToolConfirmationMessage snapshots (google-gemini/gemini-cli@0787eeda,
#   packages/cli/src/ui/components/messages/__snapshots__/ToolConfirmationMessage.test.tsx.snap);
# - aider: built exactly as aider/io.py's confirm_ask builds its question (question, then
#   " (Y)es/(N)o", "/(A)ll", "/(S)kip all", "/(D)on't ask again", " [Yes]: "); the same
#   lines appear in the .aider.chat.history.md transcripts aider writes of real runs.
CODEX_EXEC_APPROVAL = """

  Would you like to run the following command?

  Reason: this is a test reason such as one that would be produced by the model

  $ echo hello world

\u203a 1. Yes, proceed (y)
  2. Yes, and don't ask again for commands that start with `echo hello world` (p)
  3. No, and tell Codex what to do differently (esc)

  Press enter to confirm or esc to cancel
"""


@pytest.mark.parametrize(("kind", "screen", "attention"), [
    ("aider", "Run shell command? (Y)es/(N)o/(D)on't ask again [Yes]: ", "Run shell command?"),
    ("aider", "Add file to the chat? (Y)es/(N)o/(A)ll/(S)kip all/(D)on't ask again [Yes]:",
     "Add file to the chat?"),
    ("aider", "Install playwright? (Y)es/(N)o [Yes]: ", "Install playwright?"),
    ("codex", CODEX_EXEC_APPROVAL, "Would you like to run the following command?"),
    ("gemini", "echo \"hello\"\nAllow execution of: 'echo'?\n\n\u25cf 1. Allow once\n"
               "  2. Allow for this session\n  3. No, suggest changes (esc)\n",
     "Allow execution of: 'echo'?"),
    ("gemini", "echo \"hello\"\nls -la\nwhoami\nAllow execution of 3 commands?\n\n"
               "\u25cf 1. Allow once\n  2. Allow for this session\n  3. No, suggest changes (esc)\n",
     "Allow execution of 3 commands?"),
    ("gemini", "No changes detected.\nApply this change?\n\n\u25cf 1. Allow once\n"
               "  2. Modify with external editor\n  3. No, suggest changes (esc)\n",
     "Apply this change?"),
    ("gemini", "https://example.com\nDo you want to proceed?\n\n\u25cf 1. Allow once\n"
               "  2. No, suggest changes (esc)\n", "Do you want to proceed?"),
])
def test_screen_rules_of_other_agents(kind: str, screen: str, attention: str) -> None:
    found, warning = rules.load(kind, Path("/nonexistent"))
    assert warning is None
    assert found.for_screen(screen) == ("needs_approval", attention)
    assert found.for_screen("just some output\n$ ") is None


# aider's answered prompt stays on the screen with its answer typed after it, while the
# command's output and the next prompt come below (the aider prompts above, answered).
AIDER_SHELL = "Run shell command? (Y)es/(N)o/(D)on't ask again [Yes]: "
AIDER_ANSWERED = ("Add file to the chat? (Y)es/(N)o/(A)ll/(S)kip all/(D)on't ask again "
                  "[Yes]: y\nAdded hello.py to the chat\n")


def test_aider_rule_finds_only_the_live_prompt() -> None:
    found, _ = rules.load("aider", Path("/nonexistent"))
    assert found.for_screen(AIDER_ANSWERED) is None
    assert found.for_screen(AIDER_ANSWERED + AIDER_SHELL + "\n\n") == (
        "needs_approval", "Run shell command?")
    assert found.for_screen(AIDER_ANSWERED + AIDER_SHELL + "y\n") is None  # typed, not sent


def test_aider_second_prompt_of_the_same_question_can_be_approved() -> None:
    """The first answer's line on the screen is not the second prompt: approve presses."""
    from agent_worker.activity.approvals import Approvals

    found, _ = rules.load("aider", Path("/nonexistent"))
    approvals = Approvals()
    question = "Run shell command?"
    screen = "$ aider\n"
    for since in (1.0, 4.0):
        screen += AIDER_SHELL
        approvals.screen_seen(found.for_screen(screen), screen, since)
        seen = {"since": since, "attention": question, "at": since + 0.5}
        keys = approvals.press("s", "aider", "allow", None, seen,
                               ("needs_approval", since, question), found.for_screen(screen),
                               screen)
        assert keys == b"y\r"
        screen += "y\n$ ls\nhello.py\n"  # answered: its line stays, the output below
        approvals.screen_seen(found.for_screen(screen), screen, since + 1)


@pytest.mark.timeout(60)
def test_a_hook_socket_that_cannot_be_made_costs_only_the_hooks(
        superv_env: SupervEnv, tmp_path: Path) -> None:
    senv = superv_env
    codex = tmp_path / "codex"
    codex.write_text(FAKE_CODEX)
    codex.chmod(0o755)
    senv.env["HOME"] = str(tmp_path)
    (senv.run / "sessions" / "blocked.hook").mkdir(parents=True)  # not a socket, not removable
    senv.superv("start", "blocked", "--", str(codex), check=True)
    wait_until(lambda: b"working on it" in (senv.session_dir("blocked") / "output.log").read_bytes())
    run = json.loads(Path(str(codex) + ".argv").read_text().splitlines()[0])
    assert run == []  # started without our notify
    assert "hook_socket_failed" in (senv.session_dir("blocked") / "worker.log").read_text()


# ---- ls sees a change at once; the snapshot gets it coalesced ------------------------


def test_ls_shows_the_newest_of_the_live_event_and_the_snapshot(tmp_path: Path) -> None:
    from agent_worker.activity.report import activity_fields
    from agent_worker.snapshot import Snapshot

    snap = Snapshot(name="s", worker_pid=1, worker_start=1, agent_pid=2, argv=["x"], cwd="/",
                    started_at=1.0, state="running", exit_code=None, exit_signal=None,
                    ended_at=None, log_end=0, last_output_at=None, rows=24, cols=80, clients=[],
                    seq=1, boot_id="b", activity="working", activity_since=10.0,
                    activity_source="hook", attention=None)
    live = {"activity": "needs_approval", "source": "hook", "attention": "Bash: ls",
            "since": 11.0, "previous": "working"}
    shown = activity_fields("claude", snap, True, None, live)
    assert (shown["activity"], shown["activity_since"], shown["attention"]) == \
        ("needs_approval", 11.0, "Bash: ls")
    # A snapshot newer than the last event the supervisor got (it missed one) wins.
    older = {**live, "since": 9.0}
    assert activity_fields("claude", snap, True, None, older)["activity"] == "working"
    # An ended session has ended, whatever its worker said last.
    assert activity_fields("claude", snap, False, 12.0, live)["activity"] == "ended"


# Stands in for Claude Code where only the hook path matters: takes --settings (our
# hooks.json) and waits; the test runs the hooks' command itself, as Claude Code would.
FAKE_CLAUDE = r'''#!/usr/bin/env python3
import sys, time
print("claude> ready", flush=True)
time.sleep(1000)
'''


def run_hook(command: str, payload: dict[str, object]) -> None:
    """Run a hook's command line the way Claude Code does (``sh -c``, the event on stdin)."""
    proc = subprocess.run(["sh", "-c", command], input=json.dumps(payload).encode(),
                          capture_output=True, timeout=10)
    assert proc.returncode == 0 and not proc.stderr, proc.stderr


@pytest.mark.timeout(90)
def test_activity_changes_reach_ls_at_once_and_snapshots_are_coalesced(
        superv_env: SupervEnv, tmp_path: Path) -> None:
    """40 activity changes in a burst: ls reports the last one, the snapshot catches up
    within a second or two, and there were not 40 snapshot writes (each one an fsync)."""
    from agent_worker.snapshot import read_snapshot

    senv = superv_env
    claude = tmp_path / "bin" / "claude"
    claude.parent.mkdir()
    claude.write_text(FAKE_CLAUDE)
    claude.chmod(0o755)
    senv.superv("start", "fl", "--", str(claude), check=True)
    directory = senv.session_dir("fl")
    settings = wait_until(lambda: (directory / "hooks.json").exists()
                          and json.loads((directory / "hooks.json").read_text()))
    command = settings["hooks"]["Stop"][0]["hooks"][0]["command"]

    def ls() -> dict[str, object]:
        return next(s for s in json.loads(senv.superv("ls", "--json", check=True).stdout)
                    if s["name"] == "fl")

    conversation = "5f1c0e0a-0000-4000-8000-00000000c0de"
    run_hook(command, {"hook_event_name": "SessionStart", "session_id": conversation,
                       "transcript_path": str(tmp_path / "t.jsonl"), "source": "startup"})
    # A new conversation is durable at once (what a resume after a crash continues).
    wait_until(lambda: read_snapshot(directory)[0].conversation_id == conversation, timeout=5)
    wait_until(lambda: ls()["activity"] == "idle", timeout=10)
    before = read_snapshot(directory)[0].seq
    started = time.monotonic()
    for i in range(40):
        event = "UserPromptSubmit" if i % 2 == 0 else "Stop"
        run_hook(command, {"hook_event_name": event, "session_id": conversation})
    run_hook(command, {"hook_event_name": "UserPromptSubmit", "session_id": conversation})
    elapsed = time.monotonic() - started
    shown = wait_until(lambda: (s := ls())["activity"] == "working" and s, timeout=5)
    assert shown["activity_source"] == "hook"
    # The snapshot catches up (coalesced: within about a second)...
    wait_until(lambda: read_snapshot(directory)[0].activity == "working", timeout=5)
    writes = read_snapshot(directory)[0].seq - before
    # ...and was written about once a second, not once per change (41 of them).
    assert writes <= elapsed + 3, f"{writes} snapshot writes for 41 changes in {elapsed:.1f} s"


# Build output as a compiler prints it: coloured lines, ~400 kB/s, for a few seconds.
PACED_OUTPUT = r'''
import sys, time
line = "\x1b[32m%08d\x1b[0m compiling module \x1b[1mfoo/bar/baz_%d.c\x1b[0m ... ok\n"
end = time.time() + float(sys.argv[1])
i = 0
while time.time() < end:
    sys.stdout.write("".join(line % (i + k, k) for k in range(150)))
    sys.stdout.flush()
    i += 150
    time.sleep(0.02)
'''


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.timeout(90)
def test_screen_rules_cost_nothing_while_the_output_flows(
        superv_env: SupervEnv, tmp_path: Path) -> None:
    """A kind with screen rules (aider) drains busy output for the CPU a generic session
    does: the screen model (~40x slower than a PTY) is not caught up while it flows.
    Before, it was every half second: 4x the worker's CPU on this workload."""
    senv = superv_env
    program = tmp_path / "paced.py"
    program.write_text(PACED_OUTPUT)
    go = tmp_path / "go"
    for name, kind in (("plain", "generic"), ("ruled", "aider")):
        senv.superv("start", "--agent", kind, name, "--", "sh", "-c",
                    f"while [ ! -e {go} ]; do sleep 0.05; done; exec {sys.executable} {program} 4",
                    check=True)
    sessions = wait_until(lambda: (s := {x["name"]: x for x in json.loads(
        senv.superv("ls", "--json", check=True).stdout)}) and
        all(x["worker_pid"] for x in s.values()) and len(s) == 2 and s)
    pids = {name: s["worker_pid"] for name, s in sessions.items()}
    time.sleep(1.0)  # both workers past their start-up (its CPU is not what is measured)
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    go.touch()
    for name in pids:
        wait_until(lambda n=name: next(s for s in json.loads(senv.superv(
            "ls", "--json", check=True).stdout) if s["name"] == n)["state"] != "running",
            timeout=30)
    used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()
            if Path(f"/proc/{pid}").exists()}
    assert set(used) == {"plain", "ruled"}, "a worker left before its CPU was read"
    assert used["ruled"] < 1.6 * used["plain"] + 0.2, used
