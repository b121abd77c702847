"""Where superv keeps things, when they are not what they should be (issue 14 items 7-10).

Another user's directories, symlinks, long socket paths and another user's commands: each
is one line on stderr saying what is wrong, at once, and never a traceback.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SupervEnv, wait_until
from other_user import other_uid, run_as_other

pytestmark = pytest.mark.timeout(60)


def one_line(proc: subprocess.CompletedProcess[str], code: int = 1) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("superv: "), proc.stderr
    return lines[0]


def timed(senv: SupervEnv, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    began = time.monotonic()
    proc = senv.superv(*args)
    return proc, time.monotonic() - began


def test_runtime_dir_of_another_user_is_refused_at_once(superv_env: SupervEnv) -> None:
    # Before: refused only after 15 s, with "the supervisor did not start; see supervisor.log".
    senv = superv_env
    senv.run.mkdir(mode=0o700)
    os.chown(senv.run, other_uid(), other_uid())
    proc, took = timed(senv, "ls")
    line = one_line(proc)
    assert f"{senv.run} belongs to uid {other_uid()}" in line
    assert took < 5


def test_symlinked_runtime_dir_is_refused_at_once(superv_env: SupervEnv) -> None:
    senv = superv_env
    theirs = senv.root / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, other_uid(), other_uid())
    senv.run.symlink_to(theirs)
    proc, took = timed(senv, "start", "s", "--", "sleep", "30")
    line = one_line(proc)
    assert f"{senv.run} is a symlink" in line
    assert took < 5


def test_home_of_another_user_is_one_line_from_the_daemon_and_the_cli(superv_env: SupervEnv) -> None:
    # Before: 'superv daemon' died with an uncaught PathError traceback.
    senv = superv_env
    senv.home.mkdir(mode=0o700)
    os.chown(senv.home, other_uid(), other_uid())
    daemon = subprocess.run([sys.executable, "-m", "supervisor", "daemon"], env=senv.env,
                            capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    assert f"{senv.home} belongs to uid {other_uid()}" in one_line(daemon)
    proc, took = timed(senv, "ls")
    assert f"{senv.home} belongs to uid" in one_line(proc)
    assert took < 5


def test_a_64_character_name_works_under_a_long_runtime_dir(superv_env: SupervEnv) -> None:
    # Before: a 64-character name needed a socket path over sun_path's 107 bytes here.
    senv = superv_env
    long_run = senv.root / ("r" * (70 - len(str(senv.root))))
    senv.env["SUPERV_RUNTIME_DIR"] = str(long_run)
    name = "n" * 64
    assert len(os.fsencode(long_run / "sessions" / f"{name}.sock")) > 107
    senv.superv("start", name, "--", sys.executable, "-c",
                "import sys\nfor line in sys.stdin: print('got', line.strip(), flush=True)", check=True)
    senv.superv("send", "--enter", name, "hello", check=True)
    wait_until(lambda: b"got hello" in (senv.session_dir(name) / "output.log").read_bytes(),
               message="the agent to answer")
    assert "got hello" in senv.superv("peek", name, check=True).stdout
    listed = senv.superv("ls", check=True).stdout
    assert name in listed and "running" in listed
    senv.superv("stop", name, check=True)


@pytest.fixture
def shared_session(superv_env: SupervEnv) -> SupervEnv:
    """A running session of ours, and our home readable up to its directory by others."""
    senv = superv_env
    senv.superv("start", "mine", "--", "sleep", "60", check=True)
    return senv


@pytest.mark.parametrize("command", [
    ["attach", "-r", "mine"], ["send", "mine", "hi"], ["kill", "mine"], ["peek", "mine"],
    ["logs", "mine"], ["export", "mine"], ["ls"], ["events"],
])
def test_another_user_gets_one_line_everywhere(shared_session: SupervEnv, command: list[str]) -> None:
    # Before: attach -r, send, kill, peek, logs and export were PermissionError tracebacks.
    senv = shared_session
    os.chmod(senv.root, 0o755)
    proc = run_as_other(senv.env, *command)
    line = one_line(proc)
    assert "permission denied" in line.lower() or "refused" in line, line
    assert "Traceback" not in proc.stderr


def test_refused_events_is_an_error_not_silence(shared_session: SupervEnv) -> None:
    # Before: the refusal's EPIPE landed in the CLI's "except BrokenPipeError: return 0".
    senv = shared_session
    for path in (senv.root, senv.run):
        os.chmod(path, 0o755)
    os.chmod(senv.run / "supervisor.sock", 0o666)
    for _ in range(5):  # the race between our send and the supervisor's close, several times
        proc = run_as_other(senv.env, "events")
        assert "refused" in one_line(proc), proc.stderr


def test_stdout_closed_by_its_reader_is_still_quiet(shared_session: SupervEnv) -> None:
    senv = shared_session
    reader, writer = socket.socketpair()
    reader.close()
    proc = subprocess.run([sys.executable, "-m", "supervisor", "ls"], env=senv.env, stdout=writer,
                          stderr=subprocess.PIPE, text=True, timeout=20)
    writer.close()
    assert proc.returncode == 0 and proc.stderr == ""


def test_huge_env_and_tail_are_usage_errors(superv_env: SupervEnv) -> None:
    senv = superv_env
    big = "x" * (120 * 1024)  # one argument may be at most 128 KiB (MAX_ARG_STRLEN)
    envs = [arg for i in range(10) for arg in ("--env", f"V{i}={big}")]
    proc = senv.superv("start", "big", *envs, "--", "true")
    assert "1 MiB" in one_line(proc, 2)
    assert not Path(senv.session_dir("big")).exists()
    proc = senv.superv("attach", "--tail", str(2**70), "big")
    assert "--tail" in one_line(proc, 2)
