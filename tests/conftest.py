"""Fixtures every test shares: an isolated superv home, and cleanup of what it started.

Every test gets its own ``SUPERV_HOME`` and ``SUPERV_RUNTIME_DIR`` in a short directory
under /tmp (Unix socket paths must stay under 108 bytes), so the suite never touches a
user's real sessions and can run twice at once.  Workers and supervisors are detached from
the test process on purpose, so teardown finds them by the home in their environment and
kills them: a test leaves no process behind.

Nor does a test read the configuration of the developer running the suite: the places
superv reads a user's configuration from (``$XDG_CONFIG_HOME/superv``, Codex's
``$CODEX_HOME``, the ssh config) point into the test's own directory, for the commands a
test runs (:func:`make_env`) and for the code it runs in-process (:func:`own_config`).  A
test that wants a configuration writes it there, or sets the variable itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from agent_worker.procfs import pids_with_env

REPO = Path(__file__).resolve().parent.parent


@attrs.define
class SupervEnv:
    root: Path
    home: Path
    run: Path
    env: dict[str, str]

    def superv(
        self, *args: str, timeout: float = 30, input: bytes | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run the ``superv`` CLI in this home and capture its output."""
        proc = subprocess.run(
            [sys.executable, "-m", "supervisor", *args],
            env=self.env,
            input=input.decode() if input is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"superv {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}"
            )
        return proc

    def session_dir(self, name: str) -> Path:
        return self.home / "sessions" / name

    def pids(self) -> list[int]:
        return pids_with_env("SUPERV_HOME", str(self.home))


def kill_all(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02, message: str = ""):
    """Poll ``predicate`` until it returns a truthy value; fail the test after ``timeout``.

    For conditions in other processes that offer no event to wait on (a file appearing,
    a process ending); the poll interval is short and the timeout generous.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message or predicate}")
        time.sleep(interval)


def make_env(root: Path) -> SupervEnv:
    """The environment of the commands a test runs in ``root``: its own superv home, and
    its own (empty) configuration where the developer's would otherwise be read: the
    config directory (``config.toml``, ``activity-rules.json``, the systemd unit), Codex's
    (whether the user has a ``notify`` of their own) and the ssh config (``Host box``)."""
    home = root / "home"
    run = root / "run"
    ssh_config = root / "ssh_config"
    ssh_config.touch()
    env = dict(os.environ)
    for key in list(env):
        if key.startswith("SUPERV_") or key in ("NOTIFY_SOCKET", "TMUX", "TMUX_PANE"):
            del env[key]
    env.update(
        SUPERV_HOME=str(home),
        SUPERV_RUNTIME_DIR=str(run),
        SUPERV_SNAPSHOT_INTERVAL="30",
        SUPERV_SSH_CONFIG=str(ssh_config),
        XDG_CONFIG_HOME=str(root / "config"),
        CODEX_HOME=str(root / "codex"),
        PYTHONPATH=str(REPO) + os.pathsep + env.get("PYTHONPATH", ""),
        TERM="xterm-256color",
    )
    return SupervEnv(root=root, home=home, run=run, env=env)


@pytest.fixture(autouse=True)
def own_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The same for code a test runs in this process: the config directory is the test's
    (not created: nothing is configured), and Codex's is the one under the HOME a test
    passes (``hooks.with_codex_notify``), never the developer's ``$CODEX_HOME``."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("CODEX_HOME", raising=False)


@contextlib.contextmanager
def isolated_env() -> Iterator[SupervEnv]:
    """A fresh home under /tmp; afterwards, everything started in it is killed and removed."""
    root = Path(tempfile.mkdtemp(prefix="sv-", dir="/tmp"))
    senv = make_env(root)
    try:
        yield senv
    finally:
        # Twice: a supervisor killed mid-restart may have started one more worker.
        for _ in range(2):
            kill_all(senv.pids())
            time.sleep(0.05)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def attaches() -> Iterator[list[Any]]:
    """The local attaches a test made (``attach_helpers.PtyAttach``): each closed after it."""
    made: list[Any] = []
    yield made
    for attach in made:
        attach.close()


@pytest.fixture
def superv_env() -> Iterator[SupervEnv]:
    with isolated_env() as senv:
        yield senv


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print the fault suite's figures (faults injected, inputs tried, answers, bytes lost)."""
    import fault_report

    if not fault_report.LINES:
        return
    terminalreporter.section("fault suite figures")
    for line in fault_report.LINES:
        terminalreporter.write_line(line)
    totals = ", ".join(f"{k}: {v}" for k, v in fault_report.TOTALS.items())
    terminalreporter.write_line(f"totals: {totals}")
