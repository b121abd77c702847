"""A local attach hands its terminal to the worker (issue 13): the worker reads and writes
the user's terminal itself, drops it the moment the client goes, never blocks on it, and
an attach between a new client and an older worker (or the reverse) still works.

Real parts: the attach runs on a real PTY (its master is the "terminal emulator" here),
the session is a real worker, the old side of the upgrade is superv's own earlier code.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tarfile
import time
from io import BytesIO
from pathlib import Path

import pytest
from attach_helpers import PtyAttach, worker_pid
from conftest import REPO, SupervEnv, wait_until

from agent_worker.user_terminal import RESET_MODES

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True, params=["native", "python"])
def hot_path(request: pytest.FixtureRequest, superv_env: SupervEnv) -> str:
    """Every test here twice: with the hot path's native lane (agent_worker.hot_lane), and
    with its Python loop alone (where the lane was not built)."""
    superv_env.env["SUPERV_HOT_PATH"] = request.param
    return str(request.param)

# A commit of superv from before the handoff (the protocol without FEED_TERMINAL).
OLD_SUPERV = "3431ce7"


def holders(tty: str, senv: SupervEnv) -> set[int]:
    """Pids of this home's processes (workers, clients) holding ``tty`` open."""
    held = set()
    for pid in senv.pids():
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") == tty for fd in fds):
                held.add(pid)
        except OSError:
            continue
    return held


def descriptors_on(tty: str, pid: int) -> int:
    """How many of ``pid``'s descriptors are open on ``tty``."""
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):  # closed meanwhile
            count += os.readlink(f"/proc/{pid}/fd/{fd}") == tty
    return count


def test_the_worker_holds_the_terminal_and_drops_it_when_the_client_dies(
    superv_env: SupervEnv, attaches: list[PtyAttach]
) -> None:
    superv_env.superv("start", "cat", "--", "cat", check=True)
    attach = PtyAttach(superv_env, "cat")
    attaches.append(attach)
    attach.type(b"typed-once\r")
    attach.read_until(re.compile(rb"typed-once\r\n.*typed-once\r\n", re.S))
    worker = worker_pid(superv_env, "cat")
    assert worker in holders(attach.tty, superv_env), "the worker did not take the terminal"
    # The worker's copy is its own open file description: its O_NONBLOCK is not ours.
    assert os.get_blocking(attach.slave), "O_NONBLOCK leaked into the user's terminal"
    attach.proc.kill()  # SIGKILL: no detach, the socket just closes
    attach.proc.wait()
    wait_until(lambda: worker not in holders(attach.tty, superv_env),
               message="the worker to drop the dead client's terminal")
    assert superv_env.superv("ls", "--json", check=True).stdout.count('"running"') == 1


def flood_unread(senv: SupervEnv, attaches: list[PtyAttach], name: str, lines: int,
                 linger: bool = False) -> tuple[PtyAttach, int]:
    """A session that prints ``lines`` numbered lines and THE-END once a key comes, to an
    ``--exact`` attach whose emulator does not read; returns once all is logged, with the
    attach and the worker's pid.  ``linger``: the agent stays after printing."""
    code = ("import sys; sys.stdin.readline(); o = sys.stdout.buffer\n"
            f"for i in range({lines}): o.write(b'%08d ' % i + b'x' * 91 + b'\\n')\n"
            "o.write(b'THE-END\\n'); o.flush()" + ("; sys.stdin.read()" if linger else ""))
    senv.superv("start", name, "--", sys.executable, "-c", code, check=True)
    attach = PtyAttach(senv, name, "--exact")
    attaches.append(attach)
    worker = worker_pid(senv, name)
    wait_until(lambda: worker in holders(attach.tty, senv), message="the handoff")
    attach.type(b"go\r")
    log = senv.session_dir(name) / "output.log"
    wait_until(lambda: b"THE-END" in log.read_bytes()[-100:], timeout=60,
               message="the agent to print everything while its terminal does not read")
    return attach, worker


def test_a_terminal_that_stops_reading_never_slows_the_agent(
    superv_env: SupervEnv, attaches: list[PtyAttach]
) -> None:
    """The emulator stops reading (our master is not read): the agent still prints 10 MB
    and ends; then the terminal catches up from the log, every line, to the end."""
    start = time.monotonic()
    attach, _ = flood_unread(superv_env, attaches, "flood", 100000)
    took = time.monotonic() - start
    assert took < 30, f"the agent took {took:.1f}s with a terminal that does not read"
    shown = attach.read_until(b"[flood exited 0]", timeout=90)
    # Status lines (the session's own "ended" notice) come between batches: not output.
    shown = re.sub(rb"\x1b7\x1b\[\d+;1H\x1b\[0(;7)?m[^\x1b]*(\x1b\[0m)?\x1b\[K\x1b8", b"", shown)
    lines = re.findall(rb"(\d{8}) x{91}\r\n", shown)
    missing = sorted(set(range(100000)) - {int(n) for n in lines})
    around = shown[shown.find(b"%08d" % missing[0]) - 300:][:600] if missing else b""
    assert not missing, (missing[:5], around)
    assert b"THE-END" in shown


@pytest.mark.parametrize("ending", ["client killed", "detach key"])
def test_an_attach_ends_at_once_while_the_worker_waits_on_a_terminal_that_stopped_reading(
    superv_env: SupervEnv, attaches: list[PtyAttach], ending: str
) -> None:
    """The worker writes a terminal that fell behind by blocking writes in a thread of its
    own: with the emulator not reading, that write waits in the kernel.  The attach must
    still end when the client dies or the detach key is typed, and the worker let go of
    the terminal (a terminal held open keeps an SSH session from ending)."""
    attach, worker = flood_unread(superv_env, attaches, "stuck", 20000, linger=True)
    # The terminal is full and 2 MB behind: the worker's write to it is waiting, on a
    # second descriptor of the terminal (the catch-up thread's own, blocking).
    wait_until(lambda: descriptors_on(attach.tty, worker) == 2,
               message="the worker's catch-up thread to open the terminal")
    if ending == "client killed":
        attach.proc.kill()
        attach.proc.wait()
    else:
        attach.type(b"\x1c")
    wait_until(lambda: worker not in holders(attach.tty, superv_env), timeout=10,
               message="the worker to let go of a terminal it was waiting on")
    if ending == "detach key":
        attach.read_until(b"[detached from stuck]", timeout=30)  # the client writes it now
        assert attach.proc.wait(timeout=10) == 0
    assert '"running"' in superv_env.superv("ls", "--json", check=True).stdout


def test_a_terminal_that_dies_under_the_worker_ends_the_attach_not_the_session(
    superv_env: SupervEnv, attaches: list[PtyAttach]
) -> None:
    superv_env.superv("start", "ticks", "--", sys.executable, "-c",
                      "import time\nwhile True: print('tick', flush=True); time.sleep(0.05)",
                      check=True)
    attach = PtyAttach(superv_env, "ticks")
    attaches.append(attach)
    attach.read_until(b"tick")
    worker = worker_pid(superv_env, "ticks")
    assert worker in holders(attach.tty, superv_env)
    os.close(attach.master)  # the emulator is gone: the terminal hangs up
    wait_until(lambda: worker not in holders(attach.tty, superv_env),
               message="the worker to drop a terminal that hung up")
    assert attach.proc.wait(timeout=20) is not None
    assert '"running"' in superv_env.superv("ls", "--json", check=True).stdout
    attach.master = os.open("/dev/null", os.O_RDONLY)  # for close()


def test_a_terminal_that_hangs_up_while_output_flows_never_stops_the_session(
    superv_env: SupervEnv, attaches: list[PtyAttach]
) -> None:
    """The hot path may find the hang-up by a write of output rather than by a read of
    keys: it then drops that terminal in the middle of writing a batch to every terminal
    (it once died there, 'dictionary changed size during iteration', and the session's
    output was no longer read: closing a terminal stopped the agent)."""
    superv_env.superv("start", "busy", "--", sys.executable, "-c",
                      "import time\nwhile True: print('b' * 60, flush=True); time.sleep(0.0005)",
                      check=True)
    log = superv_env.session_dir("busy") / "output.log"
    for _ in range(8):
        attach = PtyAttach(superv_env, "busy")
        attaches.append(attach)
        attach.read_until(b"bbbbbbbbbb")
        os.close(attach.master)  # the emulator is gone while output flows
        attach.master = os.open("/dev/null", os.O_RDONLY)  # for close()
        assert attach.proc.wait(timeout=20) is not None
        size = log.stat().st_size
        wait_until(lambda size=size: log.stat().st_size > size + 10_000, timeout=10,
                   message="the session's output to be logged on after the hang-up")
    assert '"running"' in superv_env.superv("ls", "--json", check=True).stdout


def test_a_detach_puts_the_modes_back_once_and_the_shell_gets_a_blocking_terminal(
    superv_env: SupervEnv, attaches: list[PtyAttach]
) -> None:
    code = ("import sys; o = sys.stdout.buffer; o.write(b'\\x1b[?1049h\\x1b[?2004hready\\r\\n');"
            "o.flush(); sys.stdin.read()")
    superv_env.superv("start", "modes", "--", sys.executable, "-c", code, check=True)
    attach = PtyAttach(superv_env, "modes")
    attaches.append(attach)
    attach.read_until(b"ready")
    attach.type(b"\x1c")
    shown = attach.read_until(b"[detached from modes]")
    assert attach.proc.wait(timeout=10) == 0
    # One writer: the worker's reset, once, the alternate screen left, then the client's line.
    assert shown.count(RESET_MODES) == 1, shown
    reset = shown.index(RESET_MODES)
    assert shown.rfind(b"\x1b[?1049l", 0, reset) > shown.rindex(b"\x1b[?1049h")
    assert reset < shown.index(b"[detached from modes]")
    assert os.get_blocking(attach.slave)


def _old_superv(tmp: Path) -> Path:
    """superv's code as of :data:`OLD_SUPERV`, unpacked under ``tmp``."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", OLD_SUPERV,
                              "agent_worker", "supervisor"],
                             check=True, capture_output=True).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(tmp, filter="data")
    return tmp


def _old_env(senv: SupervEnv, old: Path) -> dict[str, str]:
    """The environment that runs the old code (from a directory away from the checkout:
    ``python -m`` puts the current directory first)."""
    env = {**senv.env, "PYTHONPATH": str(old)}
    check = subprocess.run(
        [sys.executable, "-c", "import agent_worker.protocol as p; print(p.__file__, "
         "hasattr(p, 'FEED_TERMINAL'))"], env=env, cwd=old, capture_output=True, text=True)
    assert check.stdout.split() == [str(old / "agent_worker" / "protocol.py"), "False"], check
    return env


@pytest.mark.parametrize("old_side", ["worker", "client"])
def test_an_attach_across_an_upgrade_works_the_old_way(
    superv_env: SupervEnv, attaches: list[PtyAttach], tmp_path: Path, old_side: str
) -> None:
    """A worker started by an older superv serves a new client over its socket, and a new
    worker serves an old client: type, see the echo, detach, the session lives on."""
    old_code = _old_superv(tmp_path)
    old = _old_env(superv_env, old_code)
    start_env = old if old_side == "worker" else superv_env.env
    proc = subprocess.run([sys.executable, "-m", "supervisor", "start", "up", "--", "cat"],
                          env=start_env, capture_output=True, text=True, timeout=30, cwd=old_code)
    assert proc.returncode == 0, proc.stderr
    attach = PtyAttach(superv_env, "up", env=old if old_side == "client" else None,
                       cwd=old_code)
    attaches.append(attach)
    attach.type(b"across\r")
    attach.read_until(re.compile(rb"across\r\n.*across\r\n", re.S))
    worker = worker_pid(superv_env, "up")
    assert worker not in holders(attach.tty, superv_env), "an old side cannot hand over"
    attach.type(b"\x1c")
    attach.read_until(b"[detached from up]")
    assert attach.proc.wait(timeout=10) == 0
    os.kill(worker, 0)  # still serving
