"""Reconnect time after a dropped SSH connection, and after an outage (superv only).

A loopback OpenSSH ``sshd`` (its own host key, authorized_keys and client config, on
127.0.0.1), a superv session printing a numbered, time-stamped line every 10 ms, and
``superv attach box:NAME`` in a terminal we own.

- **Killed connection**: we kill the per-connection ``sshd`` child (the server side of
  the link drops at once, as on a server restart or a NAT reset) and time from the kill
  until the first line the session printed *after* the kill is drawn on the client's
  terminal: the user's "it is live again" moment.
- **Outage**: the client reaches sshd through :class:`bench.tcp_proxy.LinkProxy`, which
  takes the link down for a few seconds (longer than the keepalives take to declare it
  dead) and brings it back, either as a ``blackhole`` (packets lost: the usual Wi-Fi or
  mobile drop) or ``refuse`` (every connection reset: the path is gone).  We time from
  the link coming back until the first resumed byte (the first line not yet drawn; the
  lines printed during the outage come first, from the log) and until the first line
  printed after the link came back ("live").

Each is repeated a few times on the same client.  Verified: the numbered lines drawn
from the first outage to the end are consecutive, with none missing and none shown
twice, across every reconnect.

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
from bench.tcp_proxy import LinkProxy

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
    """A throwaway sshd on 127.0.0.1 and the client files (config, known_hosts) for it.

    ``session_env`` is given to every ssh session through ``SetEnv`` (a box whose own
    ``PATH`` and ``SUPERV_HOME`` are those of the bench), as a user's box has them.
    """

    def __init__(self, root: Path, env: dict[str, str], session_env: dict[str, str] | None = None) -> None:
        self.root = root
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privsep directory
        self.host_pub = keygen(root / "host_key")
        (root / "authorized_keys").write_text(keygen(root / "client_key") + "\n")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        # One SetEnv line (sshd uses the first): NAME=VALUE words, quoted so that a value
        # with spaces survives.
        session_env = {"HOME": str(root / "box-home"), **(session_env or {})}
        set_env = " ".join(f'"{k}={v}"' for k, v in session_env.items())
        (root / "sshd_config").write_text(
            f"ListenAddress 127.0.0.1:{self.port}\nHostKey {root / 'host_key'}\n"
            f"AuthorizedKeysFile {root / 'authorized_keys'}\nPidFile {root / 'sshd.pid'}\n"
            "UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPrintMotd no\n"
            "UseDNS no\nLogLevel ERROR\n"
            # A HOME of its own: the remote shell reads none of this machine's startup
            # files (root's runs 'pyenv init', whose rehash can wait a minute for a lock
            # a killed session left behind; see tests/sshd.py), so the figures are
            # superv's, not this machine's .bashrc's.
            f"SetEnv {set_env}\n"
        )
        (root / "box-home").mkdir(exist_ok=True)
        (root / "known_hosts").write_text("")
        (root / "ssh_config").write_text("")
        self.add_alias("box", self.port)
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

    def add_alias(self, alias: str, port: int) -> None:
        """``alias`` reaches this sshd through 127.0.0.1:``port`` (a proxy in front of it)."""
        user = os.environ.get("USER") or "root"
        with (self.root / "known_hosts").open("a") as known:
            known.write(f"[127.0.0.1]:{port} {self.host_pub}\n")
        with (self.root / "ssh_config").open("a") as config:
            config.write(
                f"Host {alias}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n"
                f"  IdentityFile {self.root / 'client_key'}\n  IdentitiesOnly yes\n"
                f"  UserKnownHostsFile {self.root / 'known_hosts'}\n"
            )

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


# The client's status line ("reconnecting…", the only thing --exact adds): drawn on the
# bottom row between a cursor save and restore.  It may come between two halves of a line
# (a frame may end anywhere), where the terminal shows the line whole; so must we.
STATUS_LINE = re.compile(rb"\x1b7.*?\x1b8", re.S)


def stamped(term: Terminal, start: int = 0) -> list[tuple[int, float]]:
    shown = visible_text(STATUS_LINE.sub(b"", bytes(term.buf[start:])))
    return [(int(n), float(t)) for n, t in STAMPED.findall(shown)]


def client_env(host: Superv, sshd: Sshd) -> dict[str, str]:
    env = dict(host.env)
    env["SUPERV_SSH_CONFIG"] = str(sshd.root / "ssh_config")
    env["SUPERV_KNOWN_HOSTS"] = str(sshd.root / "known_hosts")
    # The box's superv, with this run's home (the same machine, over the loopback sshd).
    env["SUPERV_REMOTE_COMMAND"] = (
        f"env SUPERV_HOME={host.home} SUPERV_RUNTIME_DIR={host.dir / 'run'} "
        f"PYTHONPATH={REPO} BENCH_TAG={host.tag} {' '.join(host.superv())}"
    )
    return env


def consecutive(term: Terminal, start: int, what: str) -> str:
    numbers = [n for n, _ in stamped(term, start)]
    bad = [(a, b) for a, b in itertools.pairwise(numbers) if b != a + 1]
    if not numbers or bad:
        raise BenchError(f"lines not consecutive across reconnects: {bad[:5]}")
    return f"{len(numbers)} lines consecutive across {what} (no loss, no repeat)"


def measure(host: Superv, sshd: Sshd, drops: int) -> tuple[list[float], str]:
    env = client_env(host, sshd)
    # --exact: every byte once, in order, which is what ``consecutive`` checks (a plain
    # attach may be shown the present instead: a skip, or the repaint after the status line).
    with Terminal([*host.superv(), "attach", "--exact", "box:rc"], env, cwd=str(host.dir)) as term:
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
        verified = consecutive(term, first_drop, f"{drops} drops")
    return times, verified


def measure_outages(
    host: Superv, sshd: Sshd, mode: str, rounds: int, outage: float
) -> tuple[list[float], list[float], str]:
    """Per round: link back -> first resumed byte, and link back -> first new line."""
    proxy = LinkProxy(sshd.port)
    alias = f"via-{mode}-{outage:g}"
    sshd.add_alias(alias, proxy.port)
    resumed, live = [], []
    try:
        argv = [*host.superv(), "attach", "--exact", f"{alias}:rc"]  # as in measure
        with Terminal(argv, client_env(host, sshd), cwd=str(host.dir)) as term:
            term.read_until(STAMPED, 30, what="the session's lines through the proxy")
            first = len(term.buf)
            for _ in range(rounds):
                term.read_until(STAMPED, 10, start=len(term.buf), what="lines before an outage")
                proxy.cut(mode)
                end = time.monotonic() + outage
                while (left := end - time.monotonic()) > 0:  # the outage's length
                    term.read_some(min(left, 0.1))
                shown = max((n for n, _ in stamped(term, max(0, len(term.buf) - 4096))), default=0)
                back_at = time.time()
                t0 = time.monotonic()
                proxy.restore()
                mark = max(0, len(term.buf) - 64)
                deadline = t0 + 30
                got_resumed = None
                while True:
                    lines = stamped(term, mark)
                    if got_resumed is None and any(n > shown for n, _ in lines):
                        got_resumed = time.monotonic() - t0
                    if any(t > back_at for _, t in lines):
                        break
                    if time.monotonic() > deadline or term.eof:
                        raise BenchError(
                            f"no new line 30 s after a {mode} outage: {bytes(term.buf[-200:])!r}"
                        )
                    term.read_some(0.005)
                live.append(time.monotonic() - t0)
                resumed.append(got_resumed if got_resumed is not None else live[-1])
                time.sleep(0.3)  # let the catch-up finish before the next outage
            term.read_some(0.2)
            verified = consecutive(term, first, f"{rounds} {mode} outages of {outage:g} s")
    finally:
        proxy.close()
    return resumed, live, verified


def run(cfg: Config, hosts: list[type[Host]]) -> list[Result]:
    result = Result("reconnect over ssh", "superv", None, "s", comparable=False)
    # (how the link goes down, for how long): longer than the keepalives take to declare a
    # silent link dead (about 4 s), so the client has to reconnect, not just carry on.
    kinds = [("blackhole", 5.0), ("refuse", 5.0)] if cfg.quick else [
        ("blackhole", 5.0), ("blackhole", 20.0), ("refuse", 5.0), ("refuse", 20.0)]
    outages = {
        kind: Result(f"outage over ssh ({kind[0]} {kind[1]:g} s)", "superv", None, "s",
                     comparable=False)
        for kind in kinds
    }
    every = [result, *outages.values()]
    if Superv not in hosts:
        return []
    if not (REPO / "supervisor" / "remote_attach.py").exists():
        result.skipped, result.note = True, "not yet measured: supervisor/remote_attach.py missing"
        return [result]
    if why := Superv.unavailable() or (None if os.access(SSHD, os.X_OK) else "no sshd"):
        for each in every:
            each.skipped, each.note = True, why
        return every
    if not shutil.which("ssh-keygen"):
        for each in every:
            each.skipped, each.note = True, "ssh-keygen is not installed"
        return every
    log("reconnect over ssh: superv")
    drops = 3 if cfg.quick else 10
    rounds = 1 if cfg.quick else 5
    sshd = None
    current = result
    try:
        with Superv(cfg.scratch) as host:
            root = host.dir / "ssh"
            root.mkdir()
            sshd = Sshd(root, host.env)
            host.start("rc", ["python3", "-c", PRINTER])
            times, result.verified = measure(host, sshd, drops)
            result.value = statistics.median(times)
            result.detail = f"{drops} drops: " + ", ".join(f"{t * 1000:.0f}" for t in times) + " ms"
            for (mode, outage), row in outages.items():
                current = row
                log(f"{row.workload}: superv")
                resumed, live, row.verified = measure_outages(host, sshd, mode, rounds, outage)
                row.value = statistics.median(resumed)
                row.detail = (
                    f"{rounds} outages, link back -> first resumed byte "
                    + ", ".join(f"{t * 1000:.0f}" for t in resumed)
                    + " ms; -> first new line "
                    + ", ".join(f"{t * 1000:.0f}" for t in live)
                    + " ms"
                )
    except (BenchError, OSError, subprocess.SubprocessError) as exc:
        current.ok, current.note = False, str(exc)[:300]
    finally:
        if sshd:
            sshd.close()
    return [row for row in every if row.value is not None or not row.ok]
