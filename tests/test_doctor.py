"""``superv doctor``: finds what would kill or lose sessions, and passes when all is right.

``loginctl`` is replaced by a script on PATH (the box has no logind to ask), low disk is
simulated with ``SUPERV_DOCTOR_MIN_FREE_MB``, and logind's config is read from a
temporary directory in the unit tests of :mod:`supervisor.health`.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from conftest import SupervEnv, wait_until

from agent_worker import protocol as p
from agent_worker.procfs import read_stat
from supervisor import health

pytestmark = pytest.mark.timeout(60)


def fake_loginctl(senv: SupervEnv, script: str) -> None:
    """Put a ``loginctl`` running ``script`` (sh) first on this home's PATH."""
    bin_dir = senv.root / "bin"
    bin_dir.mkdir(exist_ok=True)
    tool = bin_dir / "loginctl"
    tool.write_text(f"#!/bin/sh\n{script}\n")
    tool.chmod(0o755)
    senv.env["PATH"] = f"{bin_dir}{os.pathsep}{senv.env.get('PATH', '')}"


def doctor(senv: SupervEnv, **env: str) -> tuple[int, dict[str, dict[str, Any]]]:
    saved = dict(senv.env)
    senv.env.update(env)
    try:
        proc = senv.superv("doctor", "--json")
    finally:
        senv.env.clear()
        senv.env.update(saved)
    checks = json.loads(proc.stdout)
    assert all(set(c) == {"name", "ok", "detail", "fix"} for c in checks)
    assert all(c["fix"] for c in checks if not c["ok"]), "every problem says what to do"
    return proc.returncode, {c["name"]: c for c in checks}


def test_healthy_box_passes(superv_env: SupervEnv) -> None:
    senv = superv_env
    fake_loginctl(senv, 'echo "Linger=yes"')
    senv.superv("ls", check=True)  # starts the supervisor, creates the private dirs
    code, checks = doctor(senv, SUPERV_DOCTOR_MIN_FREE_MB="1")
    for name in ("lingering", "runtime-dir", "state-dir", "disk", "supervisor",
                 "stale-sockets", "versions"):
        assert checks[name]["ok"], checks[name]
    assert "lingering is on" in checks["lingering"]["detail"]
    assert code == (0 if all(c["ok"] for c in checks.values()) else 1)
    human = senv.superv("doctor", "--json")  # same checks, and the plain form agrees
    plain = senv.superv("doctor")
    assert plain.returncode == human.returncode
    assert ("all checks passed" in plain.stdout) == (plain.returncode == 0)


def test_broken_box_fails_with_one_line_each(superv_env: SupervEnv) -> None:
    senv = superv_env
    fake_loginctl(senv, 'echo "Linger=no"')
    senv.superv("ls", check=True)
    pid = int((senv.home / "supervisor.lock").read_text())
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not Path(f"/proc/{pid}").exists() or b"Z" in _state(pid),
               message="the supervisor to die")
    senv.run.chmod(0o755)
    senv.env["SUPERV_DOCTOR_MIN_FREE_MB"] = str(10**9)
    senv.env["XDG_CONFIG_HOME"] = str(senv.root / "config")
    rules = senv.root / "config" / "superv" / "activity-rules.json"
    rules.parent.mkdir(parents=True, exist_ok=True)
    rules.write_text('{"generic": {"screen": [{"match": "(", "activity": "idle"}]}}')
    code, checks = doctor(senv)
    assert code == 1
    assert not checks["lingering"]["ok"]
    assert "enable-linger" in checks["lingering"]["fix"]
    assert not checks["runtime-dir"]["ok"] and "0755" in checks["runtime-dir"]["detail"]
    assert f"chmod 700 {senv.run}" in checks["runtime-dir"]["fix"]
    assert not checks["disk"]["ok"] and "MB free" in checks["disk"]["detail"]
    assert not checks["supervisor"]["ok"] and "not running" in checks["supervisor"]["detail"]
    assert not checks["activity-rules"]["ok"]  # ignored by every session: say so
    assert "generic.screen[0]" in checks["activity-rules"]["detail"]
    # doctor is read-only: it reports the mode, it does not start a supervisor to fix it.
    assert (senv.run.stat().st_mode & 0o777) == 0o755
    plain = senv.superv("doctor", timeout=30)
    fails = [line for line in plain.stdout.splitlines() if line.startswith("FAIL")]
    assert len(fails) >= 5 and all(" -> " in line for line in fails)


def _state(pid: int) -> bytes:
    stat = read_stat(pid)
    return stat.state.encode() if stat else b"X"


def test_lingering_unknown_says_it_could_not_check(superv_env: SupervEnv) -> None:
    fake_loginctl(superv_env, 'echo "Failed to connect to bus" >&2; exit 1')
    _, checks = doctor(superv_env)
    assert "could not check" in checks["lingering"]["detail"]


def test_stale_session_socket(superv_env: SupervEnv) -> None:
    senv = superv_env
    senv.superv("ls", check=True)
    stale = senv.run / "sessions" / "gone.sock"
    stale.parent.mkdir(mode=0o700, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(stale))
    sock.close()
    _, checks = doctor(senv)
    assert not checks["stale-sockets"]["ok"]
    assert "gone.sock" in checks["stale-sockets"]["detail"] and "rm " in checks["stale-sockets"]["fix"]
    stale.unlink()
    _, checks = doctor(senv)
    assert checks["stale-sockets"]["ok"]


def test_supervisor_of_another_version(superv_env: SupervEnv) -> None:
    """A supervisor left running from before an upgrade answers ping with its version."""
    senv = superv_env
    senv.run.mkdir(mode=0o700)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(senv.run / "supervisor.sock"))
    server.listen(4)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                decoder = p.Decoder()
                while decoder.next_message() is None:
                    data = conn.recv(65536)
                    if not data:
                        break
                    decoder.feed(data)
                conn.sendall(p.encode(p.Reply({"ok": True, "pid": 4242, "version": "0.0.1-old",
                                               "sessions": 0, "home": str(senv.home)})))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        _, checks = doctor(senv)
    finally:
        server.shutdown(socket.SHUT_RDWR)
        server.close()
        thread.join(timeout=5)
    assert not checks["supervisor"]["ok"]
    assert "0.0.1-old" in checks["supervisor"]["detail"]
    assert "restart" in checks["supervisor"]["fix"]


# ---- the checks as functions -----------------------------------------------------------


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_kill_user_processes_from_logind_config(tmp_path: Path) -> None:
    etc, lib = tmp_path / "etc", tmp_path / "lib"
    roots = (etc, lib)
    assert health.check_kill_user_processes(roots).ok  # no config: logind's default, no
    write(etc / "logind.conf", "[Login]\n#KillUserProcesses=yes\n")
    assert health.check_kill_user_processes(roots).ok
    write(lib / "logind.conf.d" / "10-vendor.conf", "[Login]\nKillUserProcesses=yes\n")
    check = health.check_kill_user_processes(roots)
    assert not check.ok and "10-vendor.conf" in check.detail and "KillUserProcesses=no" in check.fix
    # A later drop-in wins; /etc overrides a drop-in of the same name elsewhere.
    write(etc / "logind.conf.d" / "10-vendor.conf", "[Login]\nKillUserProcesses=no\n")
    assert health.check_kill_user_processes(roots).ok
    write(etc / "logind.conf.d" / "99-local.conf", "[Login]\nKillUserProcesses=true\n")
    assert not health.check_kill_user_processes(roots).ok
    from supervisor.service_unit import user_name

    write(etc / "logind.conf.d" / "99-local.conf",
          f"[Login]\nKillUserProcesses=yes\nKillExcludeUsers=root {user_name()}\n")
    assert health.check_kill_user_processes(roots).ok


def test_private_dir_problems(tmp_path: Path) -> None:
    d = tmp_path / "d"
    assert health.private_dir_problem(d) is None  # not there yet: created private later
    d.mkdir(mode=0o700)
    d.chmod(0o700)
    assert health.private_dir_problem(d) is None
    d.chmod(0o750)
    assert "0750" in (health.private_dir_problem(d) or "")
    f = tmp_path / "f"
    f.write_text("")
    assert "not a directory" in (health.private_dir_problem(f) or "")


def test_disk_threshold(superv_env: SupervEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPERV_HOME", str(superv_env.home))
    assert health.check_disk(threshold_mb=0).ok
    assert not health.check_disk(threshold_mb=10**9).ok
    monkeypatch.setenv("SUPERV_DOCTOR_MIN_FREE_MB", str(10**9))
    assert not health.check_disk().ok
    assert sys.version.split()[0] in health.check_versions().detail


def test_doctor_says_which_hot_path_the_workers_run(superv_env: SupervEnv) -> None:
    _, checks = doctor(superv_env)
    assert checks["hot-path"] == {"name": "hot-path", "ok": True, "fix": "",
                                  "detail": "the native lane, built and chosen"}
    _, checks = doctor(superv_env, SUPERV_HOT_PATH="python")
    assert checks["hot-path"]["ok"] and "SUPERV_HOT_PATH=python" in checks["hot-path"]["detail"]
    superv_env.env["SUPERV_HOT_PATH"] = "fast"
    bad = superv_env.superv("doctor")
    assert bad.returncode == 2  # a value it cannot use: one line, before anything runs
    assert bad.stderr == "superv: SUPERV_HOT_PATH='fast' is not usable: use native or python\n"
