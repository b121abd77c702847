"""A real OpenSSH ``sshd`` on 127.0.0.1 for tests, with its own keys and client config.

:class:`SshServer` starts ``/usr/sbin/sshd -D -e -f CONFIG`` on a free port with a fresh
ed25519 host key, an ``authorized_keys`` holding a client key it generates, and
``SetEnv`` lines that give every session our PATH (the venv's ``bin`` first, so ``superv``
is the checkout's), ``SUPERV_HOME``, ``SUPERV_RUNTIME_DIR`` and ``PYTHONPATH``.

Next to it, it writes what a laptop would have in ``~/.ssh``: a ``known_hosts`` with the
host key under ``[127.0.0.1]:PORT`` and an ssh ``config`` with the alias ``box`` (and
``wrongkey``, whose key sshd does not accept, and ``closed``, a port nobody listens on).  The
client under test reads them through ``SUPERV_SSH_CONFIG`` (see :attr:`client_env`);
OpenSSH's own ``ssh`` reads them through ``-F`` (see :meth:`ssh_argv`).

It also finds the per-connection ``sshd`` processes (the listener's children, one per
client connection) so tests can kill or freeze a connection from the server side.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from agent_worker.procfs import read_stat

SSHD = "/usr/sbin/sshd"
SSH_KEYGEN = shutil.which("ssh-keygen") or "/usr/bin/ssh-keygen"
REPO = Path(__file__).resolve().parent.parent
VENV_BIN = REPO / ".venv" / "bin"
ALIAS = "box"


class SshdError(RuntimeError):
    """sshd could not be started: the message says why (a test must fail, not skip)."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def keygen(path: Path, comment: str) -> str:
    """Create an ed25519 key pair at ``path``; return the public key line."""
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        timeout=30,
    )
    return path.with_suffix(".pub").read_text().strip()


def _ppid(pid: int) -> int | None:
    stat = read_stat(pid)
    return stat.ppid if stat else None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _ppid(int(entry)) == pid:
            found.append(int(entry))
    return sorted(found)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, parents before children."""
    parent_of = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _ppid(int(entry))
            if parent is not None:
                parent_of[int(entry)] = parent
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop(0)
        kids = sorted(p for p, parent in parent_of.items() if parent == current)
        found.extend(kids)
        frontier.extend(kids)
    return found


def signal_all(pids: Iterable[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signum)


class SshServer:
    """One sshd and the client-side files that trust it.  Use :meth:`start`, :meth:`stop`."""

    def __init__(self, root: Path, session_env: dict[str, str], path: str | None = None) -> None:
        self.root = root
        self.session_env = session_env
        self.path = path or f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin"
        self.port = 0
        self.closed_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_lines: list[str] = []
        self._listening = threading.Event()
        self.host_pub = ""
        self.client_key = root / "client_ed25519"
        self.other_key = root / "other_ed25519"  # a key sshd does not accept
        self.known_hosts = root / "known_hosts"
        self.config = root / "ssh_config"
        self.box_home = root / "box-home"  # the remote user's HOME in every session

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> SshServer:
        if not os.access(SSHD, os.X_OK):
            raise SshdError(f"{SSHD} is missing: install openssh-server to run these tests")
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privsep directory
        self.root.mkdir(parents=True, exist_ok=True)
        host_key = self.root / "host_ed25519"
        self.host_pub = keygen(host_key, "superv-test-host")
        client_pub = keygen(self.client_key, "superv-test-client")
        keygen(self.other_key, "superv-test-other")
        (self.root / "authorized_keys").write_text(client_pub + "\n")
        for attempt in range(5):
            self.port = _free_port()
            self._write_server_config(host_key)
            if self._spawn():
                break
            if attempt == 4:
                raise SshdError("sshd did not start: " + " | ".join(self.log_lines[-5:]))
        self._write_client_files()
        return self

    def _write_server_config(self, host_key: Path) -> None:
        # HOME: the box's user is a fresh one, whose shell reads no startup file of the
        # machine's real user.  (root's .bashrc here runs 'pyenv init', which waits up to
        # 60 s for pyenv's rehash lock; a rehash killed with its session leaves that lock
        # behind, and every later ssh session, in every test, started a minute late.)
        # SetEnv overrides what sshd sets itself, HOME included.
        self.box_home.mkdir(exist_ok=True)
        env = {"PATH": self.path, "HOME": str(self.box_home), **self.session_env}
        # SetEnv takes NAME=VALUE words; quote values so a path with spaces survives.
        set_env = " ".join(f'"{key}={value}"' for key, value in env.items())
        (self.root / "sshd_config").write_text(
            f"""\
ListenAddress 127.0.0.1:{self.port}
HostKey {host_key}
AuthorizedKeysFile {self.root / "authorized_keys"}
PidFile {self.root / "sshd.pid"}
UsePAM no
StrictModes no
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PrintMotd no
PrintLastLog no
UseDNS no
MaxStartups 200
MaxSessions 50
LogLevel INFO
SetEnv {set_env}
"""
        )

    def _spawn(self) -> bool:
        self._listening.clear()
        self.log_lines = []
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(self.root / "sshd_config")],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        reader = threading.Thread(target=self._read_log, args=(self.proc,), daemon=True)
        reader.start()
        # sshd says "Server listening on ..." once its socket is bound: wait for that line
        # (an event), not for a guessed delay.
        self._listening.wait(timeout=15)
        if self._listening.is_set():
            return True
        self.proc.kill()
        self.proc.wait(timeout=5)
        return False

    def _read_log(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.log_lines.append(line)
            if "Server listening on" in line:
                self._listening.set()
        self._listening.set()  # sshd died: wake the starter, which checks why

    def _write_client_files(self) -> None:
        # A port nobody listens on, for "host unreachable" (refused at once on loopback).
        self.closed_port = _free_port()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {self.host_pub}\n")
        self.config.write_text(
            f"""\
Host {ALIAS}
    HostName 127.0.0.1
    Port {self.port}
    User {_user()}
    IdentityFile {self.client_key}
    IdentitiesOnly yes
    UserKnownHostsFile {self.known_hosts}
    StrictHostKeyChecking yes
    BatchMode yes

Host closed
    HostName 127.0.0.1
    Port {self.closed_port}
    User {_user()}
    IdentityFile {self.client_key}
    IdentitiesOnly yes
    UserKnownHostsFile {self.known_hosts}
    ConnectTimeout 5

Host wrongkey
    HostName 127.0.0.1
    Port {self.port}
    User {_user()}
    IdentityFile {self.other_key}
    IdentitiesOnly yes
    UserKnownHostsFile {self.known_hosts}
    StrictHostKeyChecking yes
    BatchMode yes
"""
        )

    def stop(self) -> None:
        """Kill sshd and everything below it (per-connection sshds, their commands)."""
        if self.proc is None:
            return
        below = descendants(self.proc.pid)
        signal_all([self.proc.pid, *below], signal.SIGKILL)
        signal_all(below, signal.SIGCONT)  # a stopped process dies only once continued
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.proc = None

    # ------------------------------------------------------------- for the tests

    @property
    def client_env(self) -> dict[str, str]:
        """Environment for the client under test: our ssh config, and no ssh-agent."""
        return {"SUPERV_SSH_CONFIG": str(self.config)}

    def ssh_argv(self, *remote: str, tty: bool = False) -> list[str]:
        """OpenSSH's own client, with the same config and keys."""
        argv = ["ssh", "-F", str(self.config)]
        if tty:
            argv.append("-tt")
        return [*argv, ALIAS, *remote]

    def connections(self) -> list[int]:
        """Per-connection sshd processes: the listener's children (one per connection)."""
        if self.proc is None:
            return []
        return [pid for pid in children(self.proc.pid) if "sshd" in _cmdline(pid)]

    def connection_tree(self, pid: int) -> list[int]:
        """A per-connection sshd and the sshd processes below it (its privsep child)."""
        return [pid, *(p for p in descendants(pid) if _cmdline(p).startswith("sshd"))]

    def wait_connections(self, count: int = 1, timeout: float = 15.0) -> list[int]:
        deadline = time.monotonic() + timeout
        while True:
            found = self.connections()
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"expected {count} ssh connection(s), found {found}; sshd log: "
                    + " | ".join(self.log_lines[-5:])
                )
            time.sleep(0.01)


def _user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name
