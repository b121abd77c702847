"""Coming back after a reboot: every process gone, every file intact.

A "reboot" here is SIGKILL of the supervisor, every worker and every agent, plus removing
the runtime directory (it is a tmpfs under /run/user in real life).  Then any superv
command starts the supervisor again, which must list every session that was running as
``interrupted`` (logs intact), restart those with ``--restart always``, and let
``superv resume`` run the others again with a marker line in the same log.  Stale files
from the previous boot (sockets, the lock file, a pid now used by another process) must
neither block anything nor make a dead session look alive.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import SupervEnv, wait_until

from agent_worker.procfs import is_running, process_start_time

pytestmark = pytest.mark.timeout(120)


def agent(tag: str) -> list[str]:
    # Prints one line, then waits: a long-running agent that has said something.
    return ["sh", "-c", f"echo before-{tag}; exec sleep 1000"]


def sessions(senv: SupervEnv) -> dict[str, dict[str, Any]]:
    out = senv.superv("ls", "--json", check=True).stdout
    return {s["name"]: s for s in json.loads(out)}


def log_of(senv: SupervEnv, name: str) -> bytes:
    try:
        return (senv.session_dir(name) / "output.log").read_bytes()
    except FileNotFoundError:
        return b""


def alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie counts as gone: it runs nothing)."""
    return is_running(pid)


def reboot(senv: SupervEnv) -> None:
    """Everything this home started dies at once; only the files on disk stay."""
    pids = senv.pids()
    assert pids, "nothing was running before the reboot"
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not any(alive(p) for p in pids), message="every process to die")
    shutil.rmtree(senv.run, ignore_errors=True)


def stale_socket(path: Path) -> None:
    """Leave a socket file that nobody answers on, as a killed process leaves it."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()


def test_reboot_interrupts_restarts_and_resumes(superv_env: SupervEnv) -> None:
    senv = superv_env
    senv.superv("start", "plain", "--", *agent("plain"), check=True)
    senv.superv("start", "--restart", "always", "keeper", "--", *agent("keeper"), check=True)
    senv.superv("start", "--resume-cmd", "sh -c 'echo resumed-with-cmd; exec sleep 1000'",
                "resumable", "--", *agent("resumable"), check=True)
    names = ("plain", "keeper", "resumable")
    for name in names:
        wait_until(lambda n=name: f"before-{n}".encode() in log_of(senv, n), message=f"{name} output")
    before = {name: log_of(senv, name) for name in names}
    old = sessions(senv)
    old_keeper = old["keeper"]["worker_pid"]
    old_keeper_start = process_start_time(old_keeper)  # a pid may be reused; pid+start is not
    assert old_keeper_start is not None
    daemon_pid = int((senv.home / "supervisor.lock").read_text())

    reboot(senv)

    # What a previous boot leaves: the lock file naming a dead supervisor, and sockets
    # (if the runtime dir is on disk rather than a tmpfs) that nobody answers on.
    assert (senv.home / "supervisor.lock").read_text().strip() == str(daemon_pid)
    stale_socket(senv.run / "supervisor.sock")
    stale_socket(senv.run / "sessions" / "plain.sock")

    after = sessions(senv)  # starts the supervisor again
    assert set(after) == set(names)
    assert after["plain"]["state"] == "interrupted"
    assert after["resumable"]["state"] == "interrupted"
    assert after["keeper"]["state"] in ("interrupted", "starting", "running")
    for name in names:
        assert log_of(senv, name).startswith(before[name]), f"{name}'s log lost bytes"
        assert (senv.session_dir(name) / "state.json").exists()

    # --restart always: running again, in a new worker, with its output appended.
    def keeper_back() -> dict[str, Any] | None:
        s = sessions(senv)["keeper"]
        return s if s["state"] == "running" and s["worker_pid"] else None

    keeper = wait_until(keeper_back, timeout=20, message="keeper to be restarted")
    new_keeper = keeper["worker_pid"]
    assert alive(new_keeper), "the listed worker of keeper is not running"
    assert (new_keeper, process_start_time(new_keeper)) != (old_keeper, old_keeper_start), (
        "keeper is listed with its worker from before the reboot")
    wait_until(lambda: log_of(senv, "keeper").count(b"before-keeper\r\n") == 2, message="keeper rerun")
    assert b"[superv: restarted" in log_of(senv, "keeper")

    # resume: same log, a marker line, the resume command when there is one.  (The marker
    # names the command, so the agent's own output is matched with its line end.)
    senv.superv("resume", "plain", check=True)
    senv.superv("resume", "resumable", check=True)
    wait_until(lambda: log_of(senv, "plain").count(b"before-plain\r\n") == 2, message="plain rerun")
    wait_until(lambda: b"resumed-with-cmd\r\n" in log_of(senv, "resumable"), message="resume-cmd")
    for name in ("plain", "resumable"):
        log = log_of(senv, name)
        assert log.startswith(before[name])
        assert b"[superv: resumed: " in log[len(before[name]):]
    assert b"before-resumable\r\n" not in log_of(senv, "resumable")[len(before["resumable"]):]
    now = sessions(senv)
    assert all(now[n]["state"] == "running" for n in names), now
    # The stale socket was replaced by the resumed worker's own, which answers.
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    with probe:
        probe.connect(str(senv.run / "sessions" / "plain.sock"))


def test_pid_reused_by_another_process_is_not_alive(superv_env: SupervEnv) -> None:
    senv = superv_env
    senv.superv("start", "victim", "--", *agent("victim"), check=True)
    wait_until(lambda: b"before-victim" in log_of(senv, "victim"), message="victim output")
    reboot(senv)

    # After the reboot an unrelated process holds the worker's old pid: write its pid into
    # the registry and the snapshot, with the start time the old worker had (not its own).
    impostor = subprocess.Popen(["sleep", "1000"])
    try:
        real_start = process_start_time(impostor.pid)
        assert real_start is not None
        registry = json.loads((senv.home / "registry.json").read_text())
        for entry in registry["sessions"]:
            entry["worker_pid"], entry["worker_start"] = impostor.pid, real_start + 12345
        (senv.home / "registry.json").write_text(json.dumps(registry))
        state_path = senv.session_dir("victim") / "state.json"
        snap = json.loads(state_path.read_text())
        snap["worker_pid"], snap["worker_start"] = impostor.pid, real_start + 12345
        state_path.write_text(json.dumps(snap))
        (senv.session_dir("victim") / "state.json.prev").unlink(missing_ok=True)

        s = sessions(senv)["victim"]
        assert s["state"] == "interrupted"
        assert s["worker_pid"] is None
        assert impostor.poll() is None, "the supervisor touched an unrelated process"
        # It can be resumed: the impostor does not make it look running.
        senv.superv("resume", "victim", check=True)
        assert sessions(senv)["victim"]["state"] == "running"
        assert impostor.poll() is None
    finally:
        impostor.kill()
        impostor.wait()


def test_lock_file_of_a_dead_supervisor_does_not_block(superv_env: SupervEnv) -> None:
    senv = superv_env
    senv.home.mkdir(mode=0o700)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (senv.home / "supervisor.lock").write_text(f"{dead.pid}\n")
    stale_socket(senv.run / "supervisor.sock")
    assert sessions(senv) == {}
    pid = int((senv.home / "supervisor.lock").read_text())
    assert pid != dead.pid and alive(pid)


def test_zombie_worker_is_not_alive(superv_env: SupervEnv) -> None:
    """A killed worker nobody reaped yet (some container inits never reap) is dead."""
    from supervisor.registry import Entry

    child = subprocess.Popen(["sleep", "1000"])
    try:
        entry = Entry("z", worker_pid=child.pid,
                      worker_start=process_start_time(child.pid))
        assert entry.worker_alive()
        child.kill()
        # Not reaped yet: still has its pid and start time, and runs nothing.
        wait_until(lambda: not alive(child.pid), message="the child to become a zombie")
        assert process_start_time(child.pid) == entry.worker_start
        assert not entry.worker_alive()
    finally:
        child.kill()
        child.wait()
