"""Starting the agent in its own PTY, and the few things done to it afterwards.

The agent runs as a session leader with the PTY slave as its controlling terminal, so the
terminal's job control and window-size signals reach it as they would under a real
terminal; and it is in its own process group, so that stopping it reaches the whole tree
it started.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import subprocess
import termios

import attrs

from agent_worker.screen_size import set_window_size


class AgentStartError(Exception):
    """The agent's command could not be started (not found, not executable, bad cwd)."""


@attrs.define
class Agent:
    pid: int
    master_fd: int
    pidfd: int

    def signal(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signum)

    def signal_group(self, signum: int) -> None:
        # The agent leads its own session, so its pid is also its process group id.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signum)

    def resize(self, rows: int, cols: int) -> None:
        set_window_size(self.master_fd, rows, cols)


def _become_terminal_owner() -> None:
    # Runs in the child between fork and exec: after setsid() the slave PTY (our fd 0)
    # becomes the controlling terminal of the new session.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def spawn(argv: list[str], cwd: str, env: dict[str, str], rows: int, cols: int) -> Agent:
    """Start ``argv`` in a new PTY of ``rows`` x ``cols``; raise AgentStartError if it cannot."""
    if not argv:
        raise AgentStartError("no command given")
    master, slave = os.openpty()
    try:
        set_window_size(master, rows, cols)
        os.set_blocking(master, False)
        os.set_inheritable(master, False)
        try:
            proc = subprocess.Popen(
                argv,
                stdin=slave,
                stdout=slave,
                stderr=slave,
                cwd=cwd,
                env=env,
                start_new_session=True,
                preexec_fn=_become_terminal_owner,
                close_fds=True,
                restore_signals=True,
            )
        except FileNotFoundError as exc:
            what = "directory" if exc.filename == cwd and not os.path.isdir(cwd) else "command"
            raise AgentStartError(f"{what} not found: {exc.filename}") from None
        except PermissionError as exc:
            raise AgentStartError(f"permission denied: {exc.filename}") from None
        except (OSError, subprocess.SubprocessError) as exc:
            raise AgentStartError(f"cannot start {argv[0]}: {exc}") from None
    except BaseException:
        os.close(master)
        raise
    finally:
        # Our copy of the slave must go, or the master never reports the agent's end.
        os.close(slave)
    # We wait for the agent ourselves through its pidfd; Popen must not reap it behind us.
    proc.returncode = 0
    pidfd = os.pidfd_open(proc.pid)
    return Agent(pid=proc.pid, master_fd=master, pidfd=pidfd)


def wait_status(pid: int) -> tuple[int | None, int | None]:
    """Reap ``pid`` (which has ended) and return ``(exit_code, signal)``."""
    try:
        _, status = os.waitpid(pid, 0)
    except ChildProcessError:
        return None, None
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    return os.waitstatus_to_exitcode(status), None


def ignore_terminal_signals() -> None:
    """The worker has no terminal: its SIGINT and SIGPIPE are nobody's business.

    SIGXFSZ too: over a file-size limit the log write must fail with EFBIG, which the
    worker survives by waiting for room, instead of the signal killing it.  (The agent,
    started before this, keeps the default dispositions.)
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
