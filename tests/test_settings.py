"""Every SUPERV_* variable is read and checked in one place (issue 9 item 4).

A bad value is one line naming the variable and what it accepts, from the CLI, the daemon
and the worker alike, before anything starts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from conftest import SupervEnv
from worker_helpers import start_worker

from agent_worker import settings

pytestmark = pytest.mark.timeout(60)

BAD = [
    ("SUPERV_RESTART_LIMIT", "five", "whole number"),
    ("SUPERV_RESTART_LIMIT", "-1", "whole number"),
    ("SUPERV_RESTART_BACKOFF", "nan", "seconds"),
    ("SUPERV_SNAPSHOT_INTERVAL", "0", "more than 0"),
    ("SUPERV_SNAPSHOT_INTERVAL", "abc", "more than 0"),
    ("SUPERV_SNAPSHOT_INTERVAL", "1e999", "more than 0"),
    ("SUPERV_STALL_AFTER", "-5", "seconds"),
    ("SUPERV_STOP_GRACE", "inf", "seconds"),
    ("SUPERV_LOG_FSYNC", "sometimes", "snapshot, always, never"),
    ("SUPERV_DETACH_KEY", "ctrl-alt-del", "'^A'"),
    ("SUPERV_DOCTOR_MIN_FREE_MB", "lots", "whole number"),
    ("SUPERV_HOME", "relative/home", "absolute path"),
]


@pytest.mark.parametrize(("name", "value", "accepts"), BAD)
def test_each_bad_value_names_the_variable(name: str, value: str, accepts: str) -> None:
    with pytest.raises(settings.SettingError) as caught:
        settings.load({name: value})
    message = str(caught.value)
    assert message.startswith(f"{name}={value!r}") and accepts in message
    assert "\n" not in message


def test_defaults_and_good_values() -> None:
    s = settings.load({})
    assert (s.snapshot_interval, s.log_fsync) == (30.0, "snapshot")
    assert (s.restart_limit, s.restart_backoff) == (5, 0.5)
    assert (s.stall_after, s.stop_grace, s.doctor_min_free_mb, s.detach_key) == (600.0, 10.0, 1024, "^\\")
    assert s.home is None and s.remote_command is None
    s = settings.load({"SUPERV_RESTART_LIMIT": "1000", "SUPERV_SNAPSHOT_INTERVAL": "0.01",
                       "SUPERV_STOP_GRACE": "0", "SUPERV_REMOTE_COMMAND": ""})
    assert (s.restart_limit, s.snapshot_interval, s.stop_grace, s.remote_command) == (1000, 0.01, 0.0, None)


def test_every_variable_the_product_reads_is_in_the_table() -> None:
    """No SUPERV_* variable is read anywhere but through the settings module."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parent.parent
    readers = re.compile(r"environ(?:\.get\(|\[)\s*['\"](SUPERV_[A-Z_]+)")
    for package in ("agent_worker", "supervisor"):
        for path in (root / package).rglob("*.py"):
            if path.name == "settings.py":
                continue
            found = readers.findall(path.read_text())
            assert not found, f"{path} reads {found} itself"


def _no_supervisor(senv: SupervEnv) -> bool:
    return not (senv.run / "supervisor.sock").exists() and not senv.pids()


@pytest.mark.parametrize(("name", "value"), [("SUPERV_RESTART_LIMIT", "five"),
                                             ("SUPERV_SNAPSHOT_INTERVAL", "-1")])
def test_cli_says_what_is_wrong_and_starts_nothing(superv_env: SupervEnv, name: str, value: str) -> None:
    # Before: RESTART_LIMIT=five killed the daemon at import and the CLI said, after 15 s,
    # only "the supervisor did not start"; SNAPSHOT_INTERVAL=-1 started a daemon that
    # died at its first snapshot.
    senv = superv_env
    senv.env[name] = value
    began = time.monotonic()
    proc = senv.superv("ls")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.splitlines() == [proc.stderr.strip()] and proc.stderr.startswith(f"superv: {name}=")
    assert "Traceback" not in proc.stderr
    assert time.monotonic() - began < 5
    assert _no_supervisor(senv)


@pytest.mark.parametrize("args", [["attach", "x"], ["--help"]])
def test_a_bad_default_of_an_option_is_one_line_too(superv_env: SupervEnv, args: list[str]) -> None:
    senv = superv_env
    senv.env["SUPERV_DETACH_KEY"] = "ctrl-alt-x"
    proc = senv.superv(*args)
    assert proc.returncode == 2 and proc.stderr.startswith("superv: SUPERV_DETACH_KEY='ctrl-alt-x'")
    assert len(proc.stderr.splitlines()) == 1


def test_daemon_refuses_a_bad_value_at_once(superv_env: SupervEnv) -> None:
    senv = superv_env
    env = {**senv.env, "SUPERV_SNAPSHOT_INTERVAL": "soon"}
    proc = subprocess.run([sys.executable, "-m", "supervisor", "daemon"], env=env, capture_output=True,
                          text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "superv: SUPERV_SNAPSHOT_INTERVAL='soon' is not usable: use a number of seconds more than 0 "
        "and at most 86400"]
    assert _no_supervisor(senv)


def test_a_running_supervisor_is_untouched_by_a_bad_cli(superv_env: SupervEnv) -> None:
    senv = superv_env
    senv.superv("ls", check=True)
    pid = int((senv.home / "supervisor.lock").read_text())
    bad = subprocess.run(
        [sys.executable, "-m", "supervisor", "ls"], env={**senv.env, "SUPERV_STALL_AFTER": "x"},
        capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert bad.returncode == 2 and "SUPERV_STALL_AFTER" in bad.stderr
    os.kill(pid, 0)
    senv.superv("ls", check=True)


def test_worker_reports_a_bad_value_before_its_agent_starts(superv_env: SupervEnv) -> None:
    senv = superv_env
    proc, ready = start_worker(senv, "w", ["sleep", "30"], extra_env={"SUPERV_RESTART_BACKOFF": "31"})
    assert proc.wait(10) == 1
    assert ready == {"ok": False, "error": "SUPERV_RESTART_BACKOFF='31' is not usable: use a number of "
                     "seconds from 0 to 30"}
