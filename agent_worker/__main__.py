"""``python -m agent_worker NAME``: run one session's worker in the foreground.

Whoever starts a worker (the supervisor, or a test) first writes the session's
``spec.json`` into ``$SUPERV_HOME/sessions/NAME/``.  The worker binds the session socket,
starts the agent, and then reports one JSON line on ``--ready-fd`` (default: stdout):
``{"ok": true, "agent_pid": ..., "worker_pid": ...}`` or ``{"ok": false, "error": ...}``,
and closes that descriptor.  Exit status 1 means the session could not start.
"""

from __future__ import annotations

import signal

if __name__ == "__main__":
    # First thing: a SIGHUP that reaches the worker while it is still importing (trio
    # alone takes ~0.2 s) must not take the default action and kill it.  main() hands
    # SIGHUP to EarlySignals before it starts the agent, which then gets the default.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)

import argparse
import contextlib
import json
import os
import shutil
import socket
import sys
from pathlib import Path

from agent_worker import paths, settings
from agent_worker.activity.monitor import prepare_launch
from agent_worker.agent import AgentStartError, ignore_terminal_signals, spawn
from agent_worker.atomic import remove_stale_temps
from agent_worker.log import OutputLog, fsync_policy
from agent_worker.logs import configure_logging
from agent_worker.peer import listen_private
from agent_worker.session_files import LOG, STATE
from agent_worker.snapshot import snapshot_interval
from agent_worker.spec import SessionSpec
from agent_worker.worker import EarlySignals, Worker, stop_grace


class StartError(Exception):
    pass


def bind_session_socket(name: str) -> tuple[socket.socket, Path]:
    path = paths.check_socket_path(paths.session_socket(name))
    paths.ensure_socket_dir(path.parent.parent)
    paths.ensure_private_dir(path.parent)
    if path.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # left by a worker that died: nobody answers on it
        else:
            raise StartError(f"session {name} is already running (its worker answers on {path})")
        finally:
            probe.close()
    return listen_private(path, 64), path


def start(name: str, marker: str | None, early: EarlySignals) -> Worker:
    directory = paths.session_dir(name)
    try:
        spec = SessionSpec.load(directory)
    except FileNotFoundError:
        raise StartError(f"no spec for session {name} in {directory}") from None
    except (ValueError, TypeError) as exc:
        raise StartError(f"unreadable spec for session {name}: {exc}") from None
    interval, grace = snapshot_interval(), stop_grace()
    remove_stale_temps(directory / STATE)  # we are its only writer, not yet writing
    sock, sock_path = bind_session_socket(name)
    hook_sock = None
    try:
        # activity: the agent's hooks (per launch) and the socket they report to
        argv, hook_sock = prepare_launch(spec, directory)
        output = OutputLog(directory, fsync_policy())
        try:
            agent = spawn(argv, spec.cwd, spec.env, spec.rows, spec.cols)
        except AgentStartError:
            output.close()
            raise
        if marker:
            output.append(marker.encode())
        worker = Worker(spec, directory, sock, agent, output, interval, early, grace)
        worker.activity.hook_sock = hook_sock
        return worker
    except BaseException:
        if hook_sock is not None:
            hook_sock.close()
        sock.close()
        with contextlib.suppress(OSError):
            sock_path.unlink()
        raise


def forget_if_empty(name: str) -> None:
    """A session whose agent never started leaves no stub behind (unless it has history)."""
    directory = paths.session_dir(name)
    log_file = directory / LOG
    has_history = (directory / STATE).exists() or (
        log_file.exists() and log_file.stat().st_size > 0
    )
    if not has_history:
        shutil.rmtree(directory, ignore_errors=True)


def report(fd: int, value: dict[str, object]) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, json.dumps(value).encode() + b"\n")
        os.close(fd)


def _refuse(ready_fd: int, exc: Exception) -> int:
    report(ready_fd, {"ok": False, "error": str(exc)})
    with contextlib.suppress(OSError):  # worker.log may be on a full disk: the report went
        print(f"agent_worker: {exc}", file=sys.stderr, flush=True)
    return 1


def main(argv: list[str] | None = None) -> int:
    # Before anything else: a SIGHUP from the terminal we are leaving must not kill us.
    early = EarlySignals()
    early.install()
    parser = argparse.ArgumentParser(prog="python -m agent_worker", description=__doc__)
    parser.add_argument("name")
    parser.add_argument("--ready-fd", type=int, default=1)
    parser.add_argument("--marker", help="a line to append to the log before the agent starts")
    args = parser.parse_args(argv)
    configure_logging()
    try:
        # Before anything else (the paths are settings too); a bad one starts no agent.
        settings.check()
    except settings.SettingError as exc:
        return _refuse(args.ready_fd, exc)
    try:
        paths.validate_name(args.name)
        worker = start(args.name, args.marker, early)
    except (StartError, AgentStartError, paths.PathError, ValueError, OSError) as exc:
        with contextlib.suppress(paths.PathError):
            forget_if_empty(args.name)
        return _refuse(args.ready_fd, exc)
    ignore_terminal_signals()
    report(args.ready_fd, {"ok": True, "agent_pid": worker.agent.pid, "worker_pid": os.getpid()})
    if args.ready_fd in (0, 1, 2):
        # Keep the descriptor number taken, but no longer tied to whoever started us.
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, args.ready_fd)
        os.close(devnull)
    import trio

    trio.run(worker.run)
    worker.output.close()
    worker.activity.close()
    with contextlib.suppress(OSError):
        paths.session_socket(args.name).unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
