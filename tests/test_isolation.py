"""The suite's own promise: no test reads the configuration of the developer running it.

A developer has their own ``~/.config/superv`` (notify routes, fleet hosts, activity
rules), maybe a ``$CODEX_HOME`` with a ``notify`` of theirs and an ssh config with a
``Host box``.  None of it may reach a test that does not set its own (see conftest).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from conftest import isolated_env, wait_until
from test_activity import FAKE_CODEX

from agent_worker.activity import hooks, rules
from supervisor import config


def developer(tmp_path: Path) -> Path:
    """A developer's configuration, every file of it unusable or in the way."""
    mine = tmp_path / "developer"
    (mine / "config" / "superv").mkdir(parents=True)
    (mine / "config" / "superv" / "config.toml").write_text("notify = 5\n")
    (mine / "config" / "superv" / "activity-rules.json").write_text("[")
    (mine / "codex").mkdir()
    (mine / "codex" / "config.toml").write_text('notify = ["their-own-notify"]\n')
    return mine


@pytest.mark.timeout(60)
def test_commands_a_test_runs_read_none_of_the_developers_config(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    mine = developer(tmp_path)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(mine / "config"))
    monkeypatch.setenv("CODEX_HOME", str(mine / "codex"))
    with isolated_env() as senv:
        doctor = senv.superv("doctor", "--json")
        checks = {c["name"]: c for c in json.loads(doctor.stdout)}
        assert checks["config"]["ok"], checks["config"]
        assert checks["activity-rules"]["ok"], checks["activity-rules"]
        # Codex's notify is superv's: the developer's own would have kept it out.
        codex = senv.root / "codex-bin"
        codex.write_text(FAKE_CODEX.replace("#!/usr/bin/env python3", f"#!{sys.executable}"))
        codex.chmod(0o755)
        senv.superv("start", "--agent", "codex", "cx", "--", str(codex), check=True)
        argv = wait_until(lambda: (p := Path(f"{codex}.argv")).exists() and p.read_text())
        assert json.loads(argv.splitlines()[0])[1].startswith("notify=")
        senv.superv("kill", "cx")
        # The ssh config is the test's own, empty one: no Host of the developer's.
        assert Path(senv.env["SUPERV_SSH_CONFIG"]).read_text() == ""


def test_code_a_test_runs_in_process_reads_none_of_the_developers_config(
        tmp_path: Path) -> None:
    assert config.config_path().is_relative_to(tmp_path)
    assert rules.user_rules_path().is_relative_to(tmp_path)
    assert "CODEX_HOME" not in os.environ
    argv = ["codex"]
    assert hooks.with_codex_notify(argv, 0, tmp_path / "s.hook", "s", {"HOME": str(tmp_path)}) != argv
