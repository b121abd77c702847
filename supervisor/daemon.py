"""``superv daemon``: the supervisor, one per user and ``SUPERV_HOME``.

It starts workers detached, watches them (by pidfd, so a reused pid never fools it, and
by a watch connection on each worker's socket for lifecycle events), restarts them by
policy, keeps the registry, re-adopts running workers after its own restart, and answers
the CLI on its control socket.  It is never in the data path: attach talks to workers.

SIGHUP persists and keeps running; SIGTERM persists and exits *without* stopping any
worker: a restart or upgrade of the supervisor leaves every session running.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

import attrs
import structlog
import trio

from agent_worker import paths, settings
from agent_worker import protocol as p
from agent_worker.atomic import remove_stale_temps
from agent_worker.logs import configure_logging
from agent_worker.peer import listen_private, refusal
from agent_worker.snapshot import boot_id, process_start_time, read_snapshot, snapshot_interval
from agent_worker.spec import RESTART_POLICIES, SessionSpec, agent_environment
from agent_worker.streams import receive_message
from supervisor import sd_notify
from supervisor.autostart import hold_start_gate, open_gate
from supervisor.launch import LaunchError, WorkerFactory, launch_worker
from supervisor.registry import Entry, load_entries, load_spec, registry_path, save_entries

log = structlog.get_logger("supervisor")

# Restarts in a row (SUPERV_RESTART_LIMIT), each after a run shorter than RESTART_RESET;
# the first delay (SUPERV_RESTART_BACKOFF) doubles up to the cap.
RESTART_RESET = 60.0
RESTART_BACKOFF_CAP = 30.0


class RequestError(Exception):
    """A request the supervisor refuses; the message goes back to the CLI."""


def lock_file() -> Path:
    return paths.state_home() / "supervisor.lock"


def acquire_lock() -> int:
    """Hold the one-supervisor-per-home lock, or raise RequestError naming the holder.

    flock dies with its process, so a stale lock never blocks a start.
    """
    fd = os.open(lock_file(), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise RequestError(
            f"a supervisor is already running for {paths.state_home()} (pid {holder})"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def bind_control_socket() -> socket.socket:
    path = paths.check_socket_path(paths.supervisor_socket())
    paths.ensure_private_dir(path.parent)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # we hold the lock: whatever is there is stale
    return listen_private(path, 128)


def log_mtime(name: str) -> float | None:
    try:
        return (paths.session_dir(name) / "output.log").stat().st_mtime
    except OSError:
        return None


class Supervisor:
    def __init__(self, ready_fd: int | None = None) -> None:
        self.ready_fd = ready_fd
        self.entries: dict[str, Entry] = {}
        self.watching: set[str] = set()
        self.busy: set[str] = set()  # names with a start/resume/rm under way
        self.subscribers: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._next_subscriber = 1
        self._save_lock = trio.Lock()
        self._stalled: set[str] = set()
        self._exit_reported: set[str] = set()  # sessions whose end was already announced
        self.started_at = time.time()
        self.factory = WorkerFactory()

    # ---- lifecycle ---------------------------------------------------------------------

    async def run(self) -> None:
        with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            paths.ensure_private_dir(paths.state_home())
            gate = hold_start_gate()  # until we listen: CLIs starting us wait on it
            lock_fd = acquire_lock()
            try:
                remove_stale_temps(registry_path())  # we hold the lock: no other writer
                self.entries, warnings = load_entries()
                for warning in warnings:
                    log.warning("registry_warning", detail=warning)
                sock = bind_control_socket()
                open_gate(gate)
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    for entry in list(self.entries.values()):
                        await self._adopt(entry)
                    await self.save()
                    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                    nursery.start_soon(trio.serve_listeners, self._serve, [listener])
                    nursery.start_soon(self._snapshot_loop)
                    nursery.start_soon(self._stall_loop)
                    nursery.start_soon(self._watchdog_loop)
                    self._announce_ready()
                    nursery.start_soon(trio.to_thread.run_sync, self.factory.warm)
                    async for signum in signals:
                        await self.save()
                        if signum == signal.SIGHUP:
                            log.info("sighup_persisted")
                            continue
                        log.info("exiting", signal=signal.Signals(signum).name)
                        sd_notify.notify("STOPPING=1")
                        nursery.cancel_scope.cancel()
                        break
            finally:
                self.factory.close()
                with contextlib.suppress(OSError):
                    paths.supervisor_socket().unlink()
                os.close(lock_fd)

    def _announce_ready(self) -> None:
        log.info("ready", pid=os.getpid(), sessions=len(self.entries), home=str(paths.state_home()))
        sd_notify.notify(f"READY=1\nSTATUS={self.status_text()}\nMAINPID={os.getpid()}")
        if self.ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.ready_fd, b"ready\n")
                os.close(self.ready_fd)
            self.ready_fd = None

    def status_text(self) -> str:
        running = sum(e.running for e in self.entries.values())
        return f"{running} running, {len(self.entries)} sessions"

    async def save(self) -> None:
        entries = {name: Entry.from_json(e.to_json()) for name, e in self.entries.items()}
        async with self._save_lock:
            try:
                await trio.to_thread.run_sync(save_entries, entries)
            except OSError as exc:
                log.error("registry_save_failed", error=str(exc))
                self.emit("snapshot_failed", "", error=f"registry: {exc}")
        sd_notify.notify(f"STATUS={self.status_text()}")

    async def _snapshot_loop(self) -> None:
        while True:
            await trio.sleep(snapshot_interval())
            await self.save()

    async def _watchdog_loop(self) -> None:
        interval = sd_notify.watchdog_interval()
        if interval is None:
            return
        while True:
            sd_notify.notify("WATCHDOG=1")
            await trio.sleep(interval)

    async def _stall_loop(self) -> None:
        """Report a running session that printed nothing for a long time (once per stall)."""
        while True:
            stall_after = settings.current().stall_after
            await trio.sleep(min(30.0, stall_after / 2))
            now = time.time()
            for name, entry in self.entries.items():
                last = log_mtime(name)
                stalled = entry.running and last is not None and now - last > stall_after
                if stalled and name not in self._stalled:
                    self.emit("stalled", name, idle=round(now - last))  # type: ignore[operator]
                if stalled:
                    self._stalled.add(name)
                else:
                    self._stalled.discard(name)

    def emit(self, event: str, session: str, **fields: Any) -> None:
        body = {"event": event, "session": session, "time": time.time(), **fields}
        log.info(event, session=session, **fields)
        for channel in list(self.subscribers.values()):
            with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError):
                channel.send_nowait(body)

    # ---- workers -----------------------------------------------------------------------

    async def _adopt(self, entry: Entry) -> None:
        """After our own start: watch a worker that still lives, settle one that died."""
        if entry.running and not entry.worker_alive():
            await self._ask_worker(entry)
        if entry.worker_alive():
            if entry.state in ("starting", "interrupted"):
                entry.state = "running"
            self._watch(entry)
            log.info("adopted", session=entry.name, worker_pid=entry.worker_pid)
        elif entry.running:
            self._settle_dead_worker(entry)
            self.nursery.start_soon(self._after_end, entry.name, True)
        elif entry.restart_pending and not entry.user_stopped:
            # Our predecessor died while this session waited out its restart backoff.
            self.nursery.start_soon(self._restart, entry)

    async def _ask_worker(self, entry: Entry) -> None:
        """Learn a worker's identity from its socket, when the files do not name it.

        That happens when we were killed after starting a worker and before it wrote its
        first snapshot: the worker lives and answers, and its welcome says who it is.
        """
        welcome = None
        try:
            with trio.move_on_after(2):
                stream = await trio.open_unix_socket(str(paths.session_socket(entry.name)))
                async with stream:
                    await stream.send_all(p.encode(p.Hello(p.Start.WATCH)))
                    welcome = await receive_message(stream, p.Decoder())
                    await stream.send_all(p.encode(p.Detach()))
        except (OSError, EOFError, p.ProtocolError, trio.BrokenResourceError):
            return
        info = welcome.info if isinstance(welcome, p.Welcome) else None
        if not info or info.get("state") != "running":
            return
        pid = int(info["worker_pid"])
        entry.worker_pid, entry.worker_start = pid, process_start_time(pid)
        entry.worker_boot, entry.agent_pid = boot_id(), info.get("agent_pid")
        entry.started_at = entry.started_at or info.get("started_at")

    def _settle_dead_worker(self, entry: Entry) -> None:
        """The worker is gone: take its last word on how the agent ended, else interrupted."""
        try:
            snap, _ = read_snapshot(paths.session_dir(entry.name))
            if snap.worker_pid == entry.worker_pid or not entry.worker_pid:
                entry.take_snapshot(snap)
        except Exception as exc:
            log.warning("no_snapshot", session=entry.name, error=str(exc))
        if entry.running:
            entry.state = "interrupted"
            entry.ended_at = entry.ended_at or time.time()
        entry.updated_at = time.time()

    def _watch(self, entry: Entry) -> None:
        if entry.name in self.watching:
            return
        self.watching.add(entry.name)
        self.nursery.start_soon(self._watch_worker, entry.name, entry.worker_pid)

    async def _watch_worker(self, name: str, pid: int) -> None:
        try:
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                pidfd = None
            if pidfd is not None:
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._forward_worker_events, name)
                        await trio.lowlevel.wait_readable(pidfd)
                        nursery.cancel_scope.cancel()
                finally:
                    os.close(pidfd)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it if it was our child
        finally:
            self.watching.discard(name)
        entry = self.entries.get(name)
        if entry is None or entry.worker_pid != pid:
            return
        self._settle_dead_worker(entry)
        await self._after_end(name, False)

    async def _forward_worker_events(self, name: str) -> None:
        """Relay a worker's attached/detached/exited events to ``superv events``."""
        path = paths.session_socket(name)
        try:
            stream = await trio.open_unix_socket(str(path))
        except OSError:
            return
        decoder = p.Decoder()
        async with stream:
            try:
                await stream.send_all(p.encode(p.Hello(p.Start.WATCH)))
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    decoder.feed(data)
                    for msg in decoder:
                        if isinstance(msg, p.Event) and self._worker_event(name, msg.body):
                            # It will be restarted: no need to linger for new clients.
                            await stream.send_all(p.encode(p.Stop(0)))
            except (trio.BrokenResourceError, trio.ClosedResourceError, p.ProtocolError):
                return

    def _worker_event(self, name: str, body: dict[str, Any]) -> bool:
        """Record and relay a worker's event; True if its session is about to be restarted."""
        event = str(body.get("event"))
        if event == "worker_exit":
            return False
        fields = {k: v for k, v in body.items() if k not in ("event", "session", "time")}
        entry = self.entries.get(name)
        if event == "exited" and entry is not None:
            # The agent ended; the worker lingers a moment for its clients, but the
            # session's state is known now.
            entry.state = str(body.get("state"))
            entry.exit_code, entry.exit_signal = body.get("exit_code"), body.get("exit_signal")
            entry.ended_at = time.time()
            self._exit_reported.add(name)
            self.emit(event, name, **fields)
            return self._wants_restart(entry, adopted=False)
        self.emit(event, name, **fields)
        return False

    def _wants_restart(self, entry: Entry, adopted: bool) -> bool:
        try:
            spec = load_spec(entry.name)
        except (OSError, ValueError, TypeError):
            return False
        failed = entry.state != "exited 0"
        wanted = spec.restart == "always" or (spec.restart == "on-failure" and failed)
        if adopted and entry.state != "interrupted":
            wanted = False  # it ended while we were down: the policy already had its chance
        return wanted and not entry.user_stopped

    async def _after_end(self, name: str, adopted: bool) -> None:
        """A session ended: record it, and restart it if its policy says so."""
        entry = self.entries.get(name)
        if entry is None:
            return
        if name not in self._exit_reported:
            self.emit("exited", name, state=entry.state, exit_code=entry.exit_code,
                      exit_signal=entry.exit_signal)
        self._exit_reported.discard(name)
        if not self._wants_restart(entry, adopted):
            await self.save()
            return
        ran_for = (entry.ended_at or time.time()) - (entry.started_at or 0)
        if ran_for >= RESTART_RESET:
            entry.restarts = 0
        # Recorded before waiting, so that a restart survives our own death meanwhile.
        entry.restart_pending = True
        await self.save()
        await self._restart(entry)

    async def _restart(self, entry: Entry) -> None:
        """Start an ended session again after its backoff, unless it hit its limit."""
        name = entry.name
        if entry.restarts >= settings.current().restart_limit:
            self.emit("restart_limit", name, restarts=entry.restarts)
            entry.restart_pending = False
            entry.state = entry.state if entry.state != "interrupted" else "failed"
            await self.save()
            return
        delay = min(settings.current().restart_backoff * 2**entry.restarts, RESTART_BACKOFF_CAP)
        entry.restarts += 1
        self.emit("restarting", name, attempt=entry.restarts, delay=delay)
        await trio.sleep(delay)
        if self.entries.get(name) is not entry or entry.running or entry.user_stopped:
            entry.restart_pending = False
            return
        marker = _marker(f"restarted (attempt {entry.restarts}) after {entry.state}")
        try:
            await self._start_worker(entry, marker)
        except RequestError as exc:
            log.error("restart_failed", session=name, error=str(exc))
            entry.state = "failed"
            entry.restart_pending = False
            await self.save()

    async def _start_worker(self, entry: Entry, marker: str | None) -> None:
        entry.state = "starting"
        self._exit_reported.discard(entry.name)
        try:
            pid, start, agent_pid = await trio.to_thread.run_sync(
                launch_worker, entry.name, marker, self.factory
            )
        except LaunchError as exc:
            entry.state = "failed" if entry.started_at else entry.state
            raise RequestError(str(exc)) from None
        entry.worker_pid, entry.worker_start, entry.agent_pid = pid, start, agent_pid
        entry.worker_boot = boot_id()
        entry.state, entry.exit_code, entry.exit_signal = "running", None, None
        entry.started_at, entry.ended_at = time.time(), None
        entry.user_stopped = entry.restart_pending = False
        entry.updated_at = time.time()
        self._watch(entry)
        self.emit("started", entry.name, worker_pid=pid, agent_pid=agent_pid)
        await self.save()

    # ---- control socket ----------------------------------------------------------------

    async def _serve(self, stream: trio.SocketStream) -> None:
        try:
            async with stream:
                await self._serve_inner(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        except Exception:
            log.exception("control_request_failed")  # one bad request never takes us down

    async def _serve_inner(self, stream: trio.SocketStream) -> None:
        refused = refusal(stream.socket)  # type: ignore[arg-type]
        if refused:
            await stream.send_all(p.encode(p.Error(refused)))
            return
        decoder = p.Decoder()
        try:
            with trio.fail_after(10):
                request = await receive_message(stream, decoder)
            if not isinstance(request, p.Request):
                raise p.ProtocolError(f"expected a request, got {type(request).__name__}")
        except (p.ProtocolError, trio.TooSlowError, EOFError) as exc:
            text = str(exc) if isinstance(exc, p.ProtocolError) else "no request in time"
            with trio.move_on_after(1):
                await stream.send_all(p.encode(p.Error(text)))
            return
        op = request.body.get("op")
        if op == "events":
            await self._stream_events(stream)
            return
        handler = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
        try:
            if handler is None:
                raise RequestError(f"unknown request {op!r}: is the CLI from another superv version?")
            reply = await handler(request.body)
            body = {"ok": True, **(reply or {})}
        except RequestError as exc:
            body = {"ok": False, "error": str(exc)}
        except paths.PathError as exc:
            body = {"ok": False, "error": str(exc), "usage": True}
        except (ValueError, TypeError, AttributeError) as exc:
            # A field of the wrong type or value (a hand-made or foreign request): say so
            # instead of dropping the connection without an answer.
            log.warning("bad_request", op=op, error=repr(exc))
            body = {"ok": False, "error": f"malformed {op} request: {exc}", "usage": True}
        await stream.send_all(p.encode(p.Reply(body)))

    async def _stream_events(self, stream: trio.SocketStream) -> None:
        send, receive = trio.open_memory_channel[dict[str, Any]](1024)
        key = self._next_subscriber
        self._next_subscriber += 1
        self.subscribers[key] = send
        try:
            await stream.send_all(p.encode(p.Reply({"ok": True})))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_wait_closed, stream, nursery.cancel_scope)
                async for event in receive:
                    await stream.send_all(p.encode(p.Event(event)))
        finally:
            del self.subscribers[key]

    def _entry(self, body: dict[str, Any]) -> Entry:
        name = paths.validate_name(body.get("name", ""))
        entry = self.entries.get(name)
        if entry is None:
            raise RequestError(f"no session named {name}: 'superv ls' lists them")
        return entry

    async def op_ping(self, body: dict[str, Any]) -> dict[str, Any]:
        from supervisor.cli import version

        return {"pid": os.getpid(), "version": version(), "home": str(paths.state_home()),
                "sessions": len(self.entries), "started_at": self.started_at}

    async def op_start(self, body: dict[str, Any]) -> dict[str, Any]:
        name = paths.validate_name(body.get("name", ""))
        argv = body.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise RequestError("no command given: superv start NAME -- CMD [ARG...]")
        cwd = body.get("cwd") or os.path.expanduser("~")
        if not os.path.isdir(cwd):
            raise RequestError(f"working directory {cwd} does not exist")
        restart = body.get("restart", "no")
        if restart not in RESTART_POLICIES:
            raise RequestError(f"restart policy {restart!r}: use no, on-failure or always")
        if name in self.busy:
            raise RequestError(f"session {name} is being started or removed right now")
        existing = self.entries.get(name)
        if existing is not None:
            if existing.running:
                raise RequestError(f"session {name} is already running: 'superv attach {name}'")
            raise RequestError(
                f"session {name} already exists ({existing.state}): "
                f"'superv resume {name}' runs it again, 'superv rm {name}' forgets it"
            )
        env = body.get("env") or {}
        overrides = body.get("env_overrides") or {}
        spec = SessionSpec(
            name=name, argv=argv, cwd=cwd, env=agent_environment(env, overrides, name),
            restart=restart, resume_cmd=body.get("resume_cmd") or None,
            rows=int(body.get("rows") or 24), cols=int(body.get("cols") or 80),
        )
        directory = paths.session_dir(name)
        self.busy.add(name)
        try:
            paths.ensure_private_dir(paths.sessions_dir())
            directory.mkdir(mode=0o700)
            spec.write(directory)
            entry = Entry(name)
            self.entries[name] = entry
            try:
                await self._start_worker(entry, None)
            except RequestError:
                del self.entries[name]
                shutil.rmtree(directory, ignore_errors=True)
                raise
        except FileExistsError:
            raise RequestError(f"session {name} already has files in {directory}") from None
        finally:
            self.busy.discard(name)
        return {"name": name, "worker_pid": entry.worker_pid, "agent_pid": entry.agent_pid}

    async def op_resume(self, body: dict[str, Any]) -> dict[str, Any]:
        entry = self._entry(body)
        if entry.running and entry.worker_alive():
            raise RequestError(f"session {entry.name} is running: 'superv attach {entry.name}'")
        if entry.name in self.busy:
            raise RequestError(f"session {entry.name} is being started right now")
        spec = load_spec(entry.name)
        argv = shlex.split(spec.resume_cmd) if spec.resume_cmd else spec.argv
        if not os.path.isdir(spec.cwd):
            raise RequestError(f"working directory {spec.cwd} no longer exists")
        attrs.evolve(spec, argv=argv).write(paths.session_dir(entry.name))
        self.busy.add(entry.name)
        try:
            entry.restarts = 0
            await self._start_worker(entry, _marker(f"resumed: {shlex.join(argv)}"))
        finally:
            self.busy.discard(entry.name)
        return {"name": entry.name, "worker_pid": entry.worker_pid}

    async def op_stop(self, body: dict[str, Any]) -> dict[str, Any]:
        entry = self._entry(body)
        grace = float(body.get("grace", 10))
        if entry.restart_pending and not entry.running:
            entry.user_stopped, entry.restart_pending = True, False
            await self.save()
            self.emit("restart_cancelled", entry.name)
            return {"state": entry.state}
        if not (entry.running and entry.worker_alive()):
            raise RequestError(f"session {entry.name} is not running ({entry.state})")
        entry.user_stopped = True
        await self.save()
        try:
            stream = await trio.open_unix_socket(str(paths.session_socket(entry.name)))
        except OSError as exc:
            raise RequestError(f"cannot reach session {entry.name}'s worker: {exc}") from None
        async with stream:
            await stream.send_all(p.encode(p.Hello(p.Start.WATCH)))
            await stream.send_all(p.encode(p.Stop(int(grace * 1000))))
            with trio.move_on_after(grace + 5):
                while entry.running:
                    await trio.sleep(0.05)
        return {"state": entry.state}

    async def op_rm(self, body: dict[str, Any]) -> dict[str, Any]:
        entry = self._entry(body)
        if entry.running and entry.worker_alive():
            raise RequestError(f"session {entry.name} is running: 'superv stop {entry.name}' first")
        await self._forget(entry.name)
        return {"removed": [entry.name]}

    async def op_prune(self, body: dict[str, Any]) -> dict[str, Any]:
        older_than = float(body.get("older_than", 30 * 86400))
        now = time.time()
        removed = []
        for name, entry in list(self.entries.items()):
            if entry.running or name in self.busy:
                continue
            size = _log_size(name)
            old = (entry.ended_at or entry.updated_at) < now - older_than
            if old or size == 0:
                await self._forget(name)
                removed.append(name)
        return {"removed": removed}

    async def _forget(self, name: str) -> None:
        self.entries.pop(name, None)
        await trio.to_thread.run_sync(shutil.rmtree, paths.session_dir(name), True)
        with contextlib.suppress(OSError):
            paths.session_socket(name).unlink()
        self.emit("removed", name)
        await self.save()

    async def op_ls(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"sessions": [self._describe(e) for e in self.entries.values()]}

    def _describe(self, entry: Entry) -> dict[str, Any]:
        """One session for ``ls``: one read of its spec, one stat of its log."""
        directory = paths.session_dir(entry.name)
        clients = 0
        spec_argv: list[str] = []
        created = None
        with contextlib.suppress(OSError, ValueError, TypeError):
            spec = load_spec(entry.name)
            spec_argv, created = spec.argv, spec.created_at
        try:
            log_stat = (directory / "output.log").stat()
            last_output = log_stat.st_mtime if log_stat.st_size else None
        except OSError:
            last_output = None
        if entry.running:
            with contextlib.suppress(Exception):
                clients = sum(c.get("mode") == "attach" for c in read_snapshot(directory)[0].clients)
        return {
            "name": entry.name,
            "state": entry.state,
            "exit_code": entry.exit_code,
            "exit_signal": entry.exit_signal,
            "agent_pid": entry.agent_pid if entry.running else None,
            "worker_pid": entry.worker_pid if entry.running else None,
            "created": created,
            "started_at": entry.started_at,
            "ended_at": entry.ended_at,
            "last_output": last_output,
            "clients": clients,
            "restarts": entry.restarts,
            "command": spec_argv,
        }


def _marker(what: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return f"\r\n\x1b[0m[superv: {what} at {stamp}]\r\n"


def _log_size(name: str) -> int:
    try:
        return (paths.session_dir(name) / "output.log").stat().st_size
    except OSError:
        return 0


async def _wait_closed(stream: trio.SocketStream, scope: trio.CancelScope) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while await stream.receive_some(4096):
            pass
    scope.cancel()


def run_daemon(ready_fd: int | None = None) -> None:
    """Run the supervisor in the foreground; raises RequestError if one already runs."""
    configure_logging()
    trio.run(Supervisor(ready_fd).run)
