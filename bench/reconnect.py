"""Reconnect time after a dropped SSH connection (superv only).

A loopback OpenSSH ``sshd`` (its own host key, authorized_keys and client config, on
127.0.0.1), a superv session printing a numbered, time-stamped line every 10 ms, and
``superv attach box:NAME`` in a terminal we own.  We then kill the per-connection
``sshd`` child (the server side of the link drops at once, as on a server restart or a
NAT reset) and time from the kill until the first line the session printed *after* the
kill is drawn on the client's terminal: the user's "it is live again" moment.  This is
repeated a few times on the same client.

Verified: the numbered lines drawn from the first drop to the end are consecutive, with
none missing and none shown twice, across every reconnect.

Peers: ``ssh -t box tmux attach`` has no reconnect of its own (the user reruns it), and
mosh / Eternal Terminal are not installed here, so this row compares with nothing.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import time
from pathlib import Path

from bench.harness import (
    REPO,
    BenchError,
    Config,
    Result,
    Terminal,
    cmdline,
    log,
    ppid,
    visible_text,
)
from bench.hosts import Host, Superv

SSHD = "/usr/sbin/sshd"
STAMPED = re.compile(rb"L(\d{9}) (\d+\.\d{6})\r?\n")
# Prints "L<n> <unix time>" every 10 ms, flushing each line.
PRINTER = (
    "import sys, time\n"
    "i = 0\n"
    "while True:\n"
    "    i += 1\n"
    "    sys.stdout.write('L%09d %.6f\\n' % (i, time.time())); sys.stdout.flush()\n"
    "    time.sleep(0.01)\n"
)


def keygen(path: Path) -> str:
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=30,
    )
    return path.with_suffix(".pub").read_text().strip()


class Sshd:
    """A throwaway sshd on 127.0.0.1 and the client files (config, known_hosts) for it."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.root = root
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privsep directory
        host_pub = keygen(root / "host_key")
        (root / "authorized_keys").write_text(keygen(root / "client_key") + "\n")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        (root / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1:{self.port}\nHostKey {root / 'host_key'}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\nPidFile {root / 'sshd.pid'}\n"
            "UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPrintMotd no\n"
            "UseDNS no\nLogLevel ERROR\n"
        )
        (root / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub}\n")
        user = os.environ.get("USER") or "root"
        (root / "ssh_config").write_text(
            f"Host box\n  HostName 127.0.0.1\n  Port {self.port}\n  User {user}\n"
            f"  IdentityFile {root / 'client_key'}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {root / 'known_hosts'}\n"
        )
        self.proc = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", str(root / "sshd_config")],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=(root / "sshd.log").open("wb"),
        )

        def listening() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", self.port)) == 0

        deadline = time.monotonic() + 10
        while not listening():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise BenchError(f"sshd did not start: {(root / 'sshd.log').read_text()[-300:]}")
            time.sleep(0.02)

    def connections(self) -> list[int]:
        """The per-connection sshd processes (the listener's children)."""
        return [
            int(e)
            for e in os.listdir("/proc")
            if e.isdigit() and ppid(int(e)) == self.proc.pid and "sshd" in " ".join(cmdline(int(e)))
        ]

    def close(self) -> None:
        for pid in [*self.connections(), self.proc.pid]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


def stamped(term: Terminal, start: int = 0) -> list[tuple[int, float]]:
    return [(int(n), float(t)) for n, t in STAMPED.findall(visible_text(bytes(term.buf[start:])))]


def measure(host: Superv, sshd: Sshd, drops: int) -> tuple[list[float], str]:
    env = dict(host.env)
    env["SUPERV_SSH_CONFIG"] = str(sshd.root / "ssh_config")
    env["SUPERV_KNOWN_HOSTS"] = str(sshd.root / "known_hosts")
    # The box's superv, with this run's home (the same machine, over the loopback sshd).
    env["SUPERV_REMOTE_COMMAND"] = (
        f"env SUPERV_HOME={host.home} SUPERV_RUNTIME_DIR={host.dir / 'run'} "
        f"PYTHONPATH={REPO} BENCH_TAG={host.tag} {' '.join(host.superv())}"
    )
    with Terminal([*host.superv(), "attach", "box:rc"], env, cwd=str(host.dir)) as term:
        term.read_until(STAMPED, 30, what="the session's lines over ssh")
        term.read_until(STAMPED, 5, start=len(term.buf))
        first_drop = len(term.buf)
        times = []
        for _ in range(drops):
            term.read_until(STAMPED, 10, start=len(term.buf), what="lines before a drop")
            conns = sshd.connections()
            if not conns:
                raise BenchError("no per-connection sshd process to kill")
            killed_at = time.time()
            t0 = time.monotonic()
            for pid in conns:
                os.kill(pid, signal.SIGKILL)
            mark = len(term.buf)
            deadline = t0 + 30
            while not any(t > killed_at for _, t in stamped(term, max(0, mark - 64))):
                if time.monotonic() > deadline or term.eof:
                    raise BenchError(f"no new line 30 s after the drop: {bytes(term.buf[-200:])!r}")
                term.read_some(0.02)
            times.append(time.monotonic() - t0)
            time.sleep(0.3)  # let the catch-up finish before the next drop
        term.read_some(0.2)
        numbers = [n for n, _ in stamped(term, first_drop)]
    bad = [(a, b) for a, b in itertools.pairwise(numbers) if b != a + 1]
    if not numbers or bad:
        raise BenchError(f"lines not consecutive across reconnects: {bad[:5]}")
    return times, f"{len(numbers)} lines consecutive across {drops} drops (no loss, no repeat)"


def run(cfg: Config, hosts: list[type[Host]]) -> list[Result]:
    result = Result("reconnect over ssh", "superv", None, "s", comparable=False)
    if Superv not in hosts:
        return []
    if not (REPO / "supervisor" / "remote_attach.py").exists():
        result.skipped, result.note = True, "not yet measured: supervisor/remote_attach.py missing"
        return [result]
    if why := Superv.unavailable() or (None if os.access(SSHD, os.X_OK) else "no sshd"):
        result.skipped, result.note = True, why
        return [result]
    if not shutil.which("ssh-keygen"):
        result.skipped, result.note = True, "ssh-keygen is not installed"
        return [result]
    log("reconnect over ssh: superv")
    drops = 3 if cfg.quick else 10
    sshd = None
    try:
        with Superv(cfg.scratch) as host:
            root = host.dir / "ssh"
            root.mkdir()
            sshd = Sshd(root, host.env)
            host.start("rc", ["python3", "-c", PRINTER])
            times, result.verified = measure(host, sshd, drops)
    except (BenchError, OSError, subprocess.SubprocessError) as exc:
        result.ok, result.note = False, str(exc)[:300]
        return [result]
    finally:
        if sshd:
            sshd.close()
    result.value = statistics.median(times)
    result.detail = f"{drops} drops: " + ", ".join(f"{t * 1000:.0f}" for t in times) + " ms"
    return [result]
