"""``superv daemon``: the supervisor, one per user and ``SUPERV_HOME``.

It starts workers detached, watches them (by pidfd, so a reused pid never fools it, and
by a watch connection on each worker's socket for lifecycle events), keeps the registry,
re-adopts running workers after its own restart, and answers the CLI on its control
socket.  What each of those events does to a session (restart it, give up, cancel a
restart...) is decided by :mod:`supervisor.lifecycle`; this module carries the decisions
out.  It is never in the data path: attach talks to workers.

SIGHUP persists and keeps running; SIGTERM persists and exits *without* stopping any
worker: a restart or upgrade of the supervisor leaves every session running.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shlex
import shutil
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import structlog
import trio

from agent_worker import agent_kinds, paths, session_files, settings
from agent_worker import conversation as c
from agent_worker import protocol as p
from agent_worker.activity.report import activity_fields
from agent_worker.activity.resume import plan as resume_plan
from agent_worker.atomic import remove_stale_temps
from agent_worker.conversation import fit_window_size
from agent_worker.logs import configure_logging
from agent_worker.outage import Outage
from agent_worker.peer import listen_private, refusal
from agent_worker.snapshot import boot_id, process_start_time, read_snapshot, snapshot_interval
from agent_worker.spec import RESTART_POLICIES, SessionSpec, agent_environment, cwd_problem
from agent_worker.streams import receive_message
from supervisor import lifecycle as lc
from supervisor import sd_notify
from supervisor.autostart import hold_start_gate, open_gate
from supervisor.launch import LaunchError, WorkerFactory, launch_worker
from supervisor.notify.notifier import Notifier
from supervisor.registry import Entry, load_entries, load_spec, registry_path, save_entries
from supervisor.worker_link import LinkError, WorkerLink, open_link, send_to_worker

log = structlog.get_logger("supervisor")

# Restarts in a row (SUPERV_RESTART_LIMIT), each after a run shorter than RESTART_RESET;
# the first delay (SUPERV_RESTART_BACKOFF) doubles up to the cap.
RESTART_RESET = 60.0
RESTART_BACKOFF_CAP = 30.0
# How long a resume waits for an ended worker it released to exit (it lingers at most
# its LINGER_MIN for attached clients once told to go).
RELEASE_TIMEOUT = 15.0


class RequestError(Exception):
    """A request the supervisor refuses; the message goes back to the CLI."""


class UsageError(RequestError):
    """A request with a field the CLI should have refused (the CLI exits 2)."""


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
    paths.ensure_socket_dir(path.parent)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()  # we hold the lock: whatever is there is stale
    return listen_private(path, socket.SOMAXCONN)  # a burst of CLI calls waits in the queue


@attrs.define(eq=False)
class Session:
    """One session: its registry entry (its state is ``entry.life``) and the supervisor's
    handles on its worker.  ``changed`` is set at each change of state, for the requests
    that wait for one (stop waits for the end, resume for the new run)."""

    entry: Entry
    changed: trio.Event = attrs.Factory(trio.Event)
    link: WorkerLink | None = None  # the watch connection to its worker, while open
    watched_pid: int | None = None
    restart_timer: trio.CancelScope | None = None
    launch_error: str | None = None
    # The last ``activity`` event of the linked worker: ls shows it at once (the worker's
    # snapshot gets it within a second).
    activity: dict[str, Any] | None = None
    # The linked worker's disk refuses its log (``log_write_failed``, till
    # ``log_write_resumed``): its agent is held, blocked on its writes, and ls says so.
    held: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return self.entry.name

    async def wait_until(self, done: Callable[[lc.State], bool]) -> None:
        while not done(self.entry.life):
            await self.changed.wait()


class Supervisor:
    def __init__(self, ready_fd: int | None = None) -> None:
        self.ready_fd = ready_fd
        self.sessions: dict[str, Session] = {}
        self.subscribers: dict[int, trio.MemorySendChannel[dict[str, Any]]] = {}
        self._next_subscriber = 1
        self._save_lock = trio.Lock()
        self._save_outage = Outage()  # the registry's snapshot_failed: once an outage
        self.started_at = time.time()
        self.factory = WorkerFactory()

    # ---- our own lifecycle -------------------------------------------------------------

    async def run(self) -> None:
        with trio.open_signal_receiver(signal.SIGHUP, signal.SIGTERM, signal.SIGINT) as signals:
            paths.ensure_private_dir(paths.state_home())
            gate = hold_start_gate()  # until we listen: CLIs starting us wait on it
            lock_fd = acquire_lock()
            try:
                remove_stale_temps(registry_path())  # we hold the lock: no other writer
                entries, warnings = load_entries()
                self.sessions = {name: Session(entry) for name, entry in entries.items()}
                for warning in warnings:
                    log.warning("registry_warning", detail=warning)
                sock = bind_control_socket()
                open_gate(gate)
                async with trio.open_nursery() as nursery:
                    self.nursery = nursery
                    # notify: the notifier is one more subscriber of our events (key 0).
                    notifier = Notifier(self.emit, self._agent_of)
                    self.subscribers[0] = notifier.send
                    nursery.start_soon(notifier.run)
                    for session in list(self.sessions.values()):
                        await self._recover(session)
                    await self.save()
                    listener = trio.SocketListener(trio.socket.from_stdlib_socket(sock))
                    nursery.start_soon(trio.serve_listeners, self._serve, [listener])
                    nursery.start_soon(self._snapshot_loop)
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
        log.info("ready", pid=os.getpid(), sessions=len(self.sessions), home=str(paths.state_home()))
        sd_notify.notify(f"READY=1\nSTATUS={self.status_text()}\nMAINPID={os.getpid()}")
        if self.ready_fd is not None:
            with contextlib.suppress(OSError):
                os.write(self.ready_fd, b"ready\n")
                os.close(self.ready_fd)
            self.ready_fd = None

    def status_text(self) -> str:
        running = sum(s.entry.running for s in self.sessions.values())
        return f"{running} running, {len(self.sessions)} sessions"

    async def save(self) -> None:
        entries = {name: attrs.evolve(s.entry) for name, s in self.sessions.items()}
        async with self._save_lock:
            try:
                await trio.to_thread.run_sync(save_entries, entries)
            except OSError as exc:
                log.error("registry_save_failed", error=str(exc))
                if self._save_outage.failed():
                    self.emit("snapshot_failed", "", error=f"registry: {exc}")
            else:
                if self._save_outage.succeeded():
                    log.info("registry_save_resumed")
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

    def emit(self, event: str, session: str, **fields: Any) -> None:
        body = {"event": event, "session": session, "time": time.time(), **fields}
        log.info(event, session=session, **fields)
        for channel in list(self.subscribers.values()):
            with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError):
                channel.send_nowait(body)

    def _agent_of(self, name: str) -> str | None:
        """The session's agent kind, for per-kind notification settings (notify)."""
        try:
            return load_spec(name).agent
        except (OSError, ValueError, TypeError):
            return None

    # ---- the lifecycle: events in, decisions carried out ------------------------------------

    def _policy(self, name: str) -> lc.Policy:
        try:
            restart = load_spec(name).restart
        except (OSError, ValueError, TypeError):
            restart = "no"  # an unreadable spec cannot be started again anyway
        current = settings.current()
        return lc.Policy(restart, current.restart_limit, current.restart_backoff,
                         RESTART_BACKOFF_CAP, RESTART_RESET)

    def _refusal(self, session: Session, event: lc.Event) -> str | None:
        """Why ``event`` would be refused, without changing anything (step is pure)."""
        _, actions = lc.step(session.entry.life, event, self._policy(session.name))
        for action in actions:
            if isinstance(action, lc.Refuse):
                return action.reason.format(name=session.name)
        return None

    async def feed(self, session: Session, event: lc.Event) -> tuple[lc.Action, ...]:
        """Let the lifecycle decide what ``event`` does to ``session``, and do it.

        Raises RequestError if the lifecycle refuses (then nothing changed).
        """
        transition = lc.step(session.entry.life, event, self._policy(session.name))
        await self._apply(session, transition)
        return transition[1]

    async def _apply(self, session: Session, transition: lc.Transition) -> None:
        state, actions = transition
        for action in actions:
            if isinstance(action, lc.Refuse):
                raise RequestError(action.reason.format(name=session.name))
        if state != session.entry.life:
            if isinstance(state, lc.Starting):
                session.entry.forget_worker()  # a new one is launched: it must not be saved
            session.entry.life = state
            session.entry.updated_at = time.time()
            session.changed.set()
            session.changed = trio.Event()
        for action in actions:
            await self._perform(session, action)

    async def _perform(self, session: Session, action: lc.Action) -> None:
        name = session.name
        match action:
            case lc.Emit(event, fields):
                self.emit(event, name, **fields)
            case lc.Save():
                await self.save()
            case lc.Launch(note):
                await self._launch(session, note)
            case lc.SendStop(grace):
                try:
                    await send_to_worker(name, p.Stop(int(grace * 1000)), session.link)
                except LinkError as exc:
                    raise RequestError(str(exc)) from None
            case lc.ReleaseWorker():
                with contextlib.suppress(LinkError):  # it goes by itself soon enough
                    await send_to_worker(name, p.Stop(0), session.link)
            case lc.ScheduleRestart(due_at):
                self._cancel_restart(session)
                session.restart_timer = trio.CancelScope()
                self.nursery.start_soon(self._restart_timer, session, due_at, session.restart_timer)
            case lc.CancelRestart():
                self._cancel_restart(session)

    def _cancel_restart(self, session: Session) -> None:
        if session.restart_timer is not None:
            session.restart_timer.cancel()
            session.restart_timer = None

    async def _in_background(self, session: Session, event: lc.Event) -> None:
        """Feed an event no request waits for: a bug it meets is logged, never fatal to us."""
        try:
            await self.feed(session, event)
        except Exception:
            log.exception("lifecycle_step_failed", session=session.name, lifecycle_event=repr(event))

    async def _restart_timer(self, session: Session, due_at: float, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep(max(0.0, due_at - time.time()))
        if scope.cancelled_caught or self.sessions.get(session.name) is not session:
            return
        if session.restart_timer is scope:
            session.restart_timer = None
        await self._in_background(session, lc.RestartDue(time.time()))

    async def _launch(self, session: Session, note: str | None) -> None:
        entry = session.entry
        session.launch_error = None
        if note is not None and note.startswith("restarted"):
            note += self._continue_conversation(entry.name)  # activity
        marker = _marker(note) if note else None
        try:
            pid, start, agent_pid = await trio.to_thread.run_sync(
                launch_worker, entry.name, marker, self.factory
            )
        except LaunchError as exc:
            session.launch_error = str(exc)
            await self.feed(session, lc.LaunchFailed(time.time(), str(exc)))
            return
        entry.worker_pid, entry.worker_start, entry.agent_pid = pid, start, agent_pid
        entry.worker_boot = boot_id()
        await self.feed(session, lc.Launched(time.time(), pid, agent_pid))
        self._watch(session)

    def _continue_conversation(self, name: str) -> str:
        """A restart continues the agent's recorded conversation, as ``resume`` does; the
        marker line says which, or why not."""
        try:
            spec = load_spec(name)
        except (OSError, ValueError, TypeError):
            return ""
        resume = resume_plan(spec, paths.session_dir(name))
        attrs.evolve(spec, resumed_argv=resume.argv if resume.argv != spec.argv else None).write(
            paths.session_dir(name))
        if resume.continues:
            return f", continuing conversation {resume.continues}"
        return f" ({resume.reason})" if resume.reason else ""

    # ---- workers -----------------------------------------------------------------------

    async def _recover(self, session: Session) -> None:
        """After our own start: tell the lifecycle whether the session's worker lives."""
        entry = session.entry
        if entry.running and not entry.worker_alive():
            await self._ask_worker(entry)
        alive = entry.worker_alive()
        rebooted = bool(entry.worker_boot) and entry.worker_boot != boot_id()
        last_word, ended_at = self._last_word(entry) if entry.running and not alive else (None, None)
        await self.feed(session, lc.Recovered(time.time(), alive, last_word, ended_at, rebooted))
        if alive:
            self._watch(session)
            log.info("adopted", session=entry.name, worker_pid=entry.worker_pid)

    async def _ask_worker(self, entry: Entry) -> None:
        """Learn a worker's identity from its socket, when the files do not name it.

        That happens when we were killed after starting a worker and before it wrote its
        first snapshot: the worker lives and answers, and its welcome says who it is.
        """
        try:
            async with open_link(entry.name) as link:
                info = link.info
        except LinkError:
            return
        if not info.running or info.worker_pid is None:
            return
        entry.worker_pid, entry.worker_start = info.worker_pid, process_start_time(info.worker_pid)
        entry.worker_boot, entry.agent_pid = boot_id(), info.agent_pid

    def _last_word(self, entry: Entry) -> tuple[lc.Outcome | None, float | None]:
        """How a gone worker's last snapshot says its agent ended (None: it did not say)."""
        try:
            snap, _ = read_snapshot(paths.session_dir(entry.name))
        except Exception as exc:
            log.warning("no_snapshot", session=entry.name, error=str(exc))
            return None, None
        if snap.state == "running" or (entry.worker_pid and snap.worker_pid != entry.worker_pid):
            return None, None
        return lc.Outcome.of_exit(snap.exit_code, snap.exit_signal), snap.ended_at

    def _watch(self, session: Session) -> None:
        pid = session.entry.worker_pid
        if pid and session.watched_pid != pid:
            session.watched_pid = pid
            self.nursery.start_soon(self._watch_worker, session, pid)

    async def _watch_worker(self, session: Session, pid: int) -> None:
        """Follow one worker until its process ends (pidfd), then say so to the lifecycle."""
        try:
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                pidfd = None
            if pidfd is not None:
                try:
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(self._follow_worker, session)
                        await trio.lowlevel.wait_readable(pidfd)
                        nursery.cancel_scope.cancel()
                finally:
                    os.close(pidfd)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap it if it was our child
        finally:
            if session.watched_pid == pid:
                session.watched_pid = None
        if self.sessions.get(session.name) is not session or session.entry.worker_pid != pid:
            return
        last_word, ended_at = self._last_word(session.entry)
        await self._in_background(session, lc.WorkerExited(time.time(), last_word, ended_at))

    async def _follow_worker(self, session: Session) -> None:
        """The worker's events: ``exited`` to the lifecycle, the rest to ``superv events``."""
        try:
            async with open_link(session.name) as link:
                session.link, session.activity, session.held = link, None, None
                try:
                    if not link.info.running:
                        # Its agent ended before we connected: no ``exited`` event will
                        # follow, and the end must count now, not when the worker goes
                        # (a label we cannot read waits for the worker's snapshot).
                        with contextlib.suppress(ValueError):
                            outcome = lc.Outcome.of_exit_label(link.info.state)
                            await self._in_background(session, lc.AgentExited(time.time(), outcome))
                    async for event in link.events():
                        if isinstance(event, c.Exited):
                            outcome = lc.Outcome.of_exit(event.exit_code, event.exit_signal)
                            await self._in_background(session, lc.AgentExited(time.time(), outcome))
                        elif event.event != "worker_exit":  # from a worker older than this
                            fields = {k: v for k, v in event.fields.items()
                                      if k not in ("session", "time")}
                            if event.event == "activity":
                                session.activity = fields
                            elif event.event in ("log_write_failed", "log_write_resumed"):
                                session.held = fields if event.event == "log_write_failed" else None
                            self.emit(event.event, session.name, **fields)
                finally:
                    session.link, session.activity, session.held = None, None, None
        except LinkError:
            return

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
            await self._stream_events(stream, lists=request.body.get("lists") is True)
            return
        handler = getattr(self, f"op_{op}", None) if isinstance(op, str) else None
        try:
            if handler is None:
                shown = repr(op) if len(repr(op)) <= 60 else repr(op)[:60] + "..."  # fits a frame
                raise RequestError(f"unknown request {shown}: is the CLI from another superv version?")
            reply = await handler(request.body)
            body = {"ok": True, **(reply or {})}
        except UsageError as exc:
            body = {"ok": False, "error": str(exc), "usage": True}
        except RequestError as exc:
            body = {"ok": False, "error": str(exc)}
        except paths.PathError as exc:
            body = {"ok": False, "error": str(exc), "usage": True}
        except OSError as exc:  # a file of ours could not be written (a full disk)
            log.warning("request_failed", op=op, error=str(exc))
            body = {"ok": False, "error": failure_of_files(f"{op!s:.60}", exc)}
        except (ValueError, TypeError, AttributeError, ArithmeticError) as exc:
            # A field of the wrong type or value (a hand-made or foreign request): say so
            # instead of dropping the connection without an answer.
            log.warning("bad_request", op=op, error=repr(exc))
            body = {"ok": False, "error": f"malformed {op!s:.60} request: {exc}", "usage": True}
        try:
            frame = p.encode(p.Reply(body))
        except p.ProtocolError as exc:  # an answer quoting a huge request: say less
            frame = p.encode(p.Error(f"the answer to this request is too large: {exc}"))
        await stream.send_all(frame)

    async def _stream_events(self, stream: trio.SocketStream, lists: bool = False) -> None:
        """Every event from now on.  With ``lists`` (the overview's remote feed): first a
        ``sessions`` event, the rows ``ls`` gives, then one more each time the client sends
        an ``ls`` request on this same connection; each is taken as it is queued, in line
        with the events, so no change falls between a list and the events after it."""
        send, receive = trio.open_memory_channel[dict[str, Any]](1024)
        key = self._next_subscriber
        self._next_subscriber += 1
        self.subscribers[key] = send
        try:
            if lists:  # no await since the line above: no event can come before it
                send.send_nowait(self._sessions_event())
            await stream.send_all(p.encode(p.Reply({"ok": True, "lists": lists})))
            async with trio.open_nursery() as nursery:
                if lists:
                    nursery.start_soon(self._answer_asks, stream, send, nursery.cancel_scope)
                else:
                    nursery.start_soon(_wait_closed, stream, nursery.cancel_scope)
                async for event in receive:
                    await stream.send_all(p.encode(p.Event(event)))
        finally:
            del self.subscribers[key]

    def _sessions(self) -> list[dict[str, Any]]:
        """What ``ls`` lists."""
        return [self._describe(s.entry, s.activity, s.held) for s in self.sessions.values()]

    def _sessions_event(self) -> dict[str, Any]:
        return {"event": "sessions", "time": time.time(), "sessions": self._sessions()}

    async def _answer_asks(self, stream: trio.SocketStream,
                           send: trio.MemorySendChannel[dict[str, Any]],
                           scope: trio.CancelScope) -> None:
        """An events client's ``ls`` requests, answered in its stream; ends it when the
        client goes or sends anything else, or reads so little that its queue is full (so
        a list is never dropped unseen: the client sees the end, and reconnects)."""
        decoder = p.Decoder()
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError,
                                 p.ProtocolError, trio.WouldBlock):
            while data := await stream.receive_some(4096):
                decoder.feed(data)
                for msg in decoder:
                    if not (isinstance(msg, p.Request) and msg.body.get("op") == "ls"):
                        raise p.ProtocolError("an events stream takes only ls requests")
                    send.send_nowait(self._sessions_event())
        scope.cancel()

    def _session(self, body: dict[str, Any]) -> Session:
        name = paths.validate_name(body.get("name", ""))
        session = self.sessions.get(name)
        if session is None:
            raise RequestError(f"no session named {name}: 'superv ls' lists them")
        return session

    async def op_ping(self, body: dict[str, Any]) -> dict[str, Any]:
        from supervisor.cli import version

        return {"pid": os.getpid(), "version": version(), "home": str(paths.state_home()),
                "sessions": len(self.sessions), "started_at": self.started_at}

    async def op_start(self, body: dict[str, Any]) -> dict[str, Any]:
        name = paths.validate_name(body.get("name", ""))
        argv = body.get("argv")
        if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
            raise RequestError("no command given: superv start NAME -- CMD [ARG...]")
        cwd = body.get("cwd") or os.path.expanduser("~")
        if (problem := cwd_problem(cwd)) is not None:
            raise RequestError(problem)
        restart = body.get("restart", "no")
        if restart not in RESTART_POLICIES:
            raise RequestError(f"restart policy {restart!r}: use no, on-failure or always")
        existing = self.sessions.get(name)
        if existing is not None:
            if isinstance(existing.entry.life, lc.Starting):
                raise RequestError(f"session {name} is being started right now")
            if existing.entry.running:
                raise RequestError(f"session {name} is already running: 'superv attach {name}'")
            raise RequestError(
                f"session {name} already exists ({existing.entry.state}): "
                f"'superv resume {name}' runs it again, 'superv rm {name}' forgets it"
            )
        env = body.get("env") or {}
        overrides = body.get("env_overrides") or {}
        try:
            kind = agent_kinds.resolve(body.get("agent"), argv)  # activity: the agent's kind
        except ValueError as exc:
            raise RequestError(str(exc)) from None
        # The caller's terminal, brought into the range a worker accepts.
        rows, cols = fit_window_size(int(body.get("rows") or 24), int(body.get("cols") or 80))
        spec = SessionSpec(
            name=name, argv=argv, cwd=cwd, env=agent_environment(env, overrides, name),
            restart=restart, resume_cmd=body.get("resume_cmd") or None, agent=kind,
            rows=rows, cols=cols,
        )
        directory = paths.session_dir(name)
        try:
            paths.ensure_private_dir(paths.sessions_dir())
            directory.mkdir(mode=0o700)
        except FileExistsError:
            raise RequestError(f"session {name} already has files in {directory}") from None
        try:
            spec.write(directory)
        except OSError:
            shutil.rmtree(directory, ignore_errors=True)  # or the name is taken for good
            raise
        session = Session(Entry(name))
        self.sessions[name] = session  # from here on a second start is refused
        await self._apply(session, lc.begin())
        if not session.entry.running:
            del self.sessions[name]  # no empty record of a session that never ran
            shutil.rmtree(directory, ignore_errors=True)
            await self.save()
            raise RequestError(session.launch_error or f"session {name} did not start")
        entry = session.entry
        return {"name": name, "worker_pid": entry.worker_pid, "agent_pid": entry.agent_pid}

    async def op_resume(self, body: dict[str, Any]) -> dict[str, Any]:
        session = self._session(body)
        name = session.name
        try:
            spec = load_spec(name)
        except (OSError, session_files.BadFile) as exc:
            raise RequestError(f"cannot resume {name}: {exc}: mend it from its .prev copy, or "
                               f"'superv rm {name}' to forget the session") from None
        resume = resume_plan(spec, paths.session_dir(name))  # activity: its conversation
        argv = resume.argv
        event = lc.ResumeRequested(time.time(), f"resumed: {shlex.join(argv)}"
                                   + (f" ({resume.reason})" if resume.reason else ""))
        refused = self._refusal(session, event)
        if refused:
            raise RequestError(refused)
        if not os.path.isdir(spec.cwd):
            raise RequestError(f"working directory {spec.cwd} no longer exists")
        # What this run executes, beside the command the session was started with.
        attrs.evolve(spec, resumed_argv=argv if argv != spec.argv else None).write(
            paths.session_dir(name))
        await self.feed(session, event)
        # An ended worker that still lingers was told to go; the new run starts once it is.
        with trio.move_on_after(RELEASE_TIMEOUT):
            await session.wait_until(_resume_settled)
        life = session.entry.life
        if isinstance(life, lc.Running):
            return {"name": name, "worker_pid": session.entry.worker_pid,
                    "continues": resume.continues, "note": resume.reason}
        if isinstance(life, lc.Ended) and life.resume_note is None:
            raise RequestError(session.launch_error or f"session {name} did not start ({life.outcome.label})")
        raise RequestError(f"session {name}'s previous worker has not exited yet: try again")

    async def op_stop(self, body: dict[str, Any]) -> dict[str, Any]:
        session = self._session(body)
        # Checked before anything is recorded: a refused stop leaves the policy as it was.
        try:
            event = lc.StopRequested(time.time(), body.get("grace", 10.0))
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if isinstance(session.entry.life, lc.Running) and not session.entry.worker_alive():
            # Its end is about to be learnt (the pidfd); a stop has nothing to stop.
            raise RequestError(f"session {session.name} is not running ({session.entry.state})")
        actions = await self.feed(session, event)
        if any(isinstance(a, lc.SendStop) for a in actions):
            with trio.move_on_after(event.grace + 5):
                await session.wait_until(lambda life: not lc.is_running(life))
        return {"state": session.entry.state}

    async def op_rm(self, body: dict[str, Any]) -> dict[str, Any]:
        session = self._session(body)
        if session.entry.running:
            raise RequestError(f"session {session.name} is running: 'superv stop {session.name}' first")
        await self._forget(session)
        return {"removed": [session.name]}

    async def op_prune(self, body: dict[str, Any]) -> dict[str, Any]:
        older_than = float(body.get("older_than", 30 * 86400))
        now = time.time()
        removed = []
        for name, session in list(self.sessions.items()):
            if session.entry.running:
                continue
            life = session.entry.life
            ended_at = life.ended_at if isinstance(life, lc.Ended | lc.RestartPending) else None
            old = (ended_at or session.entry.updated_at) < now - older_than
            if old or _log_size(name) == 0:
                await self._forget(session)
                removed.append(name)
        return {"removed": removed}

    async def _forget(self, session: Session) -> None:
        name = session.name
        directory = paths.session_dir(name)
        await trio.to_thread.run_sync(remove_tree, directory)
        if os.path.lexists(directory):  # or a restarted supervisor finds it again
            raise RequestError(f"cannot remove {directory}: remove it by hand, then "
                               f"'superv rm {name}' again")
        self.sessions.pop(name, None)
        self._cancel_restart(session)
        with contextlib.suppress(OSError):
            paths.session_socket(name).unlink()
        self.emit("removed", name)
        await self.save()

    async def op_ls(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"sessions": self._sessions()}

    def _describe(self, entry: Entry, live: dict[str, Any] | None = None,
                  held: dict[str, Any] | None = None) -> dict[str, Any]:
        """One session for ``ls``: one read of its spec, one stat of its log; ``live``: its
        worker's last activity event; ``held``: its ``log_write_failed``, while the disk
        refuses its log."""
        directory = paths.session_dir(entry.name)
        clients = 0
        spec_argv: list[str] = []
        created = None
        kind = None
        problem = None  # a broken spec.json costs its own session only, and ls says so
        try:
            spec = load_spec(entry.name)
            spec_argv, created, kind = spec.argv, spec.created_at, spec.agent
        except (OSError, ValueError) as exc:
            problem = str(exc).replace(f"{directory}/", "")
        if problem is None and held is not None:
            since = time.strftime("%H:%M:%S", time.localtime(float(held.get("since") or time.time())))
            problem = f"output held since {since}, the disk refused its log: {held.get('error')}"
        try:
            log_stat = (directory / session_files.LOG).stat()
            last_output = log_stat.st_mtime if log_stat.st_size else None
        except OSError:
            last_output = None
        snap = None
        with contextlib.suppress(Exception):
            snap = read_snapshot(directory)[0]
        if entry.running and snap is not None:
            clients = sum(c.get("mode") == "attach" for c in snap.clients)
        fields = lc.to_fields(entry.life)
        return {
            "name": entry.name,
            "state": fields["state"],
            "exit_code": fields["exit_code"],
            "exit_signal": fields["exit_signal"],
            "agent_pid": entry.agent_pid if entry.running else None,
            "worker_pid": entry.worker_pid if entry.running else None,
            "created": created,
            "started_at": fields["started_at"],
            "ended_at": fields["ended_at"],
            "last_output": last_output,
            "clients": clients,
            "restarts": fields["restarts"],
            "command": spec_argv,
            "problem": problem,
            "held_since": held.get("since") if held is not None else None,
            **activity_fields(kind, snap, entry.running, fields["ended_at"], live),  # activity
        }


def _resume_settled(life: lc.State) -> bool:
    """A resume's outcome is known: the new run started, or failed to."""
    if isinstance(life, lc.Ended):
        return life.resume_note is None
    return not isinstance(life, lc.Starting)


def _marker(what: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return f"\r\n\x1b[0m[superv: {what} at {stamp}]\r\n"


def remove_tree(directory: Path) -> None:
    """A session's directory, gone; a symlink put in its place goes, not what it names."""
    if directory.is_symlink():
        directory.unlink()
    else:
        shutil.rmtree(directory, ignore_errors=True)


def failure_of_files(op: str, exc: OSError) -> str:
    """One line for a request that failed on our own files, with what to do."""
    text = f"{op} failed: {exc.strerror or exc}"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return f"{text}: free some space on the disk that holds {paths.state_home()} and try again"
    return text + (f" ({exc.filename})" if exc.filename else "")


def _log_size(name: str) -> int:
    try:
        return (paths.session_dir(name) / session_files.LOG).stat().st_size
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
