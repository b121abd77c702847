"""Helpers for tests that run a real session worker (``python -m agent_worker NAME``).

A test writes the session's spec, starts the worker as its own process (as the supervisor
would), waits for its readiness line, and talks to it over its Unix socket with the
blocking :class:`agent_worker.client.Connection`.  Nothing we own is mocked.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from agent_worker import paths
from agent_worker import protocol as p
from agent_worker.client import Connection, ConnectionClosed
from agent_worker.procfs import is_running
from agent_worker.spec import SessionSpec, agent_environment

if TYPE_CHECKING:
    from conftest import SupervEnv

PY = sys.executable


def pattern(n_lines: int, start: int = 0) -> bytes:
    """A deterministic stream of numbered 100-byte lines (99 visible + newline)."""
    body = b"abcdefghijklmnopqrstuvwxyz0123456789" * 3
    return b"".join(b"%09d %s\n" % (i, body[:89]) for i in range(start, start + n_lines))


# The same generator as agent code: ``python -c PATTERN_AGENT N`` prints pattern(N).
PATTERN_FN = (
    "def pattern(n, start=0):\n"
    "    body = b'abcdefghijklmnopqrstuvwxyz0123456789' * 3\n"
    "    return b''.join(b'%09d %s\\n' % (i, body[:89]) for i in range(start, start + n))\n"
)


def cooked(data: bytes) -> bytes:
    """What a PTY in cooked mode (ONLCR) delivers for ``data`` written by the agent."""
    return data.replace(b"\n", b"\r\n")


def session_socket(senv: SupervEnv, name: str) -> Path:
    """The worker's socket path, computed as the worker computes it from its environment."""
    saved = {k: os.environ.get(k) for k in ("SUPERV_HOME", "SUPERV_RUNTIME_DIR")}
    os.environ["SUPERV_HOME"] = str(senv.home)
    os.environ["SUPERV_RUNTIME_DIR"] = str(senv.run)
    try:
        return paths.session_socket(name)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def read_ready(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> dict[str, Any]:
    """The worker's one JSON readiness line (waits on the pipe, not on a clock)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"worker {proc.pid} printed no readiness line in {timeout}s")
    line = proc.stdout.readline()
    proc.stdout.close()
    if not line:
        raise AssertionError(f"worker {proc.pid} closed stdout without a readiness line")
    return json.loads(line)


def start_worker(
    senv: SupervEnv,
    name: str,
    argv: list[str],
    *,
    extra_env: dict[str, str] | None = None,
    write_spec: bool = True,
    **spec_fields: Any,
) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
    """Write ``spec.json`` for ``name`` and start its worker; return it and its readiness.

    ``extra_env`` goes to the worker's environment (SUPERV_SNAPSHOT_INTERVAL...); the
    agent gets the test environment (which carries SUPERV_HOME, so the fixture's sweep
    finds it) plus ``spec_fields["env"]`` if given.
    """
    directory = senv.session_dir(name)
    if write_spec:
        directory.mkdir(parents=True, exist_ok=True)
        overrides = spec_fields.pop("env", {})
        spec_fields.setdefault("cwd", str(senv.root))
        SessionSpec(
            name=name,
            argv=argv,
            env=agent_environment(senv.env, overrides, name),
            **spec_fields,
        ).write(directory)
    env = dict(senv.env)
    env.update(extra_env or {})
    with open(senv.root / f"worker-{name}.err", "ab") as err:
        proc = subprocess.Popen(
            [PY, "-m", "agent_worker", name],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            start_new_session=True,
        )
    try:
        return proc, read_ready(proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise


def worker_stderr(senv: SupervEnv, name: str) -> str:
    path = senv.root / f"worker-{name}.err"
    return path.read_text(errors="replace") if path.exists() else ""


def stop_worker(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> int:
    """SIGTERM the worker (it stops its agent) and reap it; SIGKILL if it does not go."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError(f"worker {proc.pid} ignored SIGTERM for {timeout}s") from None
    return proc.returncode


def kill_pid(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def pid_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie counts as gone)."""
    return not is_running(pid)


def vm_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def connect(
    senv: SupervEnv,
    name: str,
    start: p.Start = p.Start.OFFSET,
    value: int = 0,
    *,
    read_only: bool = False,
    rows: int = 24,
    cols: int = 80,
    timeout: float = 30.0,
) -> tuple[Connection, p.Welcome]:
    conn = Connection.open(session_socket(senv, name), timeout=timeout)
    try:
        welcome = conn.hello(p.Hello(start, value, rows, cols, read_only))
    except BaseException:
        conn.close()
        raise
    return conn, welcome


@attrs.define
class Received:
    """What a client received: the stream from ``start`` on, and the other frames."""

    start: int | None = None  # offset of the first Output (or Screen) frame
    data: bytearray = attrs.Factory(bytearray)
    events: list[dict[str, Any]] = attrs.Factory(list)
    screens: list[p.Screen] = attrs.Factory(list)
    errors: list[str] = attrs.Factory(list)
    closed: bool = False

    @property
    def end(self) -> int | None:
        return None if self.start is None else self.start + len(self.data)

    def exited(self) -> dict[str, Any] | None:
        return next((e for e in self.events if e.get("event") == "exited"), None)


def read_all(
    conn: Connection,
    *,
    until_exit: bool = True,
    until_offset: int | None = None,
    into: Received | None = None,
) -> Received:
    """Read frames until the worker reports the exit (or the stream reaches ``until_offset``,
    or the connection closes), checking that Output offsets are contiguous: no gap, no
    duplicate.  Socket timeouts (set on ``conn``) bound the wait.
    """
    got = into if into is not None else Received()
    while True:
        if until_offset is not None and got.end is not None and got.end >= until_offset:
            return got
        try:
            msg = conn.receive()
        except ConnectionClosed:
            got.closed = True
            return got
        match msg:
            case p.Output(offset, data):
                if got.start is None:
                    got.start = offset
                assert offset == got.end, (
                    f"Output at offset {offset} but the stream so far ends at {got.end}: "
                    + ("a gap" if offset > (got.end or 0) else "a duplicate")
                )
                got.data += data
            case p.Screen(offset, _):
                got.screens.append(msg)
                if got.start is None:
                    got.start = offset
            case p.Event(body):
                got.events.append(body)
                if until_exit and body.get("event") == "exited":
                    return got
            case p.Error(message):
                got.errors.append(message)
            case _:
                raise AssertionError(f"unexpected frame {msg!r}")


def log_bytes(senv: SupervEnv, name: str) -> bytes:
    return (senv.session_dir(name) / "output.log").read_bytes()


def log_size(senv: SupervEnv, name: str) -> int:
    try:
        return (senv.session_dir(name) / "output.log").stat().st_size
    except FileNotFoundError:
        return 0


def wait_exit(proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"worker {proc.pid} did not exit in {timeout}s") from None


def monotonic() -> float:
    return time.monotonic()
