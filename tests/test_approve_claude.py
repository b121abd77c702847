"""superv approve / superv deny, proven on the real Claude Code CLI (offline, see
tests/claude_helpers.py): the answer reaches exactly the pending PermissionRequest through
its hook, the approved command runs, the denied one does not and Claude goes on."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from claude_helpers import ClaudeSetup, claude_fixture  # noqa: F401  (the fixture)
from conftest import wait_until
from fake_anthropic import Text, ToolUse, has_tool_result
from ssh_fixtures import sshd, sshd_factory, superv_installed  # noqa: F401  (fixtures)
from sshd import VENV_BIN, SshServer

from agent_worker.activity import approvals, hook_client

pytestmark = pytest.mark.timeout(180)


def make_file_script(claude: ClaudeSetup, name: str) -> None:
    claude.api.on(f"make {name}", ToolUse("Bash", {"command": f"touch {name}",
                                                  "description": "make a file"},
                                          Text(f"Done with {name}.")))


def ask_to_make(claude: ClaudeSetup, session: str, name: str) -> None:
    claude.superv("send", "--enter", session, f"make {name}")
    asking = claude.wait_activity(session, "needs_approval")
    assert asking["attention"] == f"Bash: touch {name}"
    claude.wait_screen(session, "Do you want to proceed?")


def tool_result_of(request: dict[str, object], name: str) -> dict[str, object] | None:
    """The tool_result block a request carries for the tool_use that touched ``name``."""
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages or not has_tool_result(messages[-1]):
        return None
    if f"make {name}" not in json.dumps(messages):
        return None
    return next(b for b in messages[-1]["content"] if b.get("type") == "tool_result")


def test_approve_runs_the_command_and_deny_does_not(claude: ClaudeSetup) -> None:
    make_file_script(claude, "approved-file")
    make_file_script(claude, "denied-file")
    claude.start("a")
    claude.wait_activity("a", "idle")

    refused = claude.superv("approve", "a", check=False)
    assert refused.returncode == 1
    assert refused.stderr == "superv: a has no pending approval\n"

    ask_to_make(claude, "a", "approved-file")
    wrong = claude.superv("approve", "a", "--expect", "Bash: touch other", check=False)
    assert wrong.returncode == 1 and "not 'Bash: touch other'" in wrong.stderr, wrong.stderr
    assert not (claude.project / "approved-file").exists()
    done = claude.superv("approve", "a", "--expect", "Bash: touch approved-file")
    assert done.stdout == "approved a: Bash: touch approved-file\n"
    claude.wait_screen("a", "Done with approved-file.")
    claude.wait_activity("a", "idle")
    assert (claude.project / "approved-file").exists()
    again = claude.superv("approve", "a", check=False)
    assert (again.returncode, again.stderr) == (1, "superv: a has no pending approval\n")

    ask_to_make(claude, "a", "denied-file")
    denied = claude.superv("deny", "a")
    assert denied.stdout == "denied a: Bash: touch denied-file\n"
    # Claude goes on: its next request carries the refusal as the tool's result.
    after = claude.api.wait_for_request(lambda r: tool_result_of(r, "denied-file") is not None)
    result = tool_result_of(after, "denied-file")
    assert result is not None and result.get("is_error") is True
    assert approvals.DENY_MESSAGE in json.dumps(result)
    claude.wait_screen("a", "Done with denied-file.")
    claude.wait_activity("a", "idle")
    assert not (claude.project / "denied-file").exists()


def test_a_prompt_answered_on_the_screen_is_no_longer_pending(claude: ClaudeSetup) -> None:
    make_file_script(claude, "by-hand")
    claude.start("h")
    claude.wait_activity("h", "idle")
    ask_to_make(claude, "h", "by-hand")
    claude.superv("send", "h", "1")  # "1. Yes", pressed in the session
    claude.wait_screen("h", "Done with by-hand.")
    claude.wait_activity("h", "idle")
    late = claude.superv("deny", "h", check=False)
    assert (late.returncode, late.stderr) == (1, "superv: h has no pending approval\n")
    assert (claude.project / "by-hand").exists()
    # The held hook is let go (not left waiting out its 600 s beside the agent).
    wait_until(lambda: not hook_clients("h"), timeout=10, message="the held hook to end")


def hook_clients(session: str) -> list[str]:
    """Command lines of the session's running hook programs."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"hook_client.py" in cmdline and f"/{session}.hook".encode() in cmdline:
                found.append(cmdline.decode(errors="replace"))
    return found


def test_approve_refuses_what_it_cannot_answer(claude: ClaudeSetup) -> None:
    missing = claude.superv("approve", "nosuch", check=False)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1
    assert "no session named nosuch" in missing.stderr
    claude.superv("start", "plain", "--", "sleep", "600")
    plain = claude.superv("deny", "plain", check=False)
    assert plain.returncode == 1 and plain.stderr.count("\n") == 1
    assert "takes no answers from outside" in plain.stderr, plain.stderr
    bad = claude.superv("approve", "bad/name", check=False)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_the_hook_waits_longer_than_the_worker_may_hold_it() -> None:
    assert hook_client.HELD == approvals.HELD
    assert approvals.MAX_WAIT < hook_client.HELD_TIMEOUT
    from agent_worker.activity.hooks import PERMISSION_HOOK_TIMEOUT

    assert approvals.MAX_WAIT < PERMISSION_HOOK_TIMEOUT
    from agent_worker import settings

    assert settings.load({"SUPERV_APPROVAL_WAIT": str(approvals.MAX_WAIT)}).approval_wait
    with pytest.raises(settings.SettingError):
        settings.load({"SUPERV_APPROVAL_WAIT": str(approvals.MAX_WAIT + 1)})


def test_when_the_wait_runs_out_the_prompt_stays_for_the_person(claude: ClaudeSetup) -> None:
    make_file_script(claude, "late-file")
    claude.start("w", env={**claude.env, "SUPERV_APPROVAL_WAIT": "2"})  # the daemon starts here
    claude.wait_activity("w", "idle")
    ask_to_make(claude, "w", "late-file")
    wait_until(lambda: not hook_clients("w"), timeout=20, message="the held hook to end")
    assert "Do you want to proceed?" in claude.screen("w")
    assert claude.session("w")["activity"] == "needs_approval"
    late = claude.superv("approve", "w", check=False)
    assert late.returncode == 1 and late.stderr.count("\n") == 1
    assert "no longer waits for an answer from outside" in late.stderr, late.stderr
    assert not (claude.project / "late-file").exists()
    claude.superv("send", "w", "1")  # the person answers the prompt that stayed
    claude.wait_screen("w", "Done with late-file.")
    assert (claude.project / "late-file").exists()


def test_approve_over_ssh(claude: ClaudeSetup, sshd: SshServer) -> None:  # noqa: F811
    """``superv approve box:NAME`` from a "laptop": the box's superv answers the request."""
    make_file_script(claude, "far-file")
    claude.start("r")
    claude.wait_activity("r", "idle")
    ask_to_make(claude, "r", "far-file")
    laptop = claude.senv.root / "laptop"
    laptop.mkdir()
    env = {**claude.senv.env, **sshd.client_env, "HOME": str(laptop)}
    env.pop("SSH_AUTH_SOCK", None)
    done = subprocess.run([str(VENV_BIN / "superv"), "approve", "box:r"], env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert (done.returncode, done.stdout) == (0, "approved r: Bash: touch far-file\n"), done.stderr
    claude.wait_screen("r", "Done with far-file.")
    assert (claude.project / "far-file").exists()
