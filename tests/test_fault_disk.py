"""Fault suite: a full disk, for real.

``SUPERV_HOME`` is a 4 MiB tmpfs (we mount one when allowed: root, or a user namespace),
filled to the last byte at seeded random moments while two sessions print, and emptied
again after a random outage.  During each outage the test makes the worker and the
supervisor write their own logs and snapshots too (a SIGHUP, an attach and detach, an
``ls``), so ``worker.log`` and ``supervisor.log`` are full as well.  Afterwards every
process is the one from before, every log is byte-exact, and each printing session
reported the outage (``log_write_failed``).

Where mounting is not permitted, the same run uses ``RLIMIT_FSIZE`` on the worker and the
supervisor instead (a file-size limit at the files' current sizes), and the test says so
in the fault figures (``SUPERV_FAULT_DISK=rlimit`` forces that mode).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import queue
import random
import resource
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import fault_frames as ff
import fault_report
import pytest
from attach_helpers import EPOLL_WAITS, ReadingAttach, lane_threads
from conftest import SupervEnv, wait_until
from ssh_fixtures import sshd, sshd_factory, superv_installed  # noqa: F401
from sshd import SshServer
from test_cli import EventStream, alive, lock_holder, script, sessions
from worker_helpers import PATTERN_FN, cooked, log_size, pattern, session_socket

from agent_worker import protocol as p
from agent_worker.activity.tracker import QUIET_AFTER
from agent_worker.client import Connection, ConnectionClosed

pytestmark = pytest.mark.timeout(180)

TMPFS_SIZE = 4 << 20
LINES = 4000  # 400 kB per session, printed over the outages
# Once the file argv[2] exists, prints LINES pattern lines, 20 every 10 ms, then waits: the
# test makes the file when it is ready to fill the disk, so the outages meet the printing
# however slowly the sessions and the event stream started.
PRINTER = PATTERN_FN + (
    "import os, sys, time\n"
    "n = int(sys.argv[1])\n"
    "while not os.path.exists(sys.argv[2]):\n"
    "    time.sleep(0.01)\n"
    "for i in range(0, n, 20):\n"
    "    sys.stdout.buffer.write(pattern(min(20, n - i), i)); sys.stdout.flush()\n"
    "    time.sleep(0.01)\n"
    "time.sleep(1000)\n"
)


def mount_tmpfs(where: Path) -> str | None:
    """Mount a small tmpfs at ``where``; None if done, else why it is not permitted."""
    if os.environ.get("SUPERV_FAULT_DISK") == "rlimit":
        return "SUPERV_FAULT_DISK=rlimit"
    where.mkdir(mode=0o700)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=0700", "tmpfs",
                           str(where)], capture_output=True, text=True)
    return None if proc.returncode == 0 else (proc.stderr.strip() or f"mount exited {proc.returncode}")


def disk_mode(refused: str | None) -> str:
    if refused is None:
        return "a 4 MiB tmpfs"
    why = "forced by" if refused.startswith("SUPERV_FAULT_DISK") else "mounting refused:"
    return f"RLIMIT_FSIZE ({why} {refused})"


class TmpfsDisk:
    """Fill the tmpfs to its last byte, and empty it again."""

    mode = "tmpfs"

    def __init__(self, home: Path) -> None:
        self.home = home
        self.fillers: list[Path] = []

    def fill(self) -> None:
        filler = self.home / f"filler-{len(self.fillers)}"
        self.fillers.append(filler)
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            refused = None
            for size in (1 << 16, 4096, 512, 1):  # big writes first, then down to one byte
                block = b"\0" * size
                try:
                    while True:
                        os.write(fd, block)
                except OSError as exc:
                    refused = exc
            # Full when the one-byte write was refused.  (Not "a write after it fails":
            # a worker's snapshot that failed meanwhile gives its temp file's pages back.)
            assert refused is not None and refused.errno == errno.ENOSPC, refused
        finally:
            os.close(fd)

    def slack(self, path: Path) -> int:
        """Bytes ``path`` may still grow by on the full disk: the rest of its last page,
        and a few pages that other files' failed writes give back while it is full."""
        block = os.statvfs(self.home).f_bsize
        return -path.stat().st_size % block + 8 * block

    def empty(self) -> None:
        for filler in self.fillers:
            filler.unlink(missing_ok=True)


class RlimitDisk:
    """The fallback: a file-size limit on the worker(s) and the supervisor."""

    mode = "RLIMIT_FSIZE"

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.saved = {pid: resource.prlimit(pid, resource.RLIMIT_FSIZE) for pid in pids}

    def fill(self) -> None:
        for pid, (_, hard) in self.saved.items():
            with contextlib.suppress(ProcessLookupError):  # a dead process is found afterwards
                resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, hard))  # no file may grow

    def empty(self) -> None:
        for pid, limits in self.saved.items():
            with contextlib.suppress(ProcessLookupError):
                resource.prlimit(pid, resource.RLIMIT_FSIZE, limits)

    def slack(self, path: Path) -> int:
        return 0  # no file may grow at all


@pytest.fixture
def small_home(superv_env: SupervEnv) -> Iterator[tuple[SupervEnv, str | None]]:
    refused = mount_tmpfs(superv_env.home)
    # Which ran, in the figures whether the test passes or not.
    fault_report.note(f"full disk: on {disk_mode(refused)}")
    try:
        yield superv_env, refused
    finally:
        if refused is None:
            for pid in superv_env.pids():  # nothing may hold the mount
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            wait_until(lambda: not any(alive(p) for p in superv_env.pids()), message="all dead")
            subprocess.run(["umount", "-l", str(superv_env.home)], check=False)


def log_path(senv: SupervEnv, name: str) -> Path:
    return senv.session_dir(name) / "output.log"


def poke(senv: SupervEnv, name: str, worker: int, rng: random.Random) -> None:
    """Make the worker and the supervisor write their own logs and snapshots."""
    what = rng.randrange(3)
    if what == 0:
        with contextlib.suppress(ProcessLookupError):  # a dead worker is found afterwards
            os.kill(worker, signal.SIGHUP)  # the worker persists and logs it
    elif what == 1:
        sock = session_socket(senv, name)
        with contextlib.suppress(OSError, ConnectionClosed), Connection.open(sock) as conn:
            conn.hello(p.Hello(p.Start.TAIL, 0, read_only=True))  # attached, snapshot, log line
            conn.send(p.Detach())
    else:
        senv.superv("ls", timeout=30)  # must answer, full disk or not


@pytest.mark.parametrize("attached", [False, True], ids=["detached", "attached"])
def test_full_disk_at_random_moments_loses_nothing(small_home: tuple[SupervEnv, str | None],
                                                   attached: bool) -> None:
    senv, refused = small_home
    rng = random.Random(ff.seed() + 10)
    argv = script(senv, "printer", PRINTER)  # the script lives outside the home
    go = senv.root / "go"
    names = ("printer", "bystander")
    for name in names:
        senv.superv("start", name, "--", *argv, str(LINES), str(go), check=True)
    infos = {name: sessions(senv)[name] for name in names}
    supervisor = lock_holder(senv)
    events = EventStream(senv)
    attach = ReadingAttach(senv, "printer") if attached else None
    try:
        events.subscribe("bystander")
        disk = RlimitDisk([supervisor] + [i["worker_pid"] for i in infos.values()]) \
            if refused else TmpfsDisk(senv.home)
        outages = 3 * ff.scale()
        if attach is not None and EPOLL_WAITS:  # the native lane serves it till the disk fills
            worker = infos["printer"]["worker_pid"]
            wait_until(lambda: lane_threads(worker) == 1, timeout=20, message="the lane serving")
        go.touch()  # the sessions print from now on
        expected = cooked(pattern(LINES))
        # A session with more output to log than the full disk has room for must hit the
        # outage: the outage lasts until it said so (however slowly a loaded machine runs
        # the agent and the worker), and then some; one that has finished need not.
        printing_in_outage: set[str] = set()
        for _ in range(outages):
            time.sleep(rng.uniform(0.05, 0.6))  # a random moment in the printing
            disk.fill()
            must_hit = {n for n in names
                        if len(expected) - log_size(senv, n) > disk.slack(log_path(senv, n))}
            printing_in_outage |= must_hit
            try:
                for _ in range(rng.randint(1, 3)):
                    poke(senv, rng.choice(names), infos[rng.choice(names)]["worker_pid"], rng)
                time.sleep(rng.uniform(0.2, 1.0))  # the outage's length
                for name in sorted(must_hit):  # at once if it said so in an earlier outage
                    events.wait_for("log_write_failed", name, timeout=60)
            finally:
                disk.empty()
        def assert_alive() -> None:
            assert alive(supervisor), f"the supervisor {supervisor} died"
            for name, info in infos.items():
                for what in ("worker_pid", "agent_pid"):
                    assert alive(info[what]), f"{name}'s {what} {info[what]} died"

        assert_alive()
        assert printing_in_outage, "no session was printing during an outage: the test proved nothing"
        for name in names:
            log = log_path(senv, name)
            wait_until(lambda log=log: log.stat().st_size >= len(expected), timeout=60,
                       message=f"{name}'s whole output in its log")
            assert log.read_bytes() == expected, f"{name}'s log is not byte-exact"
            fault_report.add("log bytes checked byte-exact", len(expected))
            assert sessions(senv)[name]["state"] == "running"
            if name in printing_in_outage:
                events.wait_for("log_write_failed", name)
        assert_alive()
        assert lock_holder(senv) == supervisor
        if attach is not None:  # the attached terminal was shown it all, to the end
            wait_until(lambda: bytes(attach.shown).endswith(expected[-2000:]), timeout=30,
                       message="the attached terminal shown the whole output")
    finally:
        events.close()
        if attach is not None:
            attach.close()
    fault_report.note(f"full disk on {disk_mode(refused)}: {outages} outages, 2 sessions, 0 bytes lost")
    fault_report.add("faults injected", outages)


def test_start_resume_and_stop_on_a_full_disk(small_home: tuple[SupervEnv, str | None]) -> None:
    """On a full disk, ``start`` and ``resume`` say so in one line and leave nothing behind
    (the name stays free for a start once there is room); ``stop`` records how the agent
    ended although the worker's last snapshot could not be written: the supervisor has it
    from the worker's ``exited`` event."""
    senv, refused = small_home
    for name in ("held", "ended"):
        senv.superv("start", name, "--", "sleep", "1000", check=True)
    senv.superv("stop", "ended", check=True)  # a session to resume
    supervisor = lock_holder(senv)
    disk = RlimitDisk([supervisor, sessions(senv)["held"]["worker_pid"]]) \
        if refused else TmpfsDisk(senv.home)
    disk.fill()
    try:
        for args in (("start", "fresh", "--", "sleep", "1000"), ("resume", "ended")):
            proc = senv.superv(*args)
            assert proc.returncode == 1, proc
            assert "free some space" in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        assert not senv.session_dir("fresh").exists()
        stopped = senv.superv("stop", "held")
        assert stopped.returncode == 0 and "killed SIGTERM" in stopped.stdout, stopped
    finally:
        disk.empty()
    assert alive(supervisor)
    assert sessions(senv)["held"]["state"] == "killed SIGTERM"
    senv.superv("start", "fresh", "--", "sleep", "1000", check=True)
    senv.superv("resume", "ended", check=True)


def test_an_agent_held_back_by_a_full_disk_is_not_called_idle_and_ls_says_why(
        small_home: tuple[SupervEnv, str | None]) -> None:
    """While the disk refuses its output the agent is blocked on its writes: quiet, but not
    a turn finished (no ``idle``, no "finished its turn" notice).  The user is told (a
    notice, on every attach's status line and by the notify routes) and ``ls`` says why
    the session is held, until the disk has room again."""
    senv, refused = small_home
    argv = script(senv, "steady", "import itertools, sys, time\n"
                                  "for i in itertools.count():\n"
                                  "    print(f'{i:09d} ' + 'x' * 70, flush=True)\n"
                                  "    time.sleep(0.001)\n")
    senv.superv("start", "steady", "--", *argv, check=True)
    events = EventStream(senv)
    try:
        events.subscribe("steady")
        wait_until(lambda: sessions(senv)["steady"]["activity"] == "working", message="working")
        disk = RlimitDisk([lock_holder(senv), sessions(senv)["steady"]["worker_pid"]]) \
            if refused else TmpfsDisk(senv.home)
        disk.fill()
        try:
            events.wait_for("log_write_failed", "steady", timeout=30)
            quiet_for = time.monotonic() + QUIET_AFTER + 2  # a negative: watched this long
            while time.monotonic() < quiet_for:
                events.pull(0.2)
            said = [e["activity"] for e in events.seen
                    if e.get("event") == "activity" and e.get("session") == "steady"]
            assert "idle" not in said, said
            listed = sessions(senv)["steady"]
            assert listed["activity"] == "working"
            assert listed["problem"].startswith("output held since "), listed
            assert "the disk refused its log" in listed["problem"], listed
            table = senv.superv("ls", check=True).stdout
            assert "output held since" in table and "superv doctor" in table, table
            told = events.wait_for("notice", "steady")
            assert told["reason"] == "error", told
            assert ":steady is held: the disk refused its log (" in told["message"], told
            assert "nothing is lost" in told["message"], told
        finally:
            disk.empty()
        events.wait_for("log_write_resumed", "steady", timeout=30)
        wait_until(lambda: sessions(senv)["steady"]["problem"] is None, timeout=10,
                   message="ls no longer saying the session is held")
        assert sessions(senv)["steady"]["held_since"] is None
    finally:
        events.close()



def test_a_supervisor_restarted_while_a_session_is_held_still_lists_it_held_and_tells_once(
        superv_env: SupervEnv) -> None:
    """The worker's disk refuses its log (a file-size limit on the worker alone, so that
    the supervisor can restart); a new supervisor hears the hold from the worker (a
    standing notice), lists it, and does not notify the user of it a second time."""
    from notify_helpers import http_sink
    from test_fault_files import restart_supervisor
    from test_notify import write_config

    senv = superv_env
    with http_sink() as (base, got):
        write_config(senv, f'[notify]\nwebhook = "{base}/hook"\non = ["error"]\n')
        disk = start_held(senv)
        try:
            told = json.loads(got.get(timeout=30).body)
            assert told["reason"] == "error" and "is held" in told["message"], told
            held_since = sessions(senv)["steady"]["held_since"]
            assert restart_supervisor(senv)
            wait_until(lambda: sessions(senv)["steady"]["held_since"] == held_since, timeout=20,
                       message="the new supervisor listing the session held")
            with pytest.raises(queue.Empty):  # a negative: watched this long
                got.get(timeout=1.0)
        finally:
            disk.empty()
        wait_until(lambda: sessions(senv)["steady"]["held_since"] is None, timeout=20,
                   message="the hold over")


def start_held(senv: SupervEnv) -> RlimitDisk:
    """The session ``steady``, printing, its worker's log refused (a file-size limit)."""
    argv = script(senv, "steady", "import itertools, sys, time\n"
                                  "for i in itertools.count():\n"
                                  "    print(f'{i:09d} tick', flush=True)\n"
                                  "    time.sleep(0.01)\n")
    senv.superv("start", "steady", "--", *argv, check=True)
    disk = RlimitDisk([sessions(senv)["steady"]["worker_pid"]])
    disk.fill()
    wait_until(lambda: sessions(senv)["steady"]["held_since"] is not None, timeout=30,
               message="the session held")
    return disk


@pytest.mark.timeout(120)
def test_an_attach_that_comes_while_the_session_is_held_is_told_why(
        superv_env: SupervEnv, tmp_path: Path) -> None:
    """The notification went to the clients attached when the disk filled; one that
    attaches afterwards finds a frozen agent, and its status line says why (the worker's
    Welcome has the hold)."""
    from tmux_helpers import HEIGHT, Tmux

    senv = superv_env
    tmux = Tmux(senv.env, tmp_path)
    disk = start_held(senv)
    try:
        tmux.new_session("t")
        tmux.type("t", "$SUPERV attach steady")
        screen = tmux.wait_for("t", lambda s: s.split("\n")[HEIGHT - 1].startswith(
            " steady is held: the disk refused its log"), timeout=20)
        assert "tick" in screen  # over the agent's last screen
        peeked = senv.superv("peek", "steady", check=True)
        assert "tick" in peeked.stdout and "is held" not in peeked.stdout, peeked
        assert peeked.stderr.startswith("superv: steady is held: the disk refused its log ("), peeked
    finally:
        disk.empty()
    try:
        wait_until(lambda: sessions(senv)["steady"]["held_since"] is None, timeout=20,
                   message="the hold over")
        tmux.wait_for("t", lambda s: "is held" not in s, timeout=15)  # shown for a moment
        tmux.keys("t", "C-\\")
        tmux.wait_for("t", "[detached from steady]")
    finally:
        tmux.kill_server()


@pytest.mark.timeout(120)
def test_a_remote_attach_that_comes_while_the_session_is_held_is_told_why(
        superv_env: SupervEnv, sshd: SshServer) -> None:  # noqa: F811
    from test_remote_attach import SUPERV as REMOTE_SUPERV
    from test_remote_attach import Tmux as RemoteTmux
    from test_remote_attach import client_env

    senv = superv_env
    disk = start_held(senv)
    tmux = RemoteTmux(senv.root, client_env(senv, sshd))
    try:
        tmux.type(f"{REMOTE_SUPERV} attach box:steady")
        tmux.wait(r"(?m)^ box:steady is held: the disk refused its log", timeout=30)
        tmux.key("C-\\")
        tmux.wait(r"detached from")
    finally:
        tmux.kill()
        disk.empty()
