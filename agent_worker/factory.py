"""A pre-loaded parent that forks session workers: ``python -m agent_worker.factory FD``.

A worker that starts as a fresh interpreter pays ~25 MB of private memory for its own
copy of Python, trio, pyte and our modules.  Forked from this process, which imported
them once and froze them out of the garbage collector's reach, a worker shares those
pages and costs ~4 MB of its own (measured: USS 23 MB -> 3.7 MB, PSS 24 MB -> 8.9 MB).

The factory never runs trio itself (forking a running event loop is unsafe), has no
threads, and serves one client, the supervisor, over a SOCK_SEQPACKET socket ``FD``:

- request: ``{"name": ..., "marker": ...}`` with two descriptors attached: the write end of
  the worker's readiness pipe and its ``worker.log`` for stderr;
- reply: ``{"pid": ...}``.

Each worker gets its own session (``setsid``), exactly as a directly started one does;
the factory exits when the supervisor closes its end, and workers live on regardless.
"""

from __future__ import annotations

import gc
import json
import os
import signal
import socket
import sys
import traceback

import agent_worker.__main__ as worker_main
import agent_worker.screen  # noqa: F401  (preloaded so forked workers share it)

MAX_REQUEST = 64 * 1024


def set_process_name(name: str) -> None:
    """Show the session in ``ps -o comm``/top: forked workers all share the factory's argv."""
    try:
        with open("/proc/self/comm", "w") as comm:
            comm.write(f"sv:{name}"[:15])
    except OSError:
        pass


def run_child(request: dict[str, object], ready_fd: int, log_fd: int) -> int:
    os.setsid()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the worker reaps its own agent
    os.dup2(log_fd, 2)
    os.close(log_fd)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    name = str(request["name"])
    set_process_name(name)
    argv = [name, "--ready-fd", str(ready_fd)]
    if request.get("marker"):
        argv += ["--marker", str(request["marker"])]
    return worker_main.main(argv)


def serve(conn: socket.socket) -> None:
    # Children are reaped by the kernel; the supervisor watches them by pidfd.
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    gc.freeze()
    while True:
        try:
            data, fds, _, _ = socket.recv_fds(conn, MAX_REQUEST, 2)
        except OSError:
            return
        if not data:
            return  # the supervisor is gone
        try:
            request = json.loads(data)
            if len(fds) != 2 or not isinstance(request, dict) or "name" not in request:
                raise ValueError("a request needs a name and two descriptors")
        except ValueError as exc:
            for fd in fds:
                os.close(fd)
            conn.send(json.dumps({"error": str(exc)}).encode())
            continue
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                conn.close()
                code = run_child(request, fds[0], fds[1])
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        for fd in fds:
            os.close(fd)
        conn.send(json.dumps({"pid": pid}).encode())


def main() -> int:
    conn = socket.socket(fileno=int(sys.argv[1]))
    serve(conn)
    return 0


if __name__ == "__main__":
    sys.exit(main())
