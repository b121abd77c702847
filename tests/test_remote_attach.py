"""``superv attach HOST:NAME`` end to end, through a real OpenSSH sshd on 127.0.0.1.

Nothing we own is mocked: a real session worker (``python -m agent_worker``) runs a real
agent on a PTY; the client is the real ``superv`` CLI (asyncssh); sshd runs the real
``superv attach --stdio`` bridge on the "box".  Faults are real too: per-connection sshd
processes are SIGKILLed and SIGSTOPped mid-stream, host keys are wrong, keys refused.

The stream checks compare what the client process wrote on its stdout (stdout is a pipe,
so the client writes exactly the session's bytes there and its notices on stderr) with
the session's durable log, ``$SUPERV_HOME/sessions/NAME/output.log``, byte for byte.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import pwd
import random
import re
import shlex
import signal
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import SupervEnv, wait_until
from ssh_fixtures import SshFactory, sshd, sshd_factory, superv_installed  # noqa: F401
from sshd import REPO, VENV_BIN, SshServer, children, keygen, signal_all
from test_present import peek_lines, shown_lines
from tmux_helpers import Tmux as Panes
from worker_helpers import PATTERN_FN, PY, log_bytes, log_size, pid_gone, start_worker, wait_exit

from agent_worker.paths import PathError
from supervisor.remote_attach import parse_target
from supervisor.remote_attempt import remote_command_line
from supervisor.remote_hints import bytes_from_here, from_here

SUPERV = str(VENV_BIN / "superv")
LINE = 101  # bytes per pattern line in the log: 99 visible + CR LF (the PTY's ONLCR)

# Prints N pattern lines at once, then waits for one line of input and exits 0: the test
# decides when the session ends (after checking the stream), through the client's input.
BULK_AGENT = (
    PATTERN_FN
    + "import sys\n"
    "sys.stdout.buffer.write(pattern(int(sys.argv[1])))\n"
    "sys.stdout.flush()\n"
    "sys.stdin.readline()\n"
)


# ------------------------------------------------------------------------------ helpers


def client_env(senv: SupervEnv, server: SshServer, **extra: str) -> dict[str, str]:
    """The laptop: our ssh config, an empty HOME (no stray keys), no ssh-agent."""
    home = senv.root / "laptop"
    home.mkdir(exist_ok=True)
    env = dict(senv.env)
    env.pop("SSH_AUTH_SOCK", None)
    env.pop("SUPERV_REMOTE_COMMAND", None)
    env.update(server.client_env, HOME=str(home), **extra)
    return env


@contextlib.contextmanager
def keyboard() -> Iterator[tuple[int, int]]:
    """A terminal for a client's stdin, as a user's shell gives it (an attach that types
    needs one): the pty's (master, slave); what is written on the master is typed."""
    master, slave = os.openpty()
    try:
        yield master, slave
    finally:
        os.close(master)
        os.close(slave)


class Client:
    """A running client process, its stdout collected byte for byte, stderr by line; its
    stdin is a terminal (:func:`keyboard`), on which :meth:`send` types (``keys=False``:
    /dev/null, no terminal)."""

    def __init__(self, argv: list[str], env: dict[str, str], keys: bool = True) -> None:
        with keyboard() as (master, slave):
            self.keys = os.dup(master)  # the client's keyboard, until kill()
            self.proc = subprocess.Popen(
                argv,
                env=env,
                stdin=slave if keys else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        self.out = bytearray()
        self.err: list[tuple[float, str]] = []
        self.out_closed = False
        self.cond = threading.Condition()
        self._threads = [
            threading.Thread(target=self._read_out, daemon=True),
            threading.Thread(target=self._read_err, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _read_out(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            data = os.read(fd, 1 << 20)
            with self.cond:
                if not data:
                    self.out_closed = True
                    self.cond.notify_all()
                    return
                self.out += data
                self.cond.notify_all()

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            with self.cond:
                self.err.append((time.monotonic(), raw.decode(errors="replace").rstrip("\n")))
                self.cond.notify_all()

    def wait_out(self, size: int, timeout: float = 30.0) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.out) >= size or self.out_closed, timeout)
            got = len(self.out)
        assert ok and got >= size, (
            f"client has {got} of {size} bytes after {timeout}s; stderr: {self.stderr()[-800:]}"
        )

    def wait_err(self, needle: str, after: int = 0, timeout: float = 15.0) -> float:
        """When a stderr line containing ``needle`` arrived (the ``after``-th line on)."""

        def found() -> float | None:
            return next((t for t, line in self.err[after:] if needle in line), None)

        with self.cond:
            self.cond.wait_for(lambda: found() is not None or self.proc.poll() is not None,
                               timeout)
            when = found()
        assert when is not None, f"no {needle!r} on the client's stderr: {self.stderr()}"
        return when

    def wait_err_count(self, needle: str, count: int, timeout: float = 15.0) -> None:
        """Until ``count`` stderr lines contain ``needle``."""

        def seen() -> int:
            return sum(needle in line for _, line in self.err)

        with self.cond:
            ok = self.cond.wait_for(lambda: seen() >= count or self.proc.poll() is not None,
                                    timeout)
        assert ok and seen() >= count, f"expected {count} x {needle!r}: {self.stderr()}"

    def stderr(self) -> str:
        with self.cond:
            return "\n".join(line for _, line in self.err)

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self.keys, view):]

    def finish(self, timeout: float = 30.0) -> int:
        try:
            code = self.proc.wait(timeout)
        finally:
            self.kill()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait(10)
        for thread in self._threads:
            thread.join(10)
        if self.keys >= 0:  # kill() may come twice: never close a number reused since
            os.close(self.keys)
            self.keys = -1


@pytest.fixture
def clients() -> Iterator[Callable[[list[str], dict[str, str]], Client]]:
    started: list[Client] = []

    def start(argv: list[str], env: dict[str, str]) -> Client:
        client = Client(argv, env)
        started.append(client)
        return client

    yield start
    for client in started:
        client.kill()


def assert_same_stream(got: bytes, log: bytes) -> None:
    """Byte-exact, with a readable failure: where the two first differ."""
    if got == log:
        return
    common = min(len(got), len(log))
    first = next((i for i in range(common) if got[i] != log[i]), common)
    raise AssertionError(
        f"client received {len(got)} bytes, the log holds {len(log)}; first difference at "
        f"offset {first}: client {bytes(got[first:first + 40])!r} log {log[first:first + 40]!r}"
    )


def run_cli(env: dict[str, str], *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``superv ARGS`` as run from a user's terminal (stdin; its output is captured)."""
    with keyboard() as (_, slave):
        return subprocess.run(
            [SUPERV, *args],
            env=env,
            stdin=slave,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, f"exit {proc.returncode}; stderr: {proc.stderr!r}"
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {proc.stderr!r}"
    assert "Traceback" not in proc.stderr
    return lines[0]


def start_bulk(senv: SupervEnv, name: str, lines: int) -> subprocess.Popen[bytes]:
    proc, ready = start_worker(senv, name, [PY, "-c", BULK_AGENT, str(lines)])
    assert ready["ok"], ready
    return proc


# ------------------------------------------------------------------- pure pieces first


def test_target_parsing_and_remote_command_quoting() -> None:
    t = parse_target("alice@box.example:fix-tests")
    assert (t.user, t.host, t.name) == ("alice", "box.example", "fix-tests")
    t = parse_target("[::1]:s1")
    assert (t.user, t.host, t.name) == (None, "::1", "s1")
    for bad in ("box:", ":name", "noseparator", "box:bad name", "box:$(reboot)", "@box:x",
                "h\udcff:x", "ho\nst:x", "box\n:x", "[zz]:x", "[fe80::1%a\nb]:x",
                "-oProxyCommand=x:x"):
        with pytest.raises(ValueError):
            parse_target(bad)
    line = remote_command_line("fix-tests", None)
    assert line.startswith(b"sh -c ") and b"attach --stdio fix-tests" in line
    assert remote_command_line("a.b_c", "/opt/superv/bin/superv") == (
        b"/opt/superv/bin/superv attach --stdio a.b_c"
    )
    # A command that is not UTF-8 (from the environment or argv) goes as the bytes it was.
    assert remote_command_line("a", os.fsdecode(b"/opt/\xff/superv")) == (
        b"/opt/\xff/superv attach --stdio a"
    )
    # A hostile name never reaches a shell: it is refused before any command is built.
    with pytest.raises(PathError):
        remote_command_line("x;rm -rf ~", None)


# ------------------------------------------------------------------------- the stream


@pytest.mark.timeout(110)
def test_50mb_stream_survives_20_killed_connections_byte_exact(
    superv_env: SupervEnv, sshd: SshServer, clients: Callable[..., Client]  # noqa: F811
) -> None:
    lines = 500_000
    expected = lines * LINE  # 50.5 MB in the log
    start_bulk(superv_env, "big", lines)
    client = clients([SUPERV, "attach", "--from-start", "box:big"], client_env(superv_env, sshd))
    rng = random.Random(20)
    kills = 0
    while kills < 25:
        # Kill at uneven points once the new connection streams, so frames are cut in
        # their middle, not at boundaries.  (After the drop was noticed, every new byte
        # came over the new connection: the old one's bytes were all delivered by then.)
        mark = len(client.out) + rng.randrange(200_000, 1_200_000)
        if mark > expected - 2_000_000:
            break
        client.wait_out(mark)
        connections = sshd.connections()
        assert connections, "the client is receiving, so it must have a connection"
        signal_all(connections, signal.SIGKILL)
        kills += 1
        client.wait_err_count("reconnecting to box", kills)
    assert kills >= 20
    client.wait_out(expected, timeout=60)
    # Every kill was noticed and survived by reconnecting.
    assert sum("reconnecting to box" in line for _, line in client.err) >= kills
    client.send(b"done\r")  # the agent ends; the client reports it and exits 0
    assert client.finish() == 0, client.stderr()
    assert client.err[-1][1] == "[big exited with status 0]"
    assert_same_stream(client.out, log_bytes(superv_env, "big"))


@pytest.mark.timeout(60)
def test_frozen_link_is_noticed_within_5s_and_the_stream_resumes_exactly(
    superv_env: SupervEnv, sshd: SshServer, clients: Callable[..., Client]  # noqa: F811
) -> None:
    lines = 200_000
    expected = lines * LINE
    start_bulk(superv_env, "frozen", lines)
    client = clients(
        [SUPERV, "attach", "--from-start", "box:frozen"], client_env(superv_env, sshd)
    )
    client.wait_out(2_000_000)

    # A short freeze (the link stalls, then comes back before keepalives give up): the
    # same connection carries on, nothing is lost or repeated.
    (first,) = sshd.connections()
    tree = sshd.connection_tree(first)
    signal_all(tree, signal.SIGSTOP)
    time.sleep(1.5)  # the length of the outage, not a synchronisation
    signal_all(tree, signal.SIGCONT)
    client.wait_out(4_000_000)
    assert sshd.connections() == [first]
    assert not any("reconnecting" in line for _, line in client.err)

    # A long freeze: keepalives notice it within 5 s and a new connection resumes.
    signal_all(tree, signal.SIGSTOP)
    frozen_at = time.monotonic()
    try:
        noticed = client.wait_err("reconnecting to box", timeout=10) - frozen_at
        assert noticed <= 5.0, f"a frozen link took {noticed:.1f}s to notice"
        client.wait_out(expected, timeout=30)
        assert first not in sshd.connections()[-1:]
    finally:
        signal_all(tree, signal.SIGCONT)
    client.send(b"done\r")
    assert client.finish() == 0, client.stderr()
    assert_same_stream(client.out, log_bytes(superv_env, "frozen"))


# ----------------------------------------------------------------- clear refusals


@pytest.mark.timeout(60)
def test_host_key_unknown_or_changed_is_refused(superv_env: SupervEnv, sshd: SshServer) -> None:  # noqa: F811
    start_bulk(superv_env, "keys", 10)
    empty = superv_env.root / "empty_known_hosts"
    empty.write_text("")
    line = one_line_error(
        run_cli(client_env(superv_env, sshd, SUPERV_KNOWN_HOSTS=str(empty)), "attach", "box:keys")
    )
    assert "host key of box is unknown" in line
    assert f"accept it once with: ssh -F {superv_env.root}" in line  # the config superv was given
    assert line.endswith(f"-o UserKnownHostsFile={empty} box; then try again")

    # The config saying "UserKnownHostsFile none" does not turn checking off.
    lax = superv_env.root / "lax_config"
    lax.write_text(sshd.config.read_text().replace(
        f"UserKnownHostsFile {sshd.known_hosts}", "UserKnownHostsFile none"))
    line = one_line_error(
        run_cli(client_env(superv_env, sshd, SUPERV_SSH_CONFIG=str(lax)), "attach", "box:keys")
    )
    assert "host key of box is unknown" in line

    imposter = keygen(superv_env.root / "imposter", "imposter")
    changed = superv_env.root / "changed_known_hosts"
    changed.write_text(f"[127.0.0.1]:{sshd.port} {imposter}\n")
    line = one_line_error(
        run_cli(client_env(superv_env, sshd, SUPERV_KNOWN_HOSTS=str(changed)), "attach",
                "box:keys")
    )
    assert "host key of box has CHANGED" in line
    assert f"with: ssh-keygen -R '[127.0.0.1]:{sshd.port}' -f {changed};" in line


@pytest.mark.timeout(60)
def test_authentication_failure_and_unreachable_host(
    superv_env: SupervEnv, sshd: SshServer  # noqa: F811
) -> None:
    env = client_env(superv_env, sshd)
    line = one_line_error(run_cli(env, "attach", "wrongkey:any"))
    assert line.startswith("superv: authentication to wrongkey failed")
    line = one_line_error(run_cli(env, "attach", "closed:any"))
    assert line == (
        f"superv: cannot reach closed (127.0.0.1 port {sshd.closed_port}): Connection refused"
    )


@pytest.mark.timeout(60)
def test_no_such_session_and_missing_remote_superv(
    superv_env: SupervEnv, sshd_factory: SshFactory  # noqa: F811
) -> None:
    box = sshd_factory()
    env = client_env(superv_env, box)
    line = one_line_error(run_cli(env, "attach", "box:nosuch"))
    assert line == "superv: box: no such session 'nosuch' (see 'superv ls box:')"

    bare = sshd_factory(path="/usr/bin:/bin")  # a box where superv is not installed
    env = client_env(superv_env, bare)
    line = one_line_error(run_cli(env, "attach", "box:any"))
    assert line.startswith("superv: superv is not installed on box")
    assert "--remote-command" in line
    for args in (("logs", "box:any"), ("ls", "box:")):  # the box's "command not found" not shown
        assert one_line_error(run_cli(env, *args)).startswith("superv: superv is not installed on box")
    line = one_line_error(
        run_cli(env, "attach", "--remote-command", "/nowhere/superv", "box:any")
    )
    assert line.startswith("superv: remote command '/nowhere/superv' not found on box")
    # ...and naming it explicitly works (the env var form of --remote-command).
    attach_until_the_end(superv_env, "named", client_env(superv_env, bare,
                                                         SUPERV_REMOTE_COMMAND=SUPERV))


def attach_until_the_end(senv: SupervEnv, name: str, env: dict[str, str]) -> None:
    """A new session of three lines, attached with ``env`` until it ends: every byte shown."""
    start_bulk(senv, name, 3)
    client = Client([SUPERV, "attach", "--from-start", f"box:{name}"], env)
    try:
        client.wait_out(3 * LINE)
        client.send(b"done\r")
        assert client.finish() == 0, client.stderr()
    finally:
        client.kill()
    assert_same_stream(client.out, log_bytes(senv, name))


def test_the_boxs_hints_are_rewritten_for_the_box_as_named() -> None:
    said = ("session x is not running (exited 0): 'superv logs x' shows its output, "
            "'superv resume x' runs it again; 'superv rm x' forgets it (see 'superv ls')")
    assert from_here(said, "me@box", "x") == (
        "session x is not running (exited 0): 'superv logs me@box:x' shows its output, "
        "'superv resume me@box:x' runs it again; 'superv rm x' forgets it "
        "(see 'superv ls me@box:')"
    )
    # Only the session named, only commands that take HOST:, words of a message stay.
    for text in ("superv logs x.y", "superv logs xy", "(superv approve sends what ls shows)",
                 "'superv ls box:' lists them", "superv lsx", "'superv top'"):
        assert from_here(text, "box", "x") == text
    assert from_here("answer it in the session (superv attach x).", "[::1]", "x") == (
        "answer it in the session (superv attach [::1]:x)."
    )
    assert bytes_from_here(b"\xff 'superv ls'\n", "box") == b"\xff 'superv ls box:'\n"


@pytest.mark.timeout(60)
def test_a_box_names_its_commands_as_they_run_from_here(
    superv_env: SupervEnv, sshd: SshServer  # noqa: F811
) -> None:
    """The box says 'superv ls' for someone on the box; over SSH the line names the box
    as the user did: 'superv ls me@box:', 'superv resume box:NAME'."""
    env = client_env(superv_env, sshd)
    me = pwd.getpwuid(os.getuid()).pw_name
    line = one_line_error(run_cli(env, "attach", f"{me}@box:nosuch"))
    assert line == f"superv: {me}@box: no such session 'nosuch' (see 'superv ls {me}@box:')"
    for command in ("logs", "stop"):  # the box's CLI, the box's supervisor
        line = one_line_error(run_cli(env, command, "box:nosuch"))
        assert line == "superv: no session named nosuch: 'superv ls box:' lists them", command
    worker, ready = start_worker(superv_env, "gone", [PY, "-c", "pass"])
    assert ready["ok"], ready
    assert wait_exit(worker) == 0
    line = one_line_error(run_cli(env, "send", "box:gone", "hi"))
    assert line == ("superv: session gone is not running (exited 0): 'superv logs box:gone' "
                    "shows its output, 'superv resume box:gone' runs it again")


@pytest.mark.timeout(60)
def test_a_remote_command_that_is_not_utf8_is_run_as_its_bytes(
    superv_env: SupervEnv, sshd_factory: SshFactory  # noqa: F811
) -> None:
    """SUPERV_REMOTE_COMMAND naming a superv in a directory whose name is not UTF-8 runs
    it, for attach as for the other commands (attach ended in an "internal error"); one
    that names nothing there says which variable to check."""
    bare = sshd_factory(path="/usr/bin:/bin")  # superv only where the variable says
    where = os.fsencode(superv_env.root) + b"/bin-\xff"
    os.mkdir(where)
    os.symlink(SUPERV, where + b"/superv")
    command = os.fsdecode(where + b"/superv")
    env = client_env(superv_env, bare, SUPERV_REMOTE_COMMAND=command)
    attach_until_the_end(superv_env, "latin", env)
    assert run_cli(env, "ls", "box:").returncode == 0

    wrong = os.fsdecode(b"/nowhere/\xff/superv")
    env = client_env(superv_env, bare, SUPERV_REMOTE_COMMAND=wrong)
    line = one_line_error(run_cli(env, "attach", "box:latin"))
    assert line == ("superv: remote command '/nowhere/\\xff/superv' not found on box: "
                    "check --remote-command / SUPERV_REMOTE_COMMAND")
    line = one_line_error(run_cli(env, "logs", "box:latin"))
    assert line == ("superv: remote command '/nowhere/\\xff/superv' not found on box: "
                    "check SUPERV_REMOTE_COMMAND")


@pytest.mark.timeout(60)
def test_without_a_terminal_only_a_read_only_attach_starts_as_for_a_local_one(
    superv_env: SupervEnv, sshd: SshServer  # noqa: F811
) -> None:
    """Nobody can type without a terminal on stdin, and a client that types would size
    the agent's window (to 80x24) under the people watching it: remote attach refuses as
    the local one does, in the same words, before connecting; ``-r`` records the stream."""
    start_bulk(superv_env, "rec", 3)
    wait_until(lambda: log_size(superv_env, "rec") >= 3 * LINE, message="the agent's output")
    env = client_env(superv_env, sshd)
    for target in ("box:rec", "rec"):
        for stdin in (subprocess.DEVNULL, subprocess.PIPE):
            proc = subprocess.run([SUPERV, "attach", target], env=env, stdin=stdin,
                                  capture_output=True, text=True, timeout=30)
            assert (proc.returncode, proc.stdout) == (2, ""), proc.stderr
            assert proc.stderr == (
                f"superv: attach needs a terminal on stdin; use 'superv attach -r {target}' "
                f"to only watch, or 'superv send {target} TEXT' to type into it\n"
            )
    assert sshd.connections() == [] and not ssh_logins(sshd), "refused after connecting"
    reader = Client([SUPERV, "attach", "-r", "--from-start", "box:rec"], env, keys=False)
    try:
        reader.wait_out(3 * LINE)
    finally:
        reader.kill()
    assert_same_stream(reader.out, log_bytes(superv_env, "rec"))


# ------------------------------------------------------ OpenSSH's own client, -tt


TICKER = (
    "import itertools, time\n"
    "for i in itertools.count():\n"
    "    print(i, flush=True)\n"
    "    time.sleep(0.02)\n"
)


@pytest.mark.timeout(60)
def test_killed_ssh_tt_connection_leaves_the_agent_running(
    superv_env: SupervEnv, sshd: SshServer  # noqa: F811
) -> None:
    worker, ready = start_worker(superv_env, "tick", [PY, "-c", TICKER])
    ssh = subprocess.Popen(
        sshd.ssh_argv("superv", "attach", "tick", tty=True),
        env=client_env(superv_env, sshd),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert ssh.stdout is not None
        assert ssh.stdout.read1(65536)  # the attach is up and painting
        (connection,) = sshd.wait_connections(1)
        os.kill(connection, signal.SIGKILL)
        assert ssh.wait(15) == 255
    finally:
        if ssh.poll() is None:
            ssh.kill()
            ssh.wait()
    size = log_size(superv_env, "tick")
    # The agent and its worker outlive the connection (and the SIGHUP the remote attach got),
    # and the agent keeps printing into the log.
    wait_until(lambda: log_size(superv_env, "tick") > size + 200, timeout=10,
               message="the agent to keep printing after the ssh connection died")
    assert not pid_gone(ready["agent_pid"]) and not pid_gone(ready["worker_pid"])
    assert worker.poll() is None


# ---------------------------------------------------- the user's terminal, via tmux

TUI_AGENT = r"""
import sys
sys.stdout.write("\x1b[?1049h\x1b[?25l\x1b[?1000hREADY\r\n")
sys.stdout.flush()
for line in sys.stdin:
    if line.strip() == "quit":
        break
    sys.stdout.write("got:" + line)
    sys.stdout.flush()
"""


class Tmux:
    """A tmux server of our own, running a plain /bin/sh (no readline) in one pane."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.socket = root / "tmux.sock"
        shell_env = {
            key: env[key]
            for key in ("PATH", "HOME", "SUPERV_HOME", "SUPERV_RUNTIME_DIR", "SUPERV_SSH_CONFIG")
        }
        shell_env.update(PS1="$ ", TERM="screen")
        command = "env -i " + " ".join(shlex.quote(f"{k}={v}") for k, v in shell_env.items())
        self.run("new-session", "-d", "-s", "t", "-x", "100", "-y", "30", command + " /bin/sh")
        self.pane_pid = int(self.run("display", "-p", "-t", "t", "#{pane_pid}").strip())

    def run(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-S", str(self.socket), *args],
            check=True, capture_output=True, text=True, timeout=10,
        ).stdout

    def type(self, text: str, enter: bool = True) -> None:
        self.run("send-keys", "-t", "t", "-l", text)
        if enter:
            self.run("send-keys", "-t", "t", "Enter")

    def key(self, name: str) -> None:
        self.run("send-keys", "-t", "t", name)

    def screen(self) -> str:
        return self.run("capture-pane", "-p", "-t", "t")

    def wait(self, pattern: str, timeout: float = 15.0) -> str:
        regex = re.compile(pattern)
        return wait_until(lambda: regex.search(self.screen()) and self.screen(), timeout=timeout,
                          message=f"{pattern!r} on the tmux screen")

    def flags(self) -> str:
        return self.run("display", "-p", "-t", "t", "#{alternate_on} #{cursor_flag}").strip()

    def kill(self) -> None:
        with contextlib.suppress(Exception):
            self.run("kill-server")


@pytest.mark.timeout(90)
def test_terminal_is_restored_after_every_exit_path(
    superv_env: SupervEnv, sshd: SshServer  # noqa: F811
) -> None:
    start_worker(superv_env, "tui", [PY, "-c", TUI_AGENT])
    tmux = Tmux(superv_env.root, client_env(superv_env, sshd))
    saved = superv_env.root / "stty.saved"
    try:
        tmux.type(f"stty -g > {saved}; clear")
        wait_until(lambda: saved.exists() and saved.read_text().strip(), timeout=10)
        step = 0

        def attach(*args: str, env: str = "") -> int:
            nonlocal step
            step += 1
            tmux.type(
                f"clear; {env} {SUPERV} attach --from-start {' '.join(args)}; echo EXIT{step}=$?"
            )
            return step

        def connected(step: int) -> None:
            # The replay switched to the alternate screen: the client is connected (keys
            # typed before that would be discarded, by design).
            wait_until(lambda: tmux.flags() == "1 0", timeout=15, message="the replay")
            tmux.type(f"ping{step}")
            tmux.wait(f"got:ping{step}")

        def restored(step: int, code: int, message: str) -> None:
            screen = tmux.wait(f"EXIT{step}=\\d+")
            assert f"EXIT{step}={code}" in screen, screen
            assert message in screen, screen
            assert tmux.flags() == "0 1", "alternate screen left on or cursor hidden"
            # The tty is back to its saved modes (echo, icanon...): compare, and the
            # command we type shows on the screen as we type it.
            tmux.type(f"stty -g | cmp -s - {saved} && echo SAME{step}")
            tmux.wait(f"(?m)^SAME{step}$")
            assert f"stty -g | cmp -s - {saved}" in tmux.screen()

        def client_pid() -> int:
            return wait_until(lambda: children(tmux.pane_pid), timeout=10)[0]

        def drop_link() -> list[int]:
            """Kill the connection and freeze the listener: reconnects hang."""
            assert sshd.proc is not None
            frozen = [sshd.proc.pid]
            signal_all(frozen, signal.SIGSTOP)
            signal_all(sshd.connections(), signal.SIGKILL)
            tmux.wait("reconnecting to box")
            return frozen

        # 1. The detach key while connected.
        n = attach("box:tui")
        connected(n)
        tmux.key("C-\\")
        restored(n, 0, "[detached from tui]")

        # 2. SIGTERM to the client.
        n = attach("box:tui")
        connected(n)
        os.kill(client_pid(), signal.SIGTERM)
        restored(n, 143, "")

        # 3. A refusal on the first connect (unknown host key).
        n = attach("box:tui", env="SUPERV_KNOWN_HOSTS=/dev/null")
        restored(n, 1, "host key of box is unknown")

        # 4. The detach key while disconnected.
        n = attach("box:tui")
        connected(n)
        frozen = drop_link()
        tmux.key("C-\\")
        restored(n, 0, "[detached from tui]")
        signal_all(frozen, signal.SIGCONT)

        # 5. Ctrl-C while disconnected.
        n = attach("box:tui")
        connected(n)
        frozen = drop_link()
        tmux.key("C-c")
        restored(n, 130, "[gave up reconnecting to box]")
        signal_all(frozen, signal.SIGCONT)

        # 6. A refusal by the box, in a terminal: one line and back (the channel of the
        #    box's notices kept it open, deaf to the detach key and to SIGTERM).
        n = attach("box:nosuch")
        restored(n, 1, "no such session 'nosuch'")
        # ...also when the box's notices command does not notice the channel close (one
        # that never writes): the client closes its end and goes.
        deaf = superv_env.root / "deaf-events"
        deaf.write_text(f'#!/bin/sh\ncase "$1" in events) exec sleep 1000;; esac\nexec {SUPERV} "$@"\n')
        deaf.chmod(0o755)
        n = attach("box:nosuch", env=f"SUPERV_REMOTE_COMMAND={deaf}")
        restored(n, 1, "no such session 'nosuch'")

        # 7. Suspended by the shell's job control (SIGTSTP) and brought back with fg: the
        #    shell gets its line mode while we are stopped, we get raw mode back after.
        # (Alone on its line: the shell runs the rest of a list once a job stops.)
        step += 1
        n = step
        tmux.type(f"clear; {SUPERV} attach --from-start box:tui")
        connected(n)
        pane_tty = tmux.run("display", "-p", "-t", "t", "#{pane_tty}").strip()

        def line_mode() -> bool:
            fd = os.open(pane_tty, os.O_RDONLY | os.O_NOCTTY)
            try:
                return bool(termios.tcgetattr(fd)[3] & termios.ICANON)
            finally:
                os.close(fd)

        os.kill(client_pid(), signal.SIGTSTP)
        tmux.wait("Stopped")
        assert line_mode() and tmux.flags() == "0 1", "the terminal not given back"
        tmux.type("fg")
        wait_until(lambda: not line_mode(), timeout=10, message="raw mode again")
        tmux.type("pong")
        tmux.wait("got:pong")
        tmux.key("C-\\")
        tmux.wait(re.escape("[detached from tui]"))
        tmux.type(f"echo EXIT{n}=$?")
        restored(n, 0, "[detached from tui]")

        # 8. The session ends.
        n = attach("box:tui")
        connected(n)
        tmux.type("quit")
        restored(n, 0, "[tui exited with status 0]")
    finally:
        tmux.kill()


# An agent that prints a batch, waits until the test creates a file, prints its last
# words and exits 7: the test makes it end while the client's link is down.
ENDING_AGENT = (
    PATTERN_FN
    + "import os, sys, time\n"
    "sys.stdout.buffer.write(pattern(int(sys.argv[1])))\n"
    "sys.stdout.flush()\n"
    "while not os.path.exists(sys.argv[2]):\n"
    "    time.sleep(0.02)\n"
    "print('last words before the end')\n"
    "sys.exit(7)\n"
)


@pytest.mark.timeout(60)
def test_session_that_ends_during_an_outage_is_finished_from_the_log(
    superv_env: SupervEnv, sshd: SshServer, clients: Callable[..., Client]  # noqa: F811
) -> None:
    go = superv_env.root / "go"
    worker, ready = start_worker(
        superv_env, "ending", [PY, "-c", ENDING_AGENT, "2000", str(go)]
    )
    assert ready["ok"], ready
    client = clients([SUPERV, "attach", "--from-start", "box:ending"], client_env(superv_env, sshd))
    client.wait_out(2000 * LINE)

    # The link freezes; meanwhile the agent finishes and its worker exits, long before the
    # client reconnects: the rest must come from the session's files.
    (first,) = sshd.wait_connections()
    tree = sshd.connection_tree(first)
    signal_all(tree, signal.SIGSTOP)
    try:
        go.touch()
        assert wait_exit(worker, timeout=30) == 0
        signal_all(tree, signal.SIGKILL)
    finally:
        signal_all(tree, signal.SIGCONT)

    assert client.finish() == 0, client.stderr()
    assert "exited" in client.err[-1][1] and "7" in client.err[-1][1], client.stderr()
    log = log_bytes(superv_env, "ending")
    assert log.endswith(b"last words before the end\r\n")
    assert_same_stream(client.out, log)


@pytest.mark.timeout(60)
def test_ls_logs_and_peek_over_ssh(superv_env: SupervEnv, sshd: SshServer) -> None:  # noqa: F811
    start_bulk(superv_env, "far", 300)
    wait_until(lambda: log_size(superv_env, "far") >= 300 * LINE, message="the agent's output")
    env = client_env(superv_env, sshd)

    logs = subprocess.run([SUPERV, "logs", "box:far"], env=env, capture_output=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    assert logs.returncode == 0, logs.stderr
    assert logs.stdout == log_bytes(superv_env, "far")  # byte for byte, from the box's log
    plain = run_cli(env, "logs", "--plain", "box:far")
    assert plain.returncode == 0 and "\r" not in plain.stdout

    last_line = log_bytes(superv_env, "far").rstrip(b"\r\n").rsplit(b"\r\n", 1)[-1].decode()
    peek = run_cli(env, "peek", "box:far")
    assert peek.returncode == 0, peek.stderr
    # The box's 80-column screen wraps the 99-character lines: join its rows back.
    assert peek.stdout.replace("\n", "").endswith(last_line)

    listed = run_cli(env, "ls", "--json", "box:")
    assert listed.returncode == 0, listed.stderr
    assert [s["state"] for s in json.loads(listed.stdout) if s["name"] == "far"] == ["running"]

    assert "no session named nosuch" in one_line_error(run_cli(env, "logs", "box:nosuch"))
    assert "cannot" in one_line_error(run_cli(env, "peek", "closed:far"))
    # A reader that stops early (| head): the end of our output, not "cannot reach box".
    start_bulk(superv_env, "long", 20_000)  # more than a pipe holds
    wait_until(lambda: log_size(superv_env, "long") >= 20_000 * LINE, message="a long log")
    read = subprocess.Popen([SUPERV, "logs", "box:long"], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert read.stdout is not None and read.stderr is not None
    read.stdout.read(LINE)
    read.stdout.close()
    assert read.wait(timeout=30) == 0 and read.stderr.read() == b""


# ------------------------------------------------- errors end the client, promptly

# A remote "superv attach --stdio" that starts the conversation properly (a Welcome, then
# output), but at an offset so near the end of the 64-bit range that the client's next
# position does not fit the protocol; then it hangs up.  The reconnect that follows cannot
# even be asked for: an error inside the connect loop, which must end the client.
EDGE_OF_OFFSETS = """\
import os, sys
from agent_worker import protocol as p
os.write(1, p.encode(p.Welcome({"name": "edge"})))
os.write(1, p.encode(p.Output((1 << 64) - 4, b"12345678")))
"""


def attach_to_fake_bridge(
    senv: SupervEnv, server: SshServer, name: str, source: str
) -> subprocess.CompletedProcess[str]:
    """``superv attach box:NAME`` where the box's bridge is the Python program ``source``."""
    script = senv.root / f"{name}.py"
    script.write_text(source)
    return run_cli(client_env(senv, server), "attach", "--remote-command", f"{PY} {script}",
                   f"box:{name}", timeout=20)


@pytest.mark.timeout(60)
def test_an_error_inside_the_connect_loop_ends_the_client_with_one_line(
    superv_env: SupervEnv, sshd: SshServer  # noqa: F811
) -> None:
    began = time.monotonic()
    proc = attach_to_fake_bridge(superv_env, sshd, "edge", EDGE_OF_OFFSETS)
    took = time.monotonic() - began
    assert proc.returncode == 1, f"exit {proc.returncode}; stderr: {proc.stderr!r}"
    # Besides the status lines of the reconnect (stdout is not a terminal), one line.
    lines = [line for line in proc.stderr.strip().splitlines() if "reconnecting to" not in line]
    assert len(lines) == 1 and lines[0].startswith("superv: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert took < 10, f"the client took {took:.1f}s to give up"


@pytest.mark.timeout(60)
def test_a_stdout_that_cannot_be_written_ends_the_client_with_one_line(
    superv_env: SupervEnv, sshd: SshServer  # noqa: F811
) -> None:
    start_bulk(superv_env, "full", 50)
    with open("/dev/full", "wb") as full, keyboard() as (_, slave):
        proc = subprocess.run(
            [SUPERV, "attach", "--from-start", "box:full"],
            env=client_env(superv_env, sshd),
            stdin=slave,
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 1, f"exit {proc.returncode}; stderr: {proc.stderr!r}"
    assert proc.stderr.strip() == (
        "superv: cannot write to standard output: No space left on device"
    ), proc.stderr


# --------------------------------------------------------- fast reconnect (issue 12)


def link_proxy() -> Any:
    """The bench's cuttable TCP proxy (bench/ is not an installed package)."""
    spec = importlib.util.spec_from_file_location("tcp_proxy", REPO / "bench" / "tcp_proxy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def via_proxy(server: SshServer, alias: str, port: int) -> None:
    """Let ``alias`` reach ``server`` through 127.0.0.1:``port`` (a proxy in front of it)."""
    with server.known_hosts.open("a") as known:
        known.write(f"[127.0.0.1]:{port} {server.host_pub}\n")
    with server.config.open("a") as config:
        config.write(
            f"\nHost {alias}\n    HostName 127.0.0.1\n    Port {port}\n"
            f"    User {os.environ.get('USER') or 'root'}\n"
            f"    IdentityFile {server.client_key}\n    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {server.known_hosts}\n    BatchMode yes\n"
        )


@pytest.mark.timeout(90)
def test_a_network_change_restarts_a_stuck_try_at_once_and_typing_stays_discarded(
    superv_env: SupervEnv, sshd: SshServer, clients: Callable[..., Client]  # noqa: F811
) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test adds an address to lo: run it as root (scripts/test does)")
    proxy = link_proxy().LinkProxy(sshd.port)
    via_proxy(sshd, "flaky", proxy.port)
    address = f"192.0.2.{random.randrange(2, 250)}/32"  # TEST-NET-1, on lo: used by nobody
    added = False
    try:
        start_bulk(superv_env, "roam", 100)
        client = clients(
            [SUPERV, "attach", "--from-start", "flaky:roam"], client_env(superv_env, sshd)
        )
        client.wait_out(100 * LINE)
        proxy.cut("blackhole")  # packets lost: only keepalives can tell
        client.wait_err("reconnecting to flaky", timeout=10)
        client.send(b"oops\r")  # typed blind: must never reach the agent
        # A try is under way and stuck: the box is silent, so it keeps opening fresh TCP
        # connections (every 0.25 s) within one try, which lasts its patience (20 s,
        # RECONNECT_BUDGET_MAX) before "attempt 2".  Only the network change ends it early:
        # "attempt 2" coming well within that patience is the netlink trigger at work.
        held = proxy.accepted
        wait_until(lambda: proxy.accepted > held, timeout=10, message="a reconnect try")
        assert "attempt 2" not in client.stderr(), client.stderr()
        subprocess.run(["ip", "addr", "add", address, "dev", "lo"], check=True, timeout=10)
        added = True
        client.wait_err("attempt 2,", timeout=10)  # half the try's patience
        proxy.restore()
        client.wait_err("keystrokes typed while disconnected were discarded", timeout=15)
        client.send(b"done\r")
        assert client.finish() == 0, client.stderr()
    finally:
        if added:
            subprocess.run(["ip", "addr", "del", address, "dev", "lo"], timeout=10)
        proxy.close()
    log = log_bytes(superv_env, "roam")
    assert b"oops" not in log
    assert_same_stream(client.out, log)


def ssh_logins(server: SshServer) -> int:
    """SSH logins sshd has accepted so far (its log, one line per authentication)."""
    return sum("Accepted publickey" in line for line in list(server.log_lines))


def attach_through(
    proxy: Any, senv: SupervEnv, server: SshServer, clients: Callable[..., Client], name: str
) -> Client:
    """A client attached to a new session ``name`` (100 lines, then it waits for a line)
    through ``proxy``, its output all shown."""
    via_proxy(server, f"via-{name}", proxy.port)
    start_bulk(senv, name, 100)
    client = clients([SUPERV, "attach", "--from-start", f"via-{name}:{name}"],
                     client_env(senv, server))
    client.wait_out(100 * LINE)
    return client


def end_after_outage(client: Client, senv: SupervEnv, name: str) -> None:
    """Once reconnected: the blind keys were discarded and said so, the next line reaches
    the agent (which exits), and the client showed the log byte for byte."""
    client.wait_err("keystrokes typed while disconnected were discarded", timeout=15)
    client.send(b"done\r")
    assert client.finish() == 0, client.stderr()
    log = log_bytes(senv, name)
    assert b"oops" not in log
    assert_same_stream(client.out, log)


@pytest.mark.timeout(90)
def test_an_outage_the_old_connection_survives_resumes_on_it_without_a_new_login(
    superv_env: SupervEnv, sshd: SshServer, clients: Callable[..., Client]  # noqa: F811
) -> None:
    # 50 ms each way: a fresh connection needs several round trips to its Welcome, the
    # held one only one, so the race is not close.
    proxy = link_proxy().LinkProxy(sshd.port, delay=0.05)
    try:
        client = attach_through(proxy, superv_env, sshd, clients, "survive")
        logins = ssh_logins(sshd)
        assert logins >= 1, sshd.log_lines[-5:]
        proxy.cut("blackhole")  # packets lost; the TCP connection survives, as in real life
        client.wait_err("reconnecting to via-survive", timeout=10)
        client.send(b"oops\r")  # typed blind: must never reach the agent
        held = proxy.accepted
        wait_until(lambda: proxy.accepted > held, timeout=10, message="a fresh try")
        proxy.restore()
        end_after_outage(client, superv_env, "survive")  # "done" went over the held one
        assert ssh_logins(sshd) == logins, (
            "a fresh SSH login replaced the held connection: " + client.stderr()
        )
    finally:
        proxy.close()


@pytest.mark.timeout(90)
def test_an_outage_that_resets_the_old_connection_reconnects_on_a_fresh_one(
    superv_env: SupervEnv, sshd: SshServer, clients: Callable[..., Client]  # noqa: F811
) -> None:
    proxy = link_proxy().LinkProxy(sshd.port)
    try:
        client = attach_through(proxy, superv_env, sshd, clients, "fresh")
        logins = ssh_logins(sshd)
        proxy.cut("blackhole")
        client.wait_err("reconnecting to via-fresh", timeout=10)  # held by now
        client.send(b"oops\r")
        proxy.cut("refuse")  # the held connection is reset: it will never deliver again
        proxy.restore()
        end_after_outage(client, superv_env, "fresh")
        assert ssh_logins(sshd) > logins, "no fresh login after the held connection was reset"
    finally:
        proxy.close()


# Prints 'ready', then on a line a 2 MB flood and a marker, then idles: the flood comes
# while the link is down, so the present after it is only reachable by a skip.
SCREEN_AGENT = PATTERN_FN + """
import sys, time
out = sys.stdout.buffer
out.write(b'ready\\n'); out.flush()
sys.stdin.readline()
out.write(pattern(20000)); out.write(b'MARK-END\\n'); out.flush()
time.sleep(300)
"""


@pytest.mark.timeout(90)
def test_a_held_connection_resumed_after_an_outage_shows_the_current_screen(
    superv_env: SupervEnv, sshd: SshServer  # noqa: F811
) -> None:
    proxy = link_proxy().LinkProxy(sshd.port, delay=0.05)
    via_proxy(sshd, "via-screen", proxy.port)
    script = superv_env.root / "screen_agent.py"
    script.write_text(SCREEN_AGENT)
    superv_env.superv("start", "screen", "--", PY, str(script), check=True)
    term = Panes(client_env(superv_env, sshd), superv_env.root)
    try:
        pane = term.new_session("main", f"{SUPERV} attach via-screen:screen")
        term.wait_for(pane, "ready", timeout=20)
        logins = ssh_logins(sshd)
        proxy.cut("blackhole")
        term.wait_for(pane, "reconnecting to via-screen", timeout=10)
        superv_env.superv("send", "--enter", "screen", "go", check=True)  # on the box
        wait_until(lambda: b"MARK-END" in log_bytes(superv_env, "screen"), timeout=20,
                   message="the agent never printed its flood")
        proxy.restore()
        wait_until(lambda: shown_lines(term, pane) == peek_lines(superv_env, "screen"),
                   timeout=15, message="the attached screen never matched peek")
        assert "MARK-END" in term.capture(pane)
        assert ssh_logins(sshd) == logins, "a fresh SSH login replaced the held connection"
    finally:
        term.kill_server()
        proxy.close()
        superv_env.superv("kill", "screen")


# A remote bridge whose stream skips bytes: the client must refuse it, not show a hole.
GAP_IN_STREAM = """\
import os
from agent_worker import protocol as p
os.write(1, p.encode(p.Welcome({"name": "gap"})))
os.write(1, p.encode(p.Output(0, b"ab")))
os.write(1, p.encode(p.Output(10, b"cd")))
os.read(0, 1 << 16)
"""


@pytest.mark.timeout(60)
def test_a_stream_with_missing_bytes_is_refused_in_one_line(
    superv_env: SupervEnv, sshd: SshServer  # noqa: F811
) -> None:
    proc = attach_to_fake_bridge(superv_env, sshd, "gap", GAP_IN_STREAM)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == "ab"
    assert proc.stderr.strip() == (
        "superv: box broke the superv protocol: output at offset 10 after 2: bytes are missing"
    )
