"""Starting the supervisor on demand, and knowing at once whether it serves.

The first command that needs the supervisor starts ``superv daemon`` detached and waits
for events, never on a clock:

1. the daemon's ready pipe: ``ready`` once it serves, or end of file if it exited;
2. the *start gate*: every daemon holds ``supervisor.start.lock`` exclusively from before
   it takes the home's lock until its control socket listens.  A daemon that lost the race
   to another one exits; taking the gate (shared) then returns as soon as the winner
   listens (or dies), so one connect attempt tells the answer.

What the daemon would refuse at start (a home or runtime directory that is not ours, a
symlink, a socket path too long) is checked here first, so the user is told what is wrong
at once rather than "the supervisor did not start" after a timeout.
"""

from __future__ import annotations

import fcntl
import os
import select
import subprocess
import sys
import time
from pathlib import Path

from agent_worker import paths
from agent_worker.atomic import open_private_log
from supervisor.errors import CliError

START_TIMEOUT = 15.0
GATE_NAME = "supervisor.start.lock"


def gate_path() -> Path:
    return paths.state_home() / GATE_NAME


def hold_start_gate() -> int:
    """For the daemon: hold the gate until :func:`open_gate`; returns its descriptor.

    A blocking flock: a second daemon starting at the same moment waits here until the
    first one listens, then finds the home's lock taken and exits.
    """
    fd = os.open(gate_path(), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def open_gate(fd: int) -> None:
    """For the daemon, once its control socket listens: CLIs waiting at the gate go on."""
    os.close(fd)


def _pass_gate(timeout: float) -> None:
    """Wait until no daemon is between starting and listening (or ``timeout`` passed)."""
    fd = os.open(gate_path(), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        # flock has no timeout; a daemon holds the gate only for its start (milliseconds),
        # but one stuck there must not hang the CLI: an alarm bounds the wait.
        import signal

        def _expired(signum: int, frame: object) -> None:
            raise TimeoutError

        old = signal.signal(signal.SIGALRM, _expired)
        signal.setitimer(signal.ITIMER_REAL, timeout)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
        except TimeoutError:
            pass
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, old)
    finally:
        os.close(fd)


def check_places() -> None:
    """CliError, at once, for a home or runtime directory the daemon would refuse."""
    try:
        paths.ensure_private_dir(paths.state_home())
        paths.ensure_socket_dir(paths.check_runtime_dir())
    except paths.PathError as exc:
        raise CliError(str(exc)) from None
    except PermissionError as exc:
        raise CliError(f"cannot use {exc.filename}: permission denied; pick another "
                       "SUPERV_HOME or SUPERV_RUNTIME_DIR") from None


def start_with_systemd() -> bool:
    """If ``superv service install`` set up the unit, start it; True if systemd did.

    A daemon started by the CLI next to an installed unit would take the home's lock and
    make systemd's own starts fail, and its workers would live in the login session.
    """
    from supervisor import service_unit

    if not service_unit.unit_path().exists():
        return False
    try:
        service_unit.systemctl("start", service_unit.UNIT_NAME)  # Type=notify: waits for READY
    except service_unit.ServiceError:
        return False
    return True


def start_daemon() -> str | None:
    """Start ``superv daemon`` detached; return once it serves (None) or why it does not.

    The reason is the daemon's own last words in supervisor.log when it exited at start.
    """
    check_places()
    if start_with_systemd():
        return None
    home = paths.state_home()
    log_path = home / "supervisor.log"
    read_end, write_end = os.pipe()
    with open_private_log(log_path) as daemon_log:
        log_start = daemon_log.tell()
        daemon = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "daemon", "--ready-fd", str(write_end)],
            stdin=subprocess.DEVNULL,
            stdout=daemon_log,
            stderr=daemon_log,
            pass_fds=(write_end,),
            start_new_session=True,
            cwd="/",
        )
    os.close(write_end)
    deadline = time.monotonic() + START_TIMEOUT
    try:
        select.select([read_end], [], [], START_TIMEOUT)
        said = os.read(read_end, 64) if select.select([read_end], [], [], 0)[0] else b""
    finally:
        os.close(read_end)
    if said.startswith(b"ready"):
        daemon.returncode = 0  # it lives on; nobody reaps it here
        return None
    # End of file: it exited (lost the race to another daemon, or failed to start).
    try:
        code = daemon.wait(max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return f"the supervisor did not report ready within {START_TIMEOUT:.0f} s"
    _pass_gate(max(0.1, deadline - time.monotonic()))
    return _last_words(log_path, log_start) if code else None


def _last_words(path: Path, start: int) -> str | None:
    """The daemon's one-line error (``superv: ...``) appended to its log since ``start``."""
    try:
        with open(path, "rb") as f:
            f.seek(start)
            tail = f.read(64 * 1024).decode(errors="replace")
    except OSError:
        return None
    lines = [line.removeprefix("superv: ") for line in tail.splitlines() if line.startswith("superv: ")]
    return lines[-1] if lines else None
