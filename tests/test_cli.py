"""End-to-end tests of the supervisor and the ``superv`` CLI (issue 3).

Everything is real: the CLI runs as its own process, the supervisor and the workers are
detached processes, agents run in PTYs, tmux is the user's terminal, signals (SIGKILL
included) are real signals and the control socket is spoken to with raw bytes.  Nothing
we own is mocked.  Waits are on events (text on a tmux screen, a line in a log file, a
process ending); the few fixed pauses prove that something does *not* happen.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import queue
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SupervEnv, wait_until
from tmux_helpers import PROMPT, SUPERV, Tmux

from agent_worker import protocol as p
from agent_worker.client import Connection
from agent_worker.procfs import is_running, pids_with_env

pytestmark = pytest.mark.timeout(60)

PY = sys.executable

# Prints a numbered line every 50 ms, forever.
TICKER = """\
import time
i = 0
while True:
    print(f"tick {i}", flush=True)
    i += 1
    time.sleep(0.05)
"""

# Answers each line it reads; "exit N" ends it with status N.
ECHOER = """\
import sys
print("ready", flush=True)
for line in sys.stdin:
    line = line.strip()
    if line.startswith("exit "):
        print("bye", flush=True)
        sys.exit(int(line.split()[1]))
    print(f"got: {line}", flush=True)
"""

# A full-screen program: a box, a counter that 'j' increments, the last key; 'q' quits.
CURSES_APP = """\
import curses

def main(scr):
    curses.curs_set(0)
    count, last = 0, "-"
    while True:
        scr.erase()
        rows, cols = scr.getmaxyx()
        scr.box()
        scr.addstr(1, 2, f"counter: {count}")
        scr.addstr(2, 2, f"last key: {last}")
        scr.addstr(rows // 2, max(1, cols // 2 - 6), "[ superv ]", curses.A_REVERSE)
        scr.addstr(rows - 2, 2, "j: +1   q: quit")
        scr.refresh()
        key = scr.getch()
        if key == ord("q"):
            return
        if key == ord("j"):
            count += 1
        if 32 <= key < 127:
            last = chr(key)

curses.wrapper(main)
"""


# ---- helpers -----------------------------------------------------------------------------


def script(senv: SupervEnv, name: str, source: str) -> list[str]:
    """Write ``source`` into the test's directory; the argv that runs it."""
    path = senv.root / f"{name}.py"
    path.write_text(source)
    return [PY, str(path)]


def start(senv: SupervEnv, name: str, *argv: str, opts: tuple[str, ...] = ()) -> None:
    senv.superv("start", *opts, name, "--", *argv, check=True)


def sessions(senv: SupervEnv) -> dict[str, dict[str, Any]]:
    out = senv.superv("ls", "--json", check=True).stdout
    return {s["name"]: s for s in json.loads(out)}


def log_bytes(senv: SupervEnv, name: str) -> bytes:
    try:
        return (senv.session_dir(name) / "output.log").read_bytes()
    except FileNotFoundError:
        return b""


def wait_log(senv: SupervEnv, name: str, text: bytes, timeout: float = 10.0) -> bytes:
    return wait_until(lambda: text in log_bytes(senv, name) and log_bytes(senv, name),
                      timeout, message=f"{text!r} in {name}'s log")


def alive(pid: int) -> bool:
    """Is ``pid`` a live process (not a zombie)?"""
    return is_running(pid)


def cmdline(pid: int) -> list[bytes]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return []


def supervisor_pids(senv: SupervEnv) -> list[int]:
    """Processes running ``supervisor daemon`` in this home."""
    found = []
    for pid in pids_with_env("SUPERV_HOME", str(senv.home)):
        args = cmdline(pid)
        if b"supervisor" in args and b"daemon" in args and alive(pid):
            found.append(pid)
    return found


def lock_holder(senv: SupervEnv) -> int:
    return int((senv.home / "supervisor.lock").read_text().strip())


def sigkill_and_wait(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not alive(pid), message=f"pid {pid} to die")


def grows(senv: SupervEnv, name: str) -> None:
    """The session's log keeps growing (its agent still prints)."""
    size = len(log_bytes(senv, name))
    wait_until(lambda: len(log_bytes(senv, name)) > size + 20, message=f"{name}'s log to grow")


def read_until(stream: Any, needle: bytes, timeout: float = 10.0) -> bytes:
    """Read a pipe until ``needle`` appears; everything read so far."""
    fd = stream.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    while needle not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"timed out waiting for {needle!r}; read {data[-500:]!r}")
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                raise AssertionError(f"end of stream before {needle!r}; read {data[-500:]!r}")
            data += chunk
    return data


def superv_proc(senv: SupervEnv, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([PY, "-m", "supervisor", *args], env=senv.env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def one_line_error(proc: subprocess.CompletedProcess[str], code: int) -> str:
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("superv: "), proc.stderr
    return lines[0]


def supervisor_log_events(senv: SupervEnv, event: str, session: str) -> list[dict[str, str]]:
    """The supervisor's structlog lines for ``event`` of ``session``, as dicts."""
    found = []
    try:
        text = (senv.home / "supervisor.log").read_text()
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        fields = dict(re.findall(r"(\w+)=('[^']*'|\S+)", line))
        fields = {k: v.strip("'") for k, v in fields.items()}
        if fields.get("event") == event and fields.get("session") == session:
            found.append(fields)
    return found


def when(fields: dict[str, str]) -> float:
    """The unix time of a supervisor log line."""
    return datetime.datetime.fromisoformat(fields["timestamp"]).timestamp()


class EventStream:
    """``superv events --json`` as a subprocess, its lines parsed by a reader thread."""

    def __init__(self, senv: SupervEnv) -> None:
        self.senv = senv
        self.proc = superv_proc(senv, "events", "--json")
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def pull(self, timeout: float) -> None:
        """Take the next event into ``seen``, waiting up to ``timeout`` for it."""
        with contextlib.suppress(queue.Empty):
            self.seen.append(self.lines.get(timeout=timeout))

    def find(self, event: str, session: str) -> dict[str, Any] | None:
        for body in self.seen:
            if body.get("event") == event and body.get("session") == session:
                return body
        return None

    def wait_for(self, event: str, session: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while (found := self.find(event, session)) is None:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {event} event for {session}; saw {self.seen}")
            self.pull(min(left, 0.2))
        return found

    def subscribe(self, probe: str) -> None:
        """Return once the stream is live: poke the running session ``probe`` until its
        attach shows up (a subscription made after an event never sees it)."""
        deadline = time.monotonic() + 15
        while self.find("attached", probe) is None:
            assert time.monotonic() < deadline, f"events never showed up; saw {self.seen}"
            with Connection.open(self.senv.run / "sessions" / f"{probe}.sock") as conn:
                conn.hello(p.Hello(p.Start.TAIL, 0, read_only=True))
                conn.send(p.Detach())
            pull_until = time.monotonic() + 0.3
            while self.find("attached", probe) is None and time.monotonic() < pull_until:
                self.pull(0.05)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def term(superv_env: SupervEnv) -> Iterator[Tmux]:
    tmux = Tmux(superv_env.env, superv_env.root)
    try:
        yield tmux
    finally:
        tmux.kill_server()


def assert_terminal_restored(term: Tmux, pane: str) -> None:
    """The pane's shell works again and its terminal is back in cooked mode with echo."""
    term.type(pane, "echo MODE:$(stty -a | tr ' ;' '\\n\\n' | "
                    "grep -x -e icanon -e -icanon -e echo -e -echo | tr '\\n' ,)")
    term.wait_for(pane, "MODE:icanon,echo,")


AGENT_PROMPT = re.compile(r"^agent\$ *$", re.M)
DETACHED_THEN_PROMPT = r"\[detached from {}\]\n" + re.escape(PROMPT.rstrip()) + r" *$"


# ---- attach through a real terminal --------------------------------------------------------


def test_attach_line_program_type_detach_reattach(superv_env: SupervEnv, term: Tmux) -> None:
    pane = term.new_session("main")
    term.type(pane, "$SUPERV start --env 'PS1=agent$ ' line -- bash --norc --noprofile -i")
    term.wait_for(pane, "started line")
    term.type(pane, "$SUPERV attach line")
    term.wait_for(pane, AGENT_PROMPT)
    term.type(pane, "echo hello-$((6*7))")
    before = term.wait_for(pane, re.compile(r"^hello-42\nagent\$ *$", re.M))

    term.keys(pane, "C-\\")
    term.wait_for(pane, re.compile(DETACHED_THEN_PROMPT.format("line"), re.M))
    assert_terminal_restored(term, pane)

    term.type(pane, "$SUPERV attach line")
    term.wait_for(pane, lambda screen: screen == before)
    term.type(pane, "echo again-$((1+1))")
    term.wait_for(pane, re.compile(r"^again-2$", re.M))
    term.keys(pane, "C-\\")
    term.wait_for(pane, re.compile(DETACHED_THEN_PROMPT.format("line"), re.M))
    assert sessions(superv_env)["line"]["state"] == "running"


def test_attach_curses_program_reattach_shows_same_screen(
    superv_env: SupervEnv, term: Tmux
) -> None:
    argv = " ".join(script(superv_env, "app", CURSES_APP))
    pane = term.new_session("main")
    term.type(pane, f"$SUPERV start tui -- {argv}")
    term.wait_for(pane, "started tui")
    term.type(pane, "$SUPERV attach tui")
    term.wait_for(pane, "counter: 0")
    term.type(pane, "jjj", enter=False)
    before = term.wait_for(pane, lambda s: "counter: 3" in s and "last key: j" in s)
    lines = before.splitlines()
    assert len(lines) == 30, before
    assert lines[0] == "┌" + "─" * 98 + "┐" and lines[29] == "└" + "─" * 98 + "┘", before
    assert lines[1].startswith("│ counter: 3 ") and lines[1].endswith("│"), before

    term.keys(pane, "C-\\")
    term.wait_for(pane, re.compile(DETACHED_THEN_PROMPT.format("tui"), re.M))
    assert_terminal_restored(term, pane)

    term.type(pane, "$SUPERV attach tui")
    term.wait_for(pane, lambda screen: screen == before)
    term.type(pane, "j", enter=False)
    term.wait_for(pane, "counter: 4")
    term.type(pane, "q", enter=False)
    term.wait_for(pane, "[tui exited 0]")
    assert_terminal_restored(term, pane)


def test_attach_to_an_ended_full_screen_session_shows_its_last_screen(
    superv_env: SupervEnv, term: Tmux
) -> None:
    """A TUI that ended on the alternate screen (killed, say): attach shows its last screen
    where it stays, from the lingering worker and from the log alike (it was painted on
    the alternate screen and left at once: the terminal showed nothing)."""
    senv = superv_env
    go = senv.root / "go"
    start(senv, "gone", "sh", "-c", "printf '\\033[?1049h\\033[2J\\033[Hlast-screen-mark'; "
          f"while [ ! -e {go} ]; do sleep 0.05; done")
    wait_log(senv, "gone", b"last-screen-mark")
    holder = Connection.open(senv.run / "sessions" / "gone.sock")  # keeps the worker after
    try:
        holder.hello(p.Hello(p.Start.TAIL, 0, read_only=True))
        go.touch()
        wait_until(lambda: sessions(senv)["gone"]["state"] == "exited 0", message="the end")
        for case in ("from the worker", "from the log"):
            pane = term.new_session(case.replace(" ", "-"))
            term.type(pane, "$SUPERV attach gone")
            shown = term.wait_for(pane, "[gone exited 0")
            assert "last-screen-mark" in shown, (case, shown)
            holder.close()
            wait_until(lambda: not (senv.run / "sessions" / "gone.sock").exists(), timeout=70,
                       message="the worker to go")
    finally:
        holder.close()


def test_detach_leaves_clean_lines_below_the_agents_cursor(superv_env: SupervEnv,
                                                            term: Tmux) -> None:
    """A TUI draws below its cursor (an input box's border, a footer): the detach line and
    the shell's prompt come on cleared lines, not over those rows."""
    start(superv_env, "boxed", "sh", "-c",
          "printf 'top\\n> \\n-----border-----\\nfooter-hints\\033[2A\\r> '; exec sleep 1000")
    wait_log(superv_env, "boxed", b"footer-hints")
    pane = term.new_session("main")
    term.type(pane, "$SUPERV attach boxed")
    term.wait_for(pane, "footer-hints")
    term.keys(pane, "C-\\")
    shown = term.wait_for(pane, re.compile(DETACHED_THEN_PROMPT.format("boxed"), re.M))
    assert "border" not in shown and "footer-hints" not in shown, shown
    assert "top" in shown  # what was above the cursor stays


def test_suspend_gives_the_terminal_back_to_the_shell_and_fg_attaches_again(
    superv_env: SupervEnv, term: Tmux
) -> None:
    """SIGTSTP to an attach (job control): the shell gets its terminal and its keys (the
    worker, which reads a handed terminal, read them away before), and fg shows the
    session again, typing into it."""
    start(superv_env, "jobs", "sh", "-c", 'echo ready; while read -r l; do echo "got: $l"; done')
    wait_log(superv_env, "jobs", b"ready")
    pane = term.new_session("main")  # bash, with job control
    term.type(pane, "$SUPERV attach jobs")
    term.wait_for(pane, "ready")
    client = wait_until(lambda: next(
        (pid for pid in pids_with_env("SUPERV_HOME", str(superv_env.home))
         if b"attach" in Path(f"/proc/{pid}/cmdline").read_bytes()), None),
        message="the attach client")
    os.kill(client, signal.SIGTSTP)
    term.wait_for(pane, "Stopped")
    term.type(pane, "echo typed-in-the-$((2+3))-shell")
    term.wait_for(pane, "typed-in-the-5-shell")
    assert b"typed-in-the" not in log_bytes(superv_env, "jobs")
    term.type(pane, "fg")
    term.wait_for(pane, "ready")
    term.type(pane, "after-fg")
    term.wait_for(pane, "got: after-fg")
    term.keys(pane, "C-\\")
    term.wait_for(pane, "[detached from jobs]")


def test_two_clients_both_see_typed_text(superv_env: SupervEnv, term: Tmux) -> None:
    start(superv_env, "shared", "bash", "--norc", "--noprofile", "-i",
          opts=("--env", "PS1=agent$ "))
    one, two = term.new_session("one"), term.new_session("two")
    for pane in (one, two):
        term.type(pane, "$SUPERV attach shared")
        term.wait_for(pane, AGENT_PROMPT)
    term.type(one, "echo from-one-$((2+3))")
    for pane in (one, two):
        term.wait_for(pane, re.compile(r"^from-one-5$", re.M))
    term.type(two, "echo from-two-$((3+4))")
    for pane in (one, two):
        term.wait_for(pane, re.compile(r"^from-two-7$", re.M))
    term.keys(one, "C-\\")
    term.wait_for(one, "[detached from shared]")
    # The other client stays attached and live.
    term.type(two, "echo still-$((4+4))")
    term.wait_for(two, re.compile(r"^still-8$", re.M))


def test_read_only_attach_does_not_type(superv_env: SupervEnv, term: Tmux) -> None:
    start(superv_env, "ro", "bash", "--norc", "--noprofile", "-i", opts=("--env", "PS1=agent$ "))
    writer, watcher = term.new_session("writer"), term.new_session("watcher")
    term.type(watcher, "$SUPERV attach -r ro")
    term.wait_for(watcher, AGENT_PROMPT)
    term.type(watcher, "echo typed-by-the-watcher")
    # Only then does the writer attach and type: its line comes after the watcher's keys.
    term.type(writer, "$SUPERV attach ro")
    term.wait_for(writer, AGENT_PROMPT)
    term.type(writer, "echo typed-by-writer")
    for pane in (writer, watcher):
        term.wait_for(pane, re.compile(r"^typed-by-writer\nagent\$ *$", re.M))
    log = log_bytes(superv_env, "ro")
    assert b"typed-by-writer" in log
    assert b"watcher" not in log
    assert "watcher" not in term.capture(writer)
    term.keys(watcher, "C-\\")
    term.wait_for(watcher, re.compile(DETACHED_THEN_PROMPT.format("ro"), re.M))
    assert_terminal_restored(term, watcher)


# ---- the SSH-like parent dies ----------------------------------------------------------------


def test_closing_the_terminal_while_attached_leaves_agent_running(
    superv_env: SupervEnv, term: Tmux
) -> None:
    argv = " ".join(script(superv_env, "ticker", TICKER))
    pane = term.new_session("main")
    term.type(pane, f"$SUPERV start -a tk -- {argv}")
    term.wait_for(pane, "tick 5")
    info = sessions(superv_env)["tk"]
    term.kill_server()  # the terminal is gone: SIGHUP to the shell and the attach client
    wait_until(lambda: not any(b"attach" in cmdline(pid) for pid in superv_env.pids()),
               message="the attach client to end")
    assert alive(info["agent_pid"]) and alive(info["worker_pid"])
    grows(superv_env, "tk")
    assert sessions(superv_env)["tk"]["state"] == "running"


def test_killing_the_login_shell_group_leaves_agent_running(superv_env: SupervEnv) -> None:
    argv = " ".join(script(superv_env, "ticker", TICKER))
    shell = subprocess.Popen(
        ["bash", "-c", f"{SUPERV} start hup -- {argv}; sleep 1000"],
        env=superv_env.env, start_new_session=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        # A login shell's SIGHUP is the default (it ends it), whatever the test runner
        # inherited: under nohup an ignored SIGHUP would be inherited by bash and superv,
        # and the shell would never end.
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
    )
    try:
        wait_log(superv_env, "hup", b"tick 3", timeout=20)
        info = sessions(superv_env)["hup"]
        daemon = lock_holder(superv_env)
        os.killpg(shell.pid, signal.SIGHUP)
        shell.wait(10)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
        shell.wait(10)
    assert alive(info["agent_pid"]) and alive(info["worker_pid"]) and alive(daemon)
    grows(superv_env, "hup")


# ---- the supervisor dies -----------------------------------------------------------------------


def test_supervisor_sigkill_sessions_keep_running_and_are_readopted(
    superv_env: SupervEnv,
) -> None:
    senv = superv_env
    start(senv, "t1", *script(senv, "ticker", TICKER))
    start(senv, "e1", *script(senv, "echoer", ECHOER))
    wait_log(senv, "e1", b"ready")
    before = sessions(senv)
    daemon = lock_holder(senv)
    assert supervisor_pids(senv) == [daemon]
    sigkill_and_wait(daemon)

    for info in before.values():
        assert alive(info["worker_pid"]) and alive(info["agent_pid"])
    grows(senv, "t1")
    # Everything that shows or drives a session works without the supervisor.
    assert "tick" in senv.superv("peek", "t1", check=True).stdout
    assert "tick 1\n" in senv.superv("logs", "t1", check=True).stdout
    senv.superv("send", "e1", "--enter", "while-down", check=True)
    wait_log(senv, "e1", b"got: while-down")
    watcher = superv_proc(senv, "attach", "-r", "t1")
    try:
        read_until(watcher.stdout, b"tick")
    finally:
        watcher.terminate()
        _, err = watcher.communicate(timeout=10)
    assert watcher.returncode == 0 and b"[detached from t1" in err
    assert supervisor_pids(senv) == [], "a session command started the supervisor"

    after = sessions(senv)  # starts a new supervisor, which adopts both sessions
    new_daemon = lock_holder(senv)
    assert new_daemon != daemon and supervisor_pids(senv) == [new_daemon]
    for name, info in before.items():
        assert after[name]["state"] == "running"
        assert after[name]["worker_pid"] == info["worker_pid"]
        assert after[name]["agent_pid"] == info["agent_pid"]
    assert senv.superv("stop", "t1", check=True).stdout.strip() == "t1: killed SIGTERM"
    assert sessions(senv)["t1"]["state"] == "killed SIGTERM"
    assert not alive(before["t1"]["agent_pid"])
    assert alive(before["e1"]["agent_pid"])


def test_worker_named_only_by_its_socket_is_adopted(superv_env: SupervEnv) -> None:
    """The supervisor died after starting a worker, before either wrote who it is."""
    senv = superv_env
    start(senv, "young", *script(senv, "ticker", TICKER))
    before = sessions(senv)["young"]
    sigkill_and_wait(lock_holder(senv))
    # As if no snapshot had been written yet and the registry had no pid for it.
    for leftover in ("state.json", "state.json.prev"):
        (senv.session_dir("young") / leftover).unlink(missing_ok=True)
    registry = json.loads((senv.home / "registry.json").read_text())
    for entry in registry["sessions"]:
        entry.update(worker_pid=None, worker_start=None, worker_boot=None, state="starting")
    (senv.home / "registry.json").write_text(json.dumps(registry))
    (senv.home / "registry.json.prev").unlink(missing_ok=True)

    after = sessions(senv)["young"]
    assert after["state"] == "running"
    assert after["worker_pid"] == before["worker_pid"]
    assert senv.superv("stop", "young", check=True).stdout.strip() == "young: killed SIGTERM"


def test_sessions_that_end_while_supervisor_is_down(superv_env: SupervEnv) -> None:
    senv = superv_env
    start(senv, "victim", *script(senv, "ticker", TICKER))
    start(senv, "quits", *script(senv, "echoer", ECHOER))
    wait_log(senv, "quits", b"ready")
    before = sessions(senv)
    sigkill_and_wait(lock_holder(senv))

    sigkill_and_wait(before["victim"]["worker_pid"])
    senv.superv("send", "--enter", "quits", "exit 3", check=True)
    wait_until(lambda: not alive(before["quits"]["worker_pid"]), message="quits' worker to end")

    after = sessions(senv)
    assert after["victim"]["state"] == "interrupted"
    assert after["quits"]["state"] == "exited 3"
    assert after["quits"]["exit_code"] == 3
    # Neither is restarted (policy "no"), and the new supervisor answers for both.
    stopped = senv.superv("stop", "victim")
    assert "not running" in one_line_error(stopped, 1)


def test_concurrent_first_commands_start_one_supervisor(superv_env: SupervEnv) -> None:
    senv = superv_env
    procs = [superv_proc(senv, "ls") for _ in range(2)]
    for proc in procs:
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert b"no sessions" in out
    wait_until(lambda: len(supervisor_pids(senv)) == 1, message="one supervisor")
    assert supervisor_pids(senv) == [lock_holder(senv)]
    senv.superv("ls", check=True)
    assert supervisor_pids(senv) == [lock_holder(senv)]


# ---- bad input -----------------------------------------------------------------------------


def control_exchange(senv: SupervEnv, raw: bytes) -> list[p.Message]:
    """Send raw bytes to the control socket; every message until it closes."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(15)
        sock.connect(str(senv.run / "supervisor.sock"))
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        decoder = p.Decoder()
        messages: list[p.Message] = []
        while data := sock.recv(65536):
            decoder.feed(data)
            messages.extend(decoder)
        return messages


def single_reply(messages: list[p.Message]) -> p.Message:
    assert len(messages) == 1, messages
    return messages[0]


def test_control_socket_survives_bad_input(superv_env: SupervEnv) -> None:
    senv = superv_env
    senv.superv("ls", check=True)
    daemon = lock_holder(senv)
    # A client that connects and says nothing does not block anyone else.
    idle = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    idle.connect(str(senv.run / "supervisor.sock"))
    try:
        errors = {
            "garbage": b"\x00\x00\x00\x05\x63junk",
            "oversized": b"\xff\xff\xff\xff\x0a",
            "bad json": b"\x00\x00\x00\x03\x0aab",
            "not a request": p.encode(p.Detach()),
        }
        for what, raw in errors.items():
            reply = single_reply(control_exchange(senv, raw))
            assert isinstance(reply, p.Error), (what, reply)
            assert reply.message and "\n" not in reply.message, (what, reply)
        refusals = [
            {"op": "frobnicate"},
            {"op": 5},
            {"op": "__init__"},
            {"op": "start", "name": "../x", "argv": ["true"]},
            {"op": "start", "name": ["a"], "argv": ["true"]},
            {"op": "start", "name": "ok", "argv": "true"},
            {"op": "start", "name": "ok", "argv": ["true"], "rows": "many"},
            {"op": "start", "name": "ok2", "argv": ["true"], "env": "not a mapping"},
            {"op": "stop", "name": "../../etc"},
            {"op": "prune", "older_than": "a while"},
        ]
        for body in refusals:
            reply = single_reply(control_exchange(senv, p.encode(p.Request(body))))
            assert isinstance(reply, p.Reply) and reply.body["ok"] is False, (body, reply)
            assert reply.body["error"] and "\n" not in reply.body["error"], (body, reply)
        # A truncated frame, then the end of the connection.
        reply = single_reply(control_exchange(senv, p.encode(p.Request({"op": "ls"}))[:-3]))
        assert isinstance(reply, p.Error), reply
        assert senv.superv("ls", check=True).stdout.startswith("no sessions")
    finally:
        idle.close()
    assert lock_holder(senv) == daemon and alive(daemon)
    assert not senv.session_dir("ok").exists() and not senv.session_dir("ok2").exists()


@pytest.mark.parametrize("name", ["../x", "", "a" * 500, "bad\x01name", "two\nlines", "a/b"])
def test_hostile_session_names_are_usage_errors(superv_env: SupervEnv, name: str) -> None:
    senv = superv_env
    commands = [
        ("start", name, "--", "true"), ("attach", name), ("peek", name), ("logs", name),
        ("send", name, "x"), ("kill", name), ("stop", name), ("rm", name),
        ("export", name), ("resume", name),
    ]
    for args in commands:
        line = one_line_error(senv.superv(*args), 2)
        assert "invalid session name" in line, (args, line)
    assert senv.superv("ls", check=True).stdout.startswith("no sessions")
    assert not (senv.home / "sessions").exists() or not any((senv.home / "sessions").iterdir())


@pytest.mark.parametrize("host", ["h\udcff", "ho\nst", "[zz]", "a b", "x-\x1b[2J"])
def test_hostile_host_names_are_usage_errors(superv_env: SupervEnv, host: str) -> None:
    """Every command that takes HOST:NAME or HOST: refuses a host SSH cannot take, before
    connecting: one line, exit 2 (it was a traceback, or the resolver's error on two lines)."""
    senv = superv_env
    target = f"{host}:keep"
    commands = [
        ("logs", target), ("peek", target), ("send", target, "x"), ("stop", target),
        ("kill", target), ("resume", target), ("approve", target), ("deny", target),
        ("attach", "-r", target), ("ls", f"{host}:"), ("events", f"{host}:"),
    ]
    for args in commands:
        line = one_line_error(senv.superv(*args), 2)
        assert "cannot read host" in line, (args, line)


# ---- restart policies ------------------------------------------------------------------------


def test_restart_policies(superv_env: SupervEnv) -> None:
    senv = superv_env
    senv.env["SUPERV_RESTART_LIMIT"] = "2"
    senv.env["SUPERV_RESTART_BACKOFF"] = "0.3"
    start(senv, "fails", "sh", "-c", "echo run-fails; exit 3", opts=("--restart", "on-failure"))
    start(senv, "passes", "sh", "-c", "echo run-passes", opts=("--restart", "always"))
    start(senv, "ok", "sh", "-c", "echo run-ok", opts=("--restart", "on-failure"))
    start(senv, "stopped", *script(senv, "ticker", TICKER), opts=("--restart", "always"))
    wait_log(senv, "stopped", b"tick 1")
    assert senv.superv("stop", "stopped", check=True).stdout.strip() == "stopped: killed SIGTERM"

    for name in ("fails", "passes"):
        wait_until(lambda name=name: supervisor_log_events(senv, "restart_limit", name),
                   timeout=30, message=f"{name} to reach its restart limit")
        restarts = supervisor_log_events(senv, "restarting", name)
        assert [float(r["delay"]) for r in restarts] == [0.3, 0.6]
        assert log_bytes(senv, name).count(f"run-{name}".encode()) == 3
        # Each restart came at least its delay after it was announced.
        starts = [when(s) for s in supervisor_log_events(senv, "started", name)]
        assert len(starts) == 3 and len(supervisor_log_events(senv, "exited", name)) == 3
        for announced, started in zip(restarts, starts[1:], strict=True):
            assert started - when(announced) >= float(announced["delay"])
    listed = sessions(senv)
    assert listed["fails"]["state"] == "exited 3" and listed["fails"]["restarts"] == 2
    assert listed["passes"]["state"] == "exited 0" and listed["passes"]["restarts"] == 2
    # on-failure leaves a success alone; a user's stop is never undone by "always".
    assert listed["ok"]["state"] == "exited 0" and listed["ok"]["restarts"] == 0
    assert listed["stopped"]["state"] == "killed SIGTERM"
    for name in ("ok", "stopped"):
        assert supervisor_log_events(senv, "restarting", name) == []


def test_pending_restart_survives_the_supervisor_and_stop_cancels_it(superv_env: SupervEnv) -> None:
    senv = superv_env
    senv.env["SUPERV_RESTART_BACKOFF"] = "1.5"
    start(senv, "again", "sh", "-c", "echo run-again; exit 1", opts=("--restart", "on-failure"))
    wait_until(lambda: supervisor_log_events(senv, "restarting", "again"), message="a restart")
    sigkill_and_wait(lock_holder(senv))  # during the backoff
    sessions(senv)  # a new supervisor: it must carry the restart out
    wait_until(lambda: log_bytes(senv, "again").count(b"run-again") >= 2, timeout=15,
               message="the restart the first supervisor had promised")
    # It fails again and waits 3 s this time: a stop now cancels the restart.
    wait_until(lambda: len(supervisor_log_events(senv, "restarting", "again")) >= 2)
    senv.superv("stop", "again", check=True)
    runs = log_bytes(senv, "again").count(b"run-again")
    time.sleep(4)  # longer than that backoff: the absence of a restart is the point
    assert log_bytes(senv, "again").count(b"run-again") == runs
    assert sessions(senv)["again"]["state"] == "exited 1"


# ---- reading and driving a session -------------------------------------------------------------


def test_logs_peek_send_kill_export(superv_env: SupervEnv) -> None:
    senv = superv_env
    start(senv, "talk", *script(senv, "echoer", ECHOER))
    wait_log(senv, "talk", b"ready")
    senv.superv("send", "talk", "--enter", "\x1b[31mred\x1b[0m", check=True)
    wait_log(senv, "talk", b"got: \x1b[31mred")
    raw = senv.superv("logs", "talk", check=True).stdout
    assert "\x1b[31mred" in raw
    plain = senv.superv("logs", "--plain", "talk", check=True).stdout
    assert "got: red\n" in plain and "\x1b" not in plain and "\r" not in plain

    follower = superv_proc(senv, "logs", "-f", "--plain", "talk")
    try:
        read_until(follower.stdout, b"got: red")
        senv.superv("send", "--enter", "talk", "followed", check=True)
        read_until(follower.stdout, b"got: followed")
        senv.superv("send", "--enter", "talk", "exit 4", check=True)
        out, _ = follower.communicate(timeout=15)
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()
    assert follower.returncode == 0 and b"bye" in out

    # An ended session: peek shows its last screen, export its record.
    wait_until(lambda: sessions(senv)["talk"]["state"] == "exited 4")
    screen = senv.superv("peek", "talk", check=True).stdout
    assert "got: followed" in screen and "bye" in screen
    # Once its worker is gone, attach shows the last screen and how it ended.
    wait_until(lambda: not (senv.run / "sessions" / "talk.sock").exists(), timeout=15)
    ended = senv.superv("attach", "-r", "talk", check=True)
    assert "got: followed" in ended.stdout and "bye" in ended.stdout
    assert ended.stderr.strip().startswith("[talk exited 4")
    tail = senv.superv("attach", "-r", "--tail", "1", "talk", check=True).stdout
    assert "bye" in tail and "got: followed" not in tail
    text = senv.superv("export", "talk", check=True).stdout
    assert "got: followed\n" in text and "\x1b" not in text
    markdown = senv.superv("export", "--format", "markdown", "talk", check=True).stdout
    assert markdown.startswith("# superv session `talk`") and "exited 4" in markdown
    assert "got: followed" in markdown
    records = [json.loads(line) for line in
               senv.superv("export", "--format", "jsonl", "talk", check=True).stdout.splitlines()]
    assert records[0]["type"] == "session" and records[0]["state"] == "exited 4"
    assert any(r.get("text") == "got: followed" for r in records[1:])
    assert all(r["type"] == "output" and isinstance(r["offset"], int) for r in records[1:])


def test_send_types_the_exact_bytes_given(superv_env: SupervEnv) -> None:
    """Words that are not UTF-8 (argv is bytes) are typed as those bytes, not a traceback."""
    senv = superv_env
    start(senv, "bytes", "sh", "-c", 'echo ready; while read -r line; do echo "got: $line"; done')
    wait_log(senv, "bytes", b"ready")
    sent = senv.superv("send", "--enter", "bytes", os.fsdecode(b"caf\xe9"), os.fsdecode(b"\xff"))
    assert sent.returncode == 0 and sent.stderr == "", sent.stderr
    wait_log(senv, "bytes", b"got: caf\xe9 \xff")


def test_ls_and_export_show_control_characters_as_escapes(superv_env: SupervEnv) -> None:
    """A command line with escapes and a newline: ls and export's header print them as
    \\e, \\n, \\xNN (raw, they cleared the screen, set the title and broke the table);
    --json stays exact."""
    senv = superv_env
    command = "echo hi #\x1b[2J\x1b]0;PWNED\x07\n"
    start(senv, "esc1", "sh", "-c", command, os.fsdecode(b"\xff"))
    wait_until(lambda: sessions(senv)["esc1"]["state"] == "exited 0")
    shown = "'echo hi #\\e[2J\\e]0;PWNED\\x07\\n' '\\xff'"
    table = senv.superv("ls", check=True).stdout
    assert not re.search(r"[\x00-\x1f\x7f]", table.replace("\n", ""))
    assert table.splitlines()[1].startswith("esc1 ") and table.splitlines()[1].endswith(shown)
    assert len(table.splitlines()) == 2
    assert sessions(senv)["esc1"]["command"] == ["sh", "-c", command, os.fsdecode(b"\xff")]
    header = senv.superv("export", "--format", "markdown", "esc1", check=True).stdout
    assert f"- command: `sh -c {shown}`\n" in header and "\x1b" not in header


def test_peek_running_and_logs_since(superv_env: SupervEnv) -> None:
    senv = superv_env
    start(senv, "slow", *script(senv, "echoer", ECHOER))
    wait_log(senv, "slow", b"ready")
    senv.superv("send", "--enter", "slow", "early", check=True)
    wait_log(senv, "slow", b"got: early")
    # --since goes through the log's time index (its lookup is unit-tested with explicit
    # times in test_log.py): nothing was printed in the last 0 s, everything in the last hour.
    assert senv.superv("logs", "--plain", "--since", "0s", "slow", check=True).stdout == ""
    everything = senv.superv("logs", "--plain", "--since", "1h", "slow", check=True).stdout
    assert "ready" in everything and "got: early" in everything
    bad = senv.superv("logs", "--since", "soon", "slow")
    assert "duration" in one_line_error(bad, 2)

    screen = senv.superv("peek", "slow", check=True).stdout
    assert screen.splitlines()[:3] == ["ready", "early", "got: early"]
    assert sessions(senv)["slow"]["clients"] == 0


def test_kill_sends_a_signal(superv_env: SupervEnv) -> None:
    senv = superv_env
    trap = "trap 'echo caught-INT' INT; echo armed; while :; do sleep 0.05; done"
    start(senv, "sig", "bash", "-c", trap)
    wait_log(senv, "sig", b"armed")
    senv.superv("kill", "-s", "INT", "sig", check=True)
    wait_log(senv, "sig", b"caught-INT")
    senv.superv("kill", "-s", "KILL", "sig", check=True)
    wait_until(lambda: sessions(senv)["sig"]["state"] == "killed SIGKILL")
    assert "unknown signal" in one_line_error(senv.superv("kill", "-s", "NOPE", "sig"), 2)
    assert "not running" in one_line_error(senv.superv("kill", "sig"), 1)


# ---- session records ----------------------------------------------------------------------------


def test_no_empty_records_prune_and_rm(superv_env: SupervEnv) -> None:
    senv = superv_env
    failed = senv.superv("start", "nope", "--", "/nonexistent/agent")
    line = one_line_error(failed, 1)
    assert "/nonexistent/agent" in line
    assert "nope" not in sessions(senv) and not senv.session_dir("nope").exists()

    start(senv, "silent", "true")
    start(senv, "spoke", "sh", "-c", "echo something")
    start(senv, "busy", *script(senv, "ticker", TICKER))
    wait_until(lambda: sessions(senv)["silent"]["state"] == "exited 0")
    wait_until(lambda: sessions(senv)["spoke"]["state"] == "exited 0")
    assert senv.superv("prune", check=True).stdout.splitlines() == ["removed silent"]
    assert set(sessions(senv)) == {"spoke", "busy"}
    assert not senv.session_dir("silent").exists()

    assert "running" in one_line_error(senv.superv("rm", "busy"), 1)
    assert alive(sessions(senv)["busy"]["agent_pid"])
    senv.superv("rm", "spoke", check=True)
    assert set(sessions(senv)) == {"busy"} and not senv.session_dir("spoke").exists()
    assert "no session named" in one_line_error(senv.superv("rm", "spoke"), 1)


def test_events_ends_when_its_reader_goes(superv_env: SupervEnv) -> None:
    """``superv events`` whose output pipe's reader is gone ends at once, not at the next
    event (over SSH: the box's events command of a closed channel lingered until then)."""
    senv = superv_env
    senv.superv("ls", check=True)  # the supervisor runs
    follower = superv_proc(senv, "events", "--json")
    try:
        assert follower.stdout is not None
        follower.stdout.close()  # whenever it comes, it must notice
        assert follower.wait(timeout=10) == 0
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.communicate()


def test_second_start_fails_and_events_report_lifecycle(superv_env: SupervEnv) -> None:
    senv = superv_env
    start(senv, "probe", *script(senv, "ticker", TICKER))
    again = senv.superv("start", "probe", "--", "true")
    assert "already running" in one_line_error(again, 1)

    events = EventStream(senv)
    try:
        events.subscribe("probe")
        start(senv, "ev", *script(senv, "echoer", ECHOER))
        started = events.wait_for("started", "ev")
        assert started["agent_pid"] == sessions(senv)["ev"]["agent_pid"]
        watcher = superv_proc(senv, "attach", "-r", "ev")
        read_until(watcher.stdout, b"ready")
        events.wait_for("attached", "ev")
        watcher.terminate()
        watcher.communicate(timeout=10)
        events.wait_for("detached", "ev")
        senv.superv("send", "--enter", "ev", "exit 0", check=True)
        exited = events.wait_for("exited", "ev")
        assert exited["state"] == "exited 0"
        order = [e["event"] for e in events.seen if e.get("session") == "ev"]
        assert order.index("started") < order.index("attached") < order.index("detached")
        assert order.index("detached") < order.index("exited")
    finally:
        events.close()


def test_usage_errors_exit_2(superv_env: SupervEnv) -> None:
    senv = superv_env
    for args in [("start", "x"), ("start", "--restart", "sometimes", "x", "--", "true"),
                 ("start", "--env", "NOEQUALS", "x", "--", "true"), ("frobnicate",),
                 ("send", "x"), ("attach", "--tail", "-1", "x")]:
        one_line_error(senv.superv(*args), 2)
    assert "no session named" in one_line_error(senv.superv("peek", "ghost"), 1)
    # A byte that is not UTF-8 (a surrogate escape in argv) was a codec's error message.
    for key in ("\udcff", "xy"):
        line = one_line_error(senv.superv("attach", "--detach-key", key, "x"), 2)
        assert "cannot read detach key" in line and "or one character" in line, line
    # An unknown option of start is named, not hidden behind "NAME is required".
    for args in [("start", "-x", "--", "true"), ("start", "-x", "n", "--", "true")]:
        line = one_line_error(senv.superv(*args), 2)
        assert "unrecognized arguments: -x" in line, line
    assert "no session name given" in one_line_error(senv.superv("start", "--", "true"), 2)
    a_file = senv.root / "a-file"
    a_file.touch()
    line = one_line_error(senv.superv("start", "--cwd", str(a_file), "x", "--", "true"), 2)
    assert "is not a directory" in line, line


def test_nothing_superv_writes_is_readable_by_others(superv_env: SupervEnv) -> None:
    """Logs and snapshots name commands and hold everything the agent printed."""
    senv = superv_env
    start(senv, "private", "sh", "-c", "echo secret-output; sleep 30")
    wait_log(senv, "private", b"secret-output")
    senv.superv("stop", "private", check=True)  # snapshots, registry, logs all written
    exposed = []
    for root in (senv.home, senv.run):
        for path in [root, *root.rglob("*")]:
            mode = path.lstat().st_mode & 0o777
            if mode & 0o077:
                exposed.append(f"{path.relative_to(senv.root)} {mode:o}")
    assert not exposed, exposed
