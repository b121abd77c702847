"""Running the real Claude Code CLI offline under superv, against tests/fake_anthropic.py.

``scripts/test`` installs Claude Code into ``.tools/`` (git-ignored).  A test that needs
it and does not find it fails, saying to run scripts/test: it never skips silently.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from conftest import REPO, SupervEnv, wait_until
from fake_anthropic import FakeAnthropic

API_KEY = "sk-ant-test-0000000000000000"


def claude_binary() -> str:
    path = os.environ.get("SUPERV_TEST_CLAUDE") or str(REPO / ".tools/node_modules/.bin/claude")
    if not os.access(path, os.X_OK):
        pytest.fail(f"the Claude Code CLI is not installed at {path}: run scripts/test "
                    "(it installs it into .tools/), or set SUPERV_TEST_CLAUDE", pytrace=False)
    return path


@attrs.define
class ClaudeSetup:
    """A HOME in which Claude Code runs offline, a project directory, and the fake API."""

    senv: SupervEnv
    api: FakeAnthropic
    home: Path
    project: Path
    binary: str

    @property
    def env(self) -> dict[str, str]:
        """The environment ``superv start`` runs with: the agent inherits it."""
        return {**self.senv.env, "HOME": str(self.home), "ANTHROPIC_BASE_URL": self.api.url,
                "ANTHROPIC_API_KEY": API_KEY, "DISABLE_TELEMETRY": "1",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1"}

    def superv(self, *args: str, env: dict[str, str] | None = None, check: bool = True,
               timeout: float = 30) -> Any:
        import subprocess
        import sys

        proc = subprocess.run([sys.executable, "-m", "supervisor", *args],
                              env=env or self.env, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL, cwd=self.project)
        if check and proc.returncode != 0:
            raise AssertionError(f"superv {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        self.superv("start", "--cwd", str(self.project), name, "--", self.binary, *args, env=env)

    def session(self, name: str) -> dict[str, Any]:
        sessions = json.loads(self.superv("ls", "--json").stdout)
        return next(s for s in sessions if s["name"] == name)

    def wait_activity(self, name: str, activity: str, timeout: float = 30) -> dict[str, Any]:
        return wait_until(lambda: (s := self.session(name))["activity"] == activity and s,
                          timeout=timeout, interval=0.05,
                          message=f"{name} to be {activity}")

    def screen(self, name: str) -> str:
        return str(self.superv("peek", name).stdout)

    def wait_screen(self, name: str, text: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen(name)
            if text in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not on {name}'s screen in {timeout}s:\n{screen}")
            time.sleep(0.1)

    def transcripts(self) -> list[Path]:
        return sorted((self.home / ".claude" / "projects").glob("*/*.jsonl"))


def claude_home(root: Path, project: Path) -> Path:
    """A HOME whose ``.claude.json`` skips onboarding, approves the key, trusts ``project``."""
    home = root / "claude-home"
    home.mkdir()
    config = {
        "hasCompletedOnboarding": True,
        "customApiKeyResponses": {"approved": [API_KEY[-20:]], "rejected": []},
        "projects": {str(project): {"hasTrustDialogAccepted": True}},
    }
    (home / ".claude.json").write_text(json.dumps(config))
    return home


@pytest.fixture(name="claude")
def claude_fixture(superv_env: SupervEnv) -> Iterator[ClaudeSetup]:
    binary = claude_binary()
    project = superv_env.root / "project"
    project.mkdir()
    with FakeAnthropic() as api:
        yield ClaudeSetup(superv_env, api, claude_home(superv_env.root, project), project, binary)


def monotonic_ms() -> float:
    return time.monotonic() * 1000
