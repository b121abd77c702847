"""The small shared harness: a terminal we own, results, process sweeps, payloads.

Everything a workload measures is seen from the user's side: a client (``dtach -a``,
``tmux attach``, ``screen -r``, ``superv attach``) runs inside a PTY that the benchmark
owns, and "arrived" means "could be read from that PTY's master", i.e. was written to the
user's terminal.  Each host is started with a unique ``BENCH_TAG`` in its environment, so
that a sweep of /proc finds and kills every process a run started (servers included), even
after a failure half-way.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import select
import shutil
import signal
import struct
import sys
import tempfile
import termios
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from agent_worker.procfs import pids_with_env, read_stat

REPO = Path(__file__).resolve().parent.parent
ROWS, COLS = 40, 120  # every client terminal and every session gets this size
RUN_ID = f"{os.getpid():x}{int(time.time()) % 100000:05d}"
RUN_TAG = f"superv-bench-{RUN_ID}"


class BenchError(Exception):
    """A measurement could not be made or its result was wrong; the message says which."""


@dataclass
class Result:
    """One row of the table.  Every figure is "lower is better" (seconds, bytes)."""

    workload: str
    host: str
    value: float | None  # None: not measured (see ``note``)
    unit: str  # "s", "ms", "MB"
    detail: str = ""  # a secondary figure, e.g. the throughput in MB/s
    verified: str = ""  # what was checked about the bytes that arrived
    ok: bool = True  # False: the measurement failed or its check failed
    note: str = ""
    comparable: bool = True  # False: not the same thing as the other rows (dtach attach)
    baseline: bool = False  # the raw-PTY row: ratios are to it where present
    ratio: float | None = None
    skipped: bool = False  # host not available yet (superv under construction)


@dataclass
class Config:
    quick: bool
    scratch: Path
    cache: dict[str, Path] = field(default_factory=dict)


# ---------------------------------------------------------------------------- processes


def tagged_env(tag: str, extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for anything a host runs: isolated, tagged for the sweep."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SUPERV_", "TMUX", "STY", "WINDOW")) and k != "NOTIFY_SOCKET"
    }
    env.update(TERM="xterm-256color", LANG="C.UTF-8", BENCH_RUN=RUN_TAG, BENCH_TAG=tag)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if extra:
        env.update(extra)
    return env


def sweep(key: str, value: str) -> int:
    """SIGKILL every process whose environment has ``key=value``, and their descendants.

    Descendants too, because a host may clean the environment of the program it runs.
    Twice, because a dying server may have forked one more child in between.
    """
    total = 0
    for _ in range(2):
        pids = set(pids_with_env(key, value))
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                children.setdefault(ppid(int(entry)), []).append(int(entry))
        todo = list(pids)
        while todo:
            for child in children.get(todo.pop(), []):
                if child not in pids and child != os.getpid():
                    pids.add(child)
                    todo.append(child)
        total += len(pids)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if pids:
            time.sleep(0.05)
    reap_children()
    return total


def reap_children() -> None:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG)[0]:
            pass


def cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def ppid(pid: int) -> int:
    stat = read_stat(pid)
    return stat.ppid if stat else 0


def memory_of(pid: int) -> dict[str, int]:
    """Rss, Pss and Uss (private clean + dirty) of ``pid`` in bytes, from smaps_rollup."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[key.strip()] = int(parts[0]) * 1024
    return {
        "rss": fields["Rss"],
        "pss": fields["Pss"],
        "uss": fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0),
    }


def wait_for(predicate: Callable[[], object], timeout: float, what: str, interval: float = 0.01):
    """Poll a condition in another process that offers no event to wait on."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


# ------------------------------------------------------------------------------ terminal


def set_winsize(fd: int, rows: int = ROWS, cols: int = COLS) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def spawn_in_pty(
    argv: list[str], env: dict[str, str], cwd: str | None = None, raw: bool = True
) -> tuple[int, int]:
    """Run ``argv`` as the session leader of a new PTY; return (pid, master fd).

    A client's terminal starts in raw mode with no echo, like a terminal emulator whose
    client has already set it up: otherwise bytes we type before the client switched to
    raw mode would be echoed by our own PTY and look like an answer from the host.  The
    raw-PTY baseline runs the session's program directly (``raw=False``), in the cooked
    mode every host gives its session.
    """
    master, slave = os.openpty()
    set_winsize(slave)
    if raw:
        tty.setraw(slave)
    pid = os.fork()
    if pid == 0:  # child: never return into the harness
        try:
            # Python ignores SIGPIPE and exec keeps ignored signals: restore the default,
            # as subprocess does, or `yes | head` complains on stderr instead of dying.
            signal.signal(signal.SIGPIPE, signal.SIG_DFL)
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
            for fd in (0, 1, 2):
                os.dup2(slave, fd)
            os.closerange(3, 1024)
            if cwd:
                os.chdir(cwd)
            os.execvpe(argv[0], argv, env)
        except BaseException:
            os._exit(127)
    # Close our copy of the slave at once, or the master never reports the child's end.
    os.close(slave)
    os.set_blocking(master, False)
    return pid, master


class Terminal:
    """A client process in a PTY we own, and everything it wrote to that terminal."""

    def __init__(
        self, argv: list[str], env: dict[str, str], cwd: str | None = None, raw: bool = True
    ) -> None:
        self.argv = argv
        self.started = time.monotonic()
        self.pid, self.fd = spawn_in_pty(argv, env, cwd, raw)
        self.buf = bytearray()
        self.eof = False
        self.exit_status: int | None = None

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                select.select([], [self.fd], [], 1.0)

    def read_some(self, timeout: float) -> int:
        """Read what is available (waiting up to ``timeout`` for the first byte)."""
        if self.eof:
            return 0
        ready, _, _ = select.select([self.fd], [], [], timeout)
        if not ready:
            return 0
        got = 0
        while True:
            try:
                chunk = os.read(self.fd, 1 << 20)
            except BlockingIOError:
                return got
            except OSError as exc:  # EIO: the client exited and its output is drained
                if exc.errno != errno.EIO:
                    raise
                chunk = b""
            if not chunk:
                self.eof = True
                return got
            self.buf += chunk
            got += len(chunk)

    def read_until(
        self, needle: bytes | re.Pattern[bytes], timeout: float, start: int = 0, what: str = ""
    ) -> int:
        """Read until ``needle`` appears at or after ``start``; return the end of the match.

        Only the new bytes (plus an overlap) are searched each time, so this stays linear
        on a 60 MB stream.
        """
        deadline = time.monotonic() + timeout
        overlap = 256
        pos = start
        while True:
            if isinstance(needle, bytes):
                at = self.buf.find(needle, pos)
                if at >= 0:
                    return at + len(needle)
            else:
                match = needle.search(self.buf, pos)
                if match:
                    return match.end()
            pos = max(start, len(self.buf) - overlap)
            left = deadline - time.monotonic()
            if left <= 0 or self.eof:
                state = "the client exited" if self.eof else f"timed out after {timeout:g}s"
                tail = bytes(self.buf[-300:])
                raise BenchError(
                    f"{state} waiting for {what or needle!r} from {' '.join(self.argv[:3])}; "
                    f"last output: {tail!r}"
                )
            self.read_some(min(left, 0.5))

    def drain(self, quiet: float = 0.1, limit: float = 5.0) -> None:
        """Read until nothing more arrives for ``quiet`` seconds."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline and self.read_some(quiet):
            pass

    def close(self) -> None:
        """Hang up the terminal (as a closed window does), then make sure the client is gone."""
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1
        deadline = time.monotonic() + 1.0
        while self.exit_status is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                break
            if pid:
                self.exit_status = status
                break
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                break
            time.sleep(0.01)

    def __enter__(self) -> Terminal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Escape sequences a re-rendering client (tmux, screen) wraps around text: CSI, OSC, and
# the two- and three-byte ESC forms.  Stripping them leaves the characters drawn.
ESCAPES = re.compile(rb"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()*+][0-~]|[@-Z\\-_=>78])")


def visible_text(data: bytes) -> bytes:
    text = ESCAPES.sub(b"", data)
    # An escape cut off at the end of what we have so far is not text yet.
    cut = text.rfind(b"\x1b")
    return text[:cut] if cut >= 0 else text


# ------------------------------------------------------------------------------ payloads

LINE_BYTES = 100  # 99 printable columns + "\n", as the brief's "100-column lines"
_ALPHABET = bytes(range(33, 127))  # 94 printable characters, no space


def line(i: int) -> bytes:
    shift = i % len(_ALPHABET)
    tail = (_ALPHABET[shift:] + _ALPHABET[:shift])[: LINE_BYTES - 11]
    return b"%09d " % i + tail + b"\n"


LINE_NUMBER = re.compile(rb"(\d{9}) [!-~]")


def lines_file(cfg: Config, size: int) -> tuple[Path, int]:
    """A file of ``size // 100`` numbered 100-byte lines, made once per run; (path, lines)."""
    count = size // LINE_BYTES
    key = f"lines-{count}"
    path = cfg.cache.get(key)
    if path is None:
        path = cfg.scratch / f"{key}.txt"
        tails = [line(i)[10:] for i in range(len(_ALPHABET))]
        with path.open("wb", buffering=1 << 22) as out:
            step = 100_000
            for first in range(0, count, step):
                out.write(
                    b"".join(
                        b"%09d " % i + tails[i % len(tails)] for i in range(first, min(count, first + step))
                    )
                )
        cfg.cache[key] = path
    return path, count


# ------------------------------------------------------------------------------ scratch


@contextlib.contextmanager
def scratch_dir() -> Iterator[Path]:
    """A short directory under /tmp (socket paths must stay under 108 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="svb-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def log(message: str) -> None:
    print(f"  .. {message}", file=sys.stderr, flush=True)


def fmt_bytes(n: int) -> str:
    """Decimal units, as the sizes are chosen (10 MB = 10,000,000 bytes)."""
    if n >= 10**9:
        return f"{n / 1e9:.3g} GB"
    if n >= 10**6:
        return f"{n / 1e6:.3g} MB"
    return f"{n / 1e3:.3g} kB"
