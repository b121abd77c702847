"""Fault suite: every socket superv listens on, fuzzed with generated frames.

The worker's session socket, the supervisor's control socket and the ``attach --stdio``
bridge (to a live session and to an ended one) each get a seeded run of bad inputs (see
``fault_frames``), plus connections that say nothing or stop mid-frame.  Afterwards every
process is the same one and alive, the session's log is byte-exact against what its agent
printed, ``ls`` answers, and the worker's and the supervisor's memory are within bounds.

How each input was answered is counted (an Error frame, or a silent close) and printed at
the end of the run; every complete invalid frame must be answered.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import fault_frames as ff
import fault_report
import pytest
from conftest import SupervEnv, isolated_env, wait_until
from fault_report import record
from test_cli import alive, lock_holder, script, sessions
from worker_helpers import PATTERN_FN, pattern, session_socket, vm_rss_kb

from agent_worker import protocol as p

pytestmark = pytest.mark.timeout(180)

LINES = 3000  # what the agent prints during the fuzz: 300 kB, a little at a time
# A raw-mode agent (no echo, no signals from typed bytes: fuzzed input is typed into it)
# that prints LINES pattern lines over a few seconds and throws away what it reads.
AGENT = PATTERN_FN + (
    "import os, sys, tty, select\n"
    "tty.setraw(0)\n"
    "n, i = int(sys.argv[1]), 0\n"
    "while True:\n"
    "    if i < n:\n"
    "        data = memoryview(pattern(min(20, n - i), i)); i += 20\n"
    "        while data:\n"
    "            data = data[os.write(1, data):]\n"
    "    if select.select([0], [], [], 0.01 if i < n else None)[0]:\n"
    "        os.read(0, 65536)\n"
)
# The bound on memory after the fuzz.  An idle worker or supervisor has an RSS of ~30 MB;
# 1 MiB frames in flight leave up to ~25 MB in the allocator, and that does not grow with
# the count of inputs (measured over 2,400 inputs: 37-57 MB, up and down).
RSS_LIMIT_KB = 72 * 1024
SILENT_CONNECTIONS = 4  # connect and say nothing, or stop mid-frame: the server times out
HELLO_TIMEOUT = 10.0  # the worker's and the supervisor's wait for a first frame


def count(ci: int) -> int:
    return ci * ff.scale()


class Session:
    """A running session whose agent prints a known stream, and its processes."""

    def __init__(self, senv: SupervEnv, name: str = "fz") -> None:
        self.senv, self.name = senv, name
        argv = script(senv, "agent", AGENT)
        senv.superv("start", name, "--", *argv, str(LINES), check=True)
        info = self.info()
        self.worker, self.agent = info["worker_pid"], info["agent_pid"]
        self.supervisor = lock_holder(senv)
        self.socket = str(session_socket(senv, name))
        self.rss_before = {"worker": vm_rss_kb(self.worker), "supervisor": vm_rss_kb(self.supervisor)}

    def info(self) -> dict:
        return sessions(self.senv)[self.name]

    def assert_unharmed(self) -> dict[str, int]:
        """Same processes alive, log byte-exact, ls answering; returns RSS growth in kB."""
        for what, pid in (("worker", self.worker), ("agent", self.agent),
                          ("supervisor", self.supervisor)):
            assert alive(pid), f"the {what} ({pid}) died"
        info = self.info()  # ls answers
        assert info["state"] == "running" and info["worker_pid"] == self.worker, info
        assert lock_holder(self.senv) == self.supervisor
        expected = pattern(LINES)
        log = self.senv.session_dir(self.name) / "output.log"
        wait_until(lambda: log.stat().st_size >= len(expected), timeout=30,
                   message="the agent's whole output in the log")
        assert log.read_bytes() == expected, "the log is not byte-exact"
        fault_report.add("log bytes checked byte-exact", len(expected))
        rss = {"worker": vm_rss_kb(self.worker), "supervisor": vm_rss_kb(self.supervisor)}
        for what, kb in rss.items():
            assert kb <= RSS_LIMIT_KB, f"the {what}'s RSS is {kb} kB after the fuzz"
        return {what: kb - self.rss_before[what] for what, kb in rss.items()}


@pytest.fixture(scope="module")
def shared_session() -> Iterator[Session]:
    """One session for the whole module: each test fuzzes it and checks it is unharmed, so
    the faults add up (and the suite does not pay a start per test)."""
    with isolated_env() as senv:
        yield Session(senv)


@pytest.fixture
def session(shared_session: Session) -> Session:
    shared_session.rss_before = {"worker": vm_rss_kb(shared_session.worker),
                                 "supervisor": vm_rss_kb(shared_session.supervisor)}
    return shared_session


class Lingering:
    """Connections that send nothing, or stop mid-frame, and stay open: the server must
    answer them when its wait for a first frame runs out (and not wait forever)."""

    def __init__(self, path: str, opening: bytes) -> None:
        self.outcomes: list[str] = []
        self.socks = []
        for i in range(SILENT_CONNECTIONS):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(path)
            if i % 2:
                sock.sendall(opening[: 1 + i % (len(opening) - 1)])  # half a frame
            self.socks.append(sock)

    def outcome(self) -> list[str]:
        deadline = time.monotonic() + HELLO_TIMEOUT + 10
        for sock in self.socks:
            def recv(left: float, sock: socket.socket = sock) -> bytes | None:
                sock.settimeout(max(0.01, left))
                try:
                    return sock.recv(1 << 16)
                except TimeoutError:
                    return None
                except ConnectionResetError:
                    return b""
            self.outcomes.append(ff.read_answer(recv, deadline))
            sock.close()
        return self.outcomes


def fuzz(path: str, cases: Iterator[ff.Case], opener: type) -> ff.Tally:
    tally = ff.Tally()
    for case in cases:
        tally.add(case, ff.expectation(case.payload, opener), ff.send_to_socket(path, case.payload))
    return tally


def assert_answered(tally: ff.Tally, where: str) -> None:
    assert tally.outcome(ff.HANG) == 0, (
        f"{where}: {tally.outcome(ff.HANG)} inputs got neither an answer nor a close, e.g. "
        f"{tally.example(ff.ANSWER, ff.HANG)} / {tally.example(ff.CLOSE, ff.HANG)}")
    assert tally.counts[ff.ANSWER, ff.SILENT] == 0, (
        f"{where}: {tally.summary()}; e.g. {tally.example(ff.ANSWER, ff.SILENT)}")


# What one bad input may add to worker.log or supervisor.log: one line, not a traceback
# (~2 KB), so a flood of bad clients cannot fill the disk.
LOG_BYTES_PER_INPUT = 300


def fuzz_and_check(session: Session, where: str, path: str, opener: type, n: int,
                   rng: random.Random, *, after_hello: bool = False) -> None:
    logs = [session.senv.home / "supervisor.log", session.senv.session_dir(session.name) / "worker.log"]
    sizes = [f.stat().st_size for f in logs]
    tally = fuzz(path, ff.cases(n, opener, rng, after_hello=after_hello), opener)
    growth = session.assert_unharmed()
    record(where, tally, [], growth)
    assert_answered(tally, where)
    for log, size in zip(logs, sizes, strict=True):
        per_input = (log.stat().st_size - size) / tally.total()
        assert per_input <= LOG_BYTES_PER_INPUT, f"{log.name} grew by {per_input:.0f} bytes per bad input"


def test_worker_socket_before_the_hello(session: Session) -> None:
    fuzz_and_check(session, "worker socket, before the hello", session.socket, p.Hello,
                   count(300), random.Random(ff.seed()))


def test_silent_and_half_frame_connections_are_answered(session: Session) -> None:
    """Connections that say nothing, or stop mid-frame, on the worker's and the control
    socket at once: each is answered when the server's wait for a first frame runs out."""
    rng = random.Random(ff.seed() + 5)
    control = str(session.senv.run / "supervisor.sock")
    lingering = {"worker socket": Lingering(session.socket, p.encode(p.Hello(p.Start.OFFSET))),
                 "control socket": Lingering(control, ff.control_garbage(rng))}
    outcomes = {where: waiting.outcome() for where, waiting in lingering.items()}
    growth = session.assert_unharmed()
    for where, silent in outcomes.items():
        record(f"{where}, silent and half-frame connections", ff.Tally(), silent, growth)
    assert all(o == [ff.ERROR] * SILENT_CONNECTIONS for o in outcomes.values()), outcomes


def test_worker_socket_after_a_valid_hello(session: Session) -> None:
    fuzz_and_check(session, "worker socket, after a valid hello", session.socket, p.Hello,
                   count(200), random.Random(ff.seed() + 1), after_hello=True)


def test_control_socket(session: Session) -> None:
    fuzz_and_check(session, "control socket", str(session.senv.run / "supervisor.sock"),
                   p.Request, count(300), random.Random(ff.seed() + 2))


def test_control_request_with_a_huge_unknown_op_is_answered(session: Session) -> None:
    path = str(session.senv.run / "supervisor.sock")
    huge = ff.frame(p.Request.KIND, json.dumps({"op": "x" * (p.MAX_FRAME - 64)}).encode())
    assert ff.send_to_socket(path, huge) == ff.ERROR
    session.assert_unharmed()


def bridge(senv: SupervEnv, name: str, payload: bytes) -> tuple[str, int]:
    """Run ``superv attach --stdio NAME`` with ``payload`` as its whole input."""
    proc = subprocess.Popen([sys.executable, "-m", "supervisor", "attach", "--stdio", name],
                            env=senv.env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    out_fd = proc.stdout.fileno()

    def feed() -> None:
        try:
            proc.stdin.write(payload)
            proc.stdin.close()
        except BrokenPipeError:
            pass

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()

    def recv(left: float) -> bytes | None:
        import select
        if not select.select([out_fd], [], [], max(0.0, left))[0]:
            return None
        return os.read(out_fd, 1 << 20)

    outcome = ff.read_answer(recv, time.monotonic() + 20)
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        outcome = ff.HANG
    writer.join(5)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    proc.stdout.close()
    if proc.stderr:
        proc.stderr.close()
    assert "Traceback" not in stderr, stderr
    return outcome, proc.returncode


def bridge_fuzz(session: Session, name: str, seed_offset: int) -> None:
    rng = random.Random(ff.seed() + seed_offset)
    tally = ff.Tally()
    for case in ff.cases(count(20), p.Hello, rng):
        outcome, code = bridge(session.senv, name, case.payload)
        assert code in (0, 1), f"the bridge exited {code} on {case}"
        tally.add(case, ff.expectation(case.payload, p.Hello), outcome)
    growth = session.assert_unharmed()
    record(f"attach --stdio bridge to {'an ended' if name != session.name else 'a live'} session",
           tally, [], growth)
    assert_answered(tally, "attach --stdio")


def test_stdio_bridge_to_a_live_session(session: Session) -> None:
    bridge_fuzz(session, session.name, 3)


def test_stdio_bridge_to_an_ended_session(session: Session) -> None:
    senv = session.senv
    senv.superv("start", "ended", "--", "sh", "-c", "echo bye", check=True)
    wait_until(lambda: sessions(senv)["ended"]["state"] == "exited 0", message="ended to end")
    bridge_fuzz(session, "ended", 4)



# ---- hostile inputs named in issue 14 -----------------------------------------------------


def test_control_request_with_rows_1e999_is_answered(session: Session) -> None:
    path = str(session.senv.run / "supervisor.sock")
    body = b'{"op":"start","name":"big","argv":["sleep","100"],"rows":1e999}'
    assert ff.send_to_socket(path, ff.frame(p.Request.KIND, body)) == ff.ERROR
    assert "big" not in [s["name"] for s in json.loads(
        session.senv.superv("ls", "--json", check=True).stdout)]
    session.assert_unharmed()


def test_hello_of_a_huge_window_does_not_break_the_screen(superv_env: SupervEnv) -> None:
    senv = superv_env
    go = senv.root / "go"
    waiter = script(senv, "waiter", f"import os, time\nwhile not os.path.exists({str(go)!r}):\n"
                    "    time.sleep(0.01)\nprint('after the huge hello', flush=True)\n"
                    "time.sleep(1000)\n")
    senv.superv("start", "huge", "--", *waiter, check=True)
    hello = p.encode(p.Hello(p.Start.SCREEN, rows=20000, cols=20000))
    ff.send_to_socket(str(session_socket(senv, "huge")), hello, timeout=10)
    go.touch()
    log = senv.session_dir("huge") / "output.log"
    wait_until(lambda: b"after the huge hello" in log.read_bytes(), message="the agent's output")
    peek = senv.superv("peek", "huge", timeout=10)
    assert peek.returncode == 0 and "after the huge hello" in peek.stdout, peek.stderr


@pytest.mark.timeout(120)
def test_a_full_connection_queue_makes_the_cli_wait_not_fail(superv_env: SupervEnv) -> None:
    """A burst of connections fills the supervisor's queue (here: it is stopped while the
    burst comes): a command waits for room (connect's EAGAIN) and is answered once the
    supervisor takes them, instead of failing at once with 'Resource temporarily unavailable'."""
    import resource
    import signal

    senv = superv_env
    senv.superv("ls", check=True)  # the supervisor runs
    supervisor = lock_holder(senv)
    path = str(senv.run / "supervisor.sock")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 20_000), hard))
    flood: list[socket.socket] = []
    os.kill(supervisor, signal.SIGSTOP)
    try:
        while True:  # until the queue is full
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                sock.connect(path)
            except BlockingIOError:
                sock.close()
                break
            flood.append(sock)
            assert len(flood) < 19_000, "the queue never filled"
        waiting = subprocess.Popen([sys.executable, "-m", "supervisor", "ls"], env=senv.env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        # Until it failed, or it waits between tries (the only sleep a CLI command makes).
        wchan = Path(f"/proc/{waiting.pid}/wchan")
        wait_until(lambda: waiting.poll() is not None or "nanosleep" in wchan.read_text(),
                   timeout=30, message="the command to try to connect")
        assert waiting.poll() is None, waiting.communicate()
    finally:
        os.kill(supervisor, signal.SIGCONT)
        for sock in flood:
            sock.close()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    try:
        out, err = waiting.communicate(timeout=30)
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert waiting.returncode == 0, err
    assert out.startswith("NAME") or "no sessions" in out, out
