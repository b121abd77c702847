"""The systemd user unit and the daemon's side of the notify protocol.

No systemd manager is started here (on these machines it would move processes between
cgroups): the unit is checked with ``systemd-analyze verify --user`` and the protocol by
binding our own ``NOTIFY_SOCKET`` (a path one and an abstract one) and reading what
``superv daemon`` sends to it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, SupervEnv, wait_until

from agent_worker import protocol as p
from agent_worker.client import Connection
from supervisor import service_unit

pytestmark = pytest.mark.timeout(60)

VENV_SUPERV = Path(sys.executable).parent / "superv"


# ---- the unit file ---------------------------------------------------------------------


def test_repository_unit_is_the_template() -> None:
    """systemd/superv.service is what 'service install' renders, with the placeholder."""
    assert (REPO / "systemd" / "superv.service").read_text() == service_unit.render_unit()


def verify(unit: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    runtime = tmp_path / "xdg-runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("DBUS_SESSION_BUS_ADDRESS",)}
    env["XDG_RUNTIME_DIR"] = str(runtime)
    return subprocess.run(
        ["systemd-analyze", "verify", "--user", str(unit)],
        env=env, capture_output=True, text=True, timeout=30,
    )


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_installed_unit_verifies_clean(superv_env: SupervEnv, tmp_path: Path) -> None:
    env = dict(superv_env.env, HOME=str(tmp_path / "home"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    proc = subprocess.run([str(VENV_SUPERV), "service", "install"], env=env,
                          capture_output=True, text=True, timeout=60)
    unit = tmp_path / "config" / "systemd" / "user" / "superv.service"
    assert unit.exists(), proc.stderr
    result = verify(unit, tmp_path)
    # verify exits 0 on unknown keys and only warns: any stderr is a failure.
    assert result.returncode == 0 and result.stderr == "", result.stderr
    text = unit.read_text()
    for line in ("Type=notify", "KillMode=process", "NotifyAccess=main", "Restart=on-failure",
                 "WatchdogSec=30s", "WantedBy=default.target"):
        assert f"\n{line}\n" in text


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_verify_catches_a_bad_key(tmp_path: Path) -> None:
    """The check above would see a mistake: verify reports an unknown key on stderr."""
    unit = tmp_path / "superv.service"
    unit.write_text(service_unit.render_unit([str(VENV_SUPERV), "daemon"]) + "Bogus=1\n")
    assert "Bogus" in verify(unit, tmp_path).stderr


def test_install_points_at_this_installation(superv_env: SupervEnv, tmp_path: Path) -> None:
    home, config = tmp_path / "home", tmp_path / "config"
    env = dict(superv_env.env, HOME=str(home), XDG_CONFIG_HOME=str(config))
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    env["XDG_RUNTIME_DIR"] = str(tmp_path / "no-runtime")  # no user manager to reach
    proc = subprocess.run([str(VENV_SUPERV), "service", "install"], env=env,
                          capture_output=True, text=True, timeout=60)
    unit = config / "systemd" / "user" / "superv.service"
    text = unit.read_text()
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert exec_start == f"ExecStart={VENV_SUPERV} daemon"
    # The test's home is pinned, so the service serves the home this CLI uses.
    assert f'Environment=SUPERV_HOME={superv_env.home}' in text
    assert not (home / ".config").exists()  # XDG_CONFIG_HOME honoured
    # No user manager here: one clear line, exit 1, the file left for the user.
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "could not enable superv.service" in proc.stderr
    assert str(unit) in proc.stdout


def test_install_run_as_module_uses_the_venv_script(superv_env: SupervEnv, tmp_path: Path) -> None:
    env = dict(superv_env.env, XDG_CONFIG_HOME=str(tmp_path / "config"))
    subprocess.run([sys.executable, "-m", "supervisor", "service", "install"], env=env,
                   capture_output=True, text=True, timeout=60)
    text = (tmp_path / "config" / "systemd" / "user" / "superv.service").read_text()
    assert f"\nExecStart={VENV_SUPERV} daemon\n" in text


def test_unit_quoting() -> None:
    text = service_unit.render_unit(["/opt/my tools/superv", "daemon"], {"SUPERV_HOME": "/a%b$c"})
    assert '\nExecStart="/opt/my tools/superv" daemon\n' in text
    assert '\nEnvironment=SUPERV_HOME=/a%%b$c\n' in text
    with pytest.raises(service_unit.ServiceError):
        service_unit.render_unit(["/bin/x\nExecStartPre=/bin/evil", "daemon"])


@pytest.mark.parametrize("action", ["status", "uninstall"])
def test_without_user_manager_one_line_exit_1(superv_env: SupervEnv, tmp_path: Path, action: str) -> None:
    config = tmp_path / "config"
    unit = config / "systemd" / "user" / "superv.service"
    unit.parent.mkdir(parents=True)
    unit.write_text(service_unit.render_unit([str(VENV_SUPERV), "daemon"]))
    env = dict(superv_env.env, XDG_CONFIG_HOME=str(config), XDG_RUNTIME_DIR=str(tmp_path / "none"))
    env.pop("DBUS_SESSION_BUS_ADDRESS", None)
    proc = subprocess.run([str(VENV_SUPERV), "service", action], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("superv: "), proc.stderr
    assert unit.exists()  # nothing removed when the manager could not stop it


# ---- sd_notify -------------------------------------------------------------------------


class NotifyListener:
    """What systemd does with NOTIFY_SOCKET: a datagram socket that collects messages."""

    def __init__(self, address: str, sock: socket.socket) -> None:
        self.address = address
        self.sock = sock
        self.messages: list[tuple[float, str]] = []

    def next(self, timeout: float = 15.0) -> str:
        self.sock.settimeout(timeout)
        data = self.sock.recv(4096).decode()
        self.messages.append((time.monotonic(), data))
        return data

    def until(self, prefix: str, timeout: float = 15.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            msg = self.next(max(0.01, deadline - time.monotonic()))
            if any(line.startswith(prefix) for line in msg.splitlines()):
                return msg


@contextlib.contextmanager
def notify_socket(kind: str, where: Path) -> Iterator[NotifyListener]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
    if kind == "path":
        path = where / "notify.sock"
        sock.bind(str(path))
        address = str(path)
    else:
        name = f"superv-test-{secrets.token_hex(6)}"
        sock.bind("\0" + name)
        address = "@" + name
    try:
        yield NotifyListener(address, sock)
    finally:
        sock.close()


def ping(senv: SupervEnv) -> dict:
    with Connection.open(senv.run / "supervisor.sock", timeout=5) as conn:
        conn.send(p.Request({"op": "ping"}))
        reply = conn.receive()
    assert isinstance(reply, p.Reply)
    return reply.body


def fields(message: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in message.splitlines() if "=" in line)


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_daemon_speaks_sd_notify(superv_env: SupervEnv, kind: str) -> None:
    senv = superv_env
    # One session already running, started by a supervisor outside "systemd", which we
    # then stop: the one under test adopts it and must count it in STATUS=.
    senv.superv("start", "one", "--", "sleep", "1000", check=True)
    old_pid = ping(senv)["pid"]
    os.kill(old_pid, signal.SIGTERM)
    wait_until(lambda: not (senv.run / "supervisor.sock").exists(), message="old supervisor exit")

    with notify_socket(kind, senv.root) as listener:
        env = dict(senv.env, NOTIFY_SOCKET=listener.address, WATCHDOG_USEC="400000")
        env.pop("WATCHDOG_PID", None)
        with open(senv.root / "daemon.err", "wb") as err:
            daemon = subprocess.Popen([sys.executable, "-m", "supervisor", "daemon"], env=env,
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=err)
        try:
            ready = listener.until("READY=1")
            got_ready = time.monotonic()
            # READY=1 means serving: the control socket answers at once.
            assert ping(senv)["pid"] == daemon.pid
            info = fields(ready)
            assert info["STATUS"] == "1 running, 1 sessions"
            assert info.get("MAINPID", str(daemon.pid)) == str(daemon.pid)
            assert all("READY=1" not in m for _, m in listener.messages[:-1])

            # Watchdog: every 0.2 s (half of 0.4 s).  Count over one second.
            while time.monotonic() - got_ready < 1.0:
                with contextlib.suppress(TimeoutError):
                    listener.next(timeout=max(0.01, 1.0 - (time.monotonic() - got_ready)))
            pings = [t for t, m in listener.messages if m == "WATCHDOG=1" and t >= got_ready]
            assert 3 <= len(pings) <= 15, listener.messages

            sessions = {s["name"]: s for s in _ls(senv)}
            worker = sessions["one"]["worker_pid"]
            assert sessions["one"]["state"] == "running" and worker

            daemon.send_signal(signal.SIGTERM)
            listener.until("STOPPING=1")
            assert daemon.wait(timeout=15) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
    # The worker outlives the supervisor's SIGTERM, and still serves its session.
    assert Path(f"/proc/{worker}").exists()
    with Connection.open(senv.run / "sessions" / "one.sock", timeout=5):
        pass


def _ls(senv: SupervEnv) -> list[dict]:
    import json

    return json.loads(senv.superv("ls", "--json", check=True).stdout)


def test_no_watchdog_for_another_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    from supervisor import sd_notify

    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert sd_notify.watchdog_interval() is None
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sd_notify.watchdog_interval() == pytest.approx(0.2)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sd_notify.notify("READY=1") is False


def test_a_notify_socket_nobody_reads_never_blocks_the_daemon(superv_env: SupervEnv) -> None:
    """systemd busy (or gone): the kernel queue of NOTIFY_SOCKET is full (10 datagrams by
    default).  The daemon must keep serving and still exit on SIGTERM, not hang in send."""
    senv = superv_env
    with notify_socket("abstract", senv.root) as listener:
        # Fill the receiver's queue before the daemon even starts, and never read it.
        filler = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            while True:
                filler.sendto(b"X=1", "\0" + listener.address[1:])
        filler.close()
        env = dict(senv.env, NOTIFY_SOCKET=listener.address, WATCHDOG_USEC="100000")
        env.pop("WATCHDOG_PID", None)
        daemon = subprocess.Popen([sys.executable, "-m", "supervisor", "daemon"], env=env,
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: (senv.run / "supervisor.sock").exists(), timeout=20,
                       message="the control socket")
            assert wait_until(lambda: _ping_or_none(senv), timeout=20)["pid"] == daemon.pid
            senv.superv("start", "s", "--", "sleep", "1000", check=True)  # saves, STATUS=...
            assert ping(senv)["sessions"] == 1
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=15) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()


def _ping_or_none(senv: SupervEnv) -> dict | None:
    try:
        return ping(senv)
    except OSError:
        return None
