"""The worker's side of activity: hook socket, terminal signals, screen rules, quiet time.

Everything here runs off the hot path.  The PTY reader only wakes us (the parking lot it
already wakes for the terminal model); we then read the new bytes back from the log,
coalesced, scan them for terminal signals (a bounded tail of a flood, never all of it),
and check the screen rules once the output has gone quiet (while it flows, only when the
screen model has little to catch up: it is the one costly part).  The hook socket
(``sessions/NAME.hook`` beside the session socket, 0600, peer uid checked) takes one
JSON object per connection (ended by the client closing its side) from
:mod:`agent_worker.activity.hook_client`.

Each change is sent to watchers as an ``activity`` event: the supervisor relays it to
``superv events`` and keeps the latest one in memory, which is what ``ls`` shows at once.
The snapshot gets it too, coalesced (:meth:`Worker.persist_soon`: one write a second at
most, however fast the agent flips), so after a crash the recorded activity may be about a
second stale; the end of the agent and a new conversation are made durable at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog
import trio

from agent_worker import agent_kinds, paths, settings
from agent_worker.activity import approvals, hooks, rules
from agent_worker.activity.hooks import hook_socket
from agent_worker.activity.terminal import Signal, TerminalScanner
from agent_worker.activity.tracker import Change, Tracker
from agent_worker.peer import listen_private, refusal
from agent_worker.snapshot import read_snapshot
from agent_worker.spec import SessionSpec

if TYPE_CHECKING:
    from agent_worker.worker import Worker

log = structlog.get_logger("agent_worker.activity")

COALESCE = 0.02  # seconds to let output gather before it is scanned
SCAN_TAIL = 64 * 1024  # of a backlog bigger than this, only the newest bytes are scanned
SCREEN_QUIET = 0.1  # seconds of quiet before the screen rules are checked
SCREEN_BUSY_EVERY = 0.5  # ...and at least this often while the output keeps flowing,
# if the screen model is at most this far behind: it parses ~40x slower than a PTY
# delivers, so under a flood catching it up would take the worker from the reader (a
# prompt waiting for an answer is quiet, and checked then).
SCREEN_BUSY_BUDGET = 8 * 1024
HOOK_READ_TIMEOUT = 2.0
HOOK_KINDS = ("claude", "codex")  # kinds whose launches get our hooks (Codex: its notify)
EXACT_HOOK_KINDS = ("claude",)  # hooks for every state: a bell or notification adds nothing
# Hook events after which no earlier approval request can still be waiting for an answer.
MOVES_ON = ("UserPromptSubmit", "Stop", "StopFailure", "SessionStart", "SessionEnd")


def prepare_launch(spec: SessionSpec, directory: Path) -> tuple[list[str], socket.socket | None]:
    """The command line to start (with our hooks where the agent takes them) and the hook
    socket, bound before the agent starts so that its first hook (SessionStart) finds us."""
    if spec.agent not in HOOK_KINDS and spec.agent not in approvals.KEYSTROKES:
        return list(spec.command), None
    try:
        path = hook_socket(spec.name)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by a dead worker of this session: the name is ours now
        sock = listen_private(path, 16)
    except (OSError, paths.PathError) as exc:
        # Without the hook socket the agent still runs: its title and screen still tell.
        log.warning("hook_socket_failed", error=str(exc))
        return list(spec.command), None
    if spec.agent not in HOOK_KINDS:
        return list(spec.command), sock  # the socket only takes approve / deny (keystrokes)
    at = agent_kinds.program_index(spec.command)
    if spec.agent == "codex":
        argv = hooks.with_codex_notify(spec.command, at, path, spec.name, spec.env)
    else:
        argv = hooks.with_claude_hooks(spec.command, at, spec.cwd, directory, path, spec.name)
    return argv, sock


def previous_conversation(directory: Path) -> dict[str, Any]:
    """The conversation the session's last snapshot recorded (a resume continues it)."""
    try:
        snap, _ = read_snapshot(directory)
    except Exception:
        return {}
    return {"conversation_id": snap.conversation_id, "transcript": snap.transcript}


class ActivityMonitor:
    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.kind = worker.spec.agent
        self.tracker = Tracker()
        self.tracker.start(time.time())
        self.scanner = TerminalScanner()
        self.rules, warning = rules.load(self.kind)
        if warning:
            log.warning("activity_rules_ignored", detail=warning)
        self.offset = worker.output.end  # the log before our start is an earlier run's
        previous = previous_conversation(worker.directory)
        # The conversation outlives a run: kept from the last snapshot until the agent
        # names a new one (SessionStart).
        self.conversation_id: str | None = previous.get("conversation_id")
        self.transcript: str | None = previous.get("transcript")
        self._agent_output_seen: float | None = None  # the PtyReader's agent_output_at
        self._screen_checked = 0.0
        self._screen_due: float | None = None
        self.hook_sock: socket.socket | None = None  # from prepare_launch
        self.approvals = approvals.Approvals()

    # ---- what the snapshot carries ---------------------------------------------------

    def snapshot_fields(self) -> dict[str, Any]:
        return {**self.tracker.current.to_fields(), "agent": self.kind,
                "last_line": self.worker.screen.last_line(),  # the overview's row (issue 11)
                "conversation_id": self.conversation_id, "transcript": self.transcript}

    def _changed(self, change: Change | None, durable: bool = False) -> None:
        """Tell the watchers of ``change`` now; put it in the snapshot within a second, or
        at once if ``durable``."""
        if change is None:
            return
        log.info("activity", activity=change.activity.state, previous=change.previous,
                 source=change.activity.source)
        if change.previous == "needs_approval" and change.activity.state != "needs_approval":
            # The prompt is gone (answered on the screen: Claude Code then leaves our hook
            # running, its answer unread).  Refusing a late approve is the safe mistake.
            self.approvals.moved_on()
        # With the screen's last line, for the overview's row when no attention says more.
        self.worker.broadcast({**change.event(), "last_line": self.worker.screen.last_line()})
        if durable:
            self.worker._nursery.start_soon(self.worker.persist, "activity")
        else:
            self.worker.persist_soon("activity")

    def agent_ended(self) -> None:
        # Not durable here: the worker persists the exit right after (one write for both).
        self._changed(self.tracker.ended(time.time(), "process"))

    # ---- tasks -----------------------------------------------------------------------

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._serve_hooks)
            await self._watch_output()

    def close(self) -> None:
        if self.hook_sock is not None:
            self.hook_sock.close()
            with contextlib.suppress(OSError, paths.PathError):
                hook_socket(self.worker.spec.name).unlink()

    async def _serve_hooks(self) -> None:
        if self.hook_sock is None:
            return
        listener = trio.SocketListener(trio.socket.from_stdlib_socket(self.hook_sock))
        await trio.serve_listeners(self._serve_hook, [listener])

    async def _serve_hook(self, stream: trio.SocketStream) -> None:
        async with stream:
            refused = refusal(stream.socket)  # type: ignore[arg-type]
            reply: dict[str, Any]
            report = None
            if refused:
                reply = {"ok": False, "error": refused}
            else:
                try:
                    raw = await self._read_call(stream)
                except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                if approvals.is_answer(raw):
                    reply = self.apply_answer(raw)
                else:
                    reply, report = self.take_hook(raw)
            if report is not None and report.event == "PermissionRequest" \
                    and report.state == "needs_approval":
                await self._hold(stream, report.attention or "a tool")
                return
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError), \
                    trio.move_on_after(1):
                await stream.send_all(json.dumps(reply).encode() + b"\n")

    async def _hold(self, stream: trio.SocketStream, tool: str) -> None:
        """Keep a PermissionRequest hook's call open for an answer from outside, at most
        SUPERV_APPROVAL_WAIT seconds; closing it without a decision leaves the prompt on screen."""
        sock = stream.socket
        answered = trio.Event()

        def deliver(decision: bytes) -> bool:
            answered.set()
            return write_line(decision)

        def write_line(line: bytes) -> bool:
            try:  # a few hundred bytes into an almost empty socket buffer: never blocks
                return os.write(sock.fileno(), line + b"\n") == len(line) + 1
            except OSError:
                return False

        def gone() -> bool:
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLHUP | select.POLLERR)
            return bool(poller.poll(0))

        request = approvals.Pending(tool, deliver, gone, answered.set)
        # No checkpoint from the hook call's apply to here: no answer can come in between,
        # and HELD is the first line the client reads, the decision the second.
        if not write_line(approvals.HELD):
            return
        self.approvals.hold(request)
        try:
            with trio.move_on_after(settings.current().approval_wait):
                await answered.wait()
        finally:
            self.approvals.release(request)

    def apply_answer(self, raw: bytes) -> dict[str, Any]:
        """``superv approve`` / ``deny``: answer the pending request; the reply for it."""
        name = self.worker.spec.name
        try:
            behavior, expect, seen = approvals.parse_answer(raw, name)
            if self.kind in approvals.KEYSTROKES:
                tool = self.press_answer(behavior, expect, seen)
            else:
                asking = self.tracker.current.state == "needs_approval"
                tool = self.approvals.answer(name, behavior, expect, asking)
        except approvals.AnswerError as exc:
            return {"ok": False, "error": str(exc)}
        log.info("approval_answered", answer=behavior, tool=tool)
        return {"ok": True, "tool": tool}

    def press_answer(self, behavior: str, expect: str | None, seen: dict[str, Any] | None) -> str:
        """Answer by keystrokes, checked against the screen as it is now (no checkpoint
        between the check and the press); the prompt's attention, or AnswerError."""
        name = self.worker.spec.name
        model = self.worker.screen.screen(self.worker.output.end)  # caught up to the log's end
        screen = model.text() if model is not None else ""
        found = self.rules.for_screen(screen) if model is not None else None
        current = self.tracker.current
        keys = self.approvals.press(name, self.kind, behavior, expect, seen,
                                    (current.state, current.since, current.attention), found,
                                    screen)
        try:
            written = os.write(self.worker.agent.master_fd, keys)
        except OSError as exc:  # BlockingIOError: the agent reads no input
            raise approvals.AnswerError(f"cannot press keys in {name}: {exc}") from None
        if written != len(keys):
            raise approvals.AnswerError(f"{name} took only part of the answer's keys")
        return (found[1] if found else None) or "the prompt on screen"

    async def _read_call(self, stream: trio.SocketStream) -> bytes:
        limit = hooks.MAX_PAYLOAD + 4096
        data = b""
        with trio.fail_after(HOOK_READ_TIMEOUT):
            while len(data) <= limit:  # the client closes its side when it has sent all
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
            if len(data) > limit:
                # Refused for its size; read the rest away so the caller gets our reply
                # (closing on unread data would reset the connection instead).
                while await stream.receive_some(65536):
                    pass
        return data

    def apply_hook(self, raw: bytes) -> dict[str, Any]:
        """Take one hook call; the reply for the client.  A refused call changes nothing."""
        return self.take_hook(raw)[0]

    def take_hook(self, raw: bytes) -> tuple[dict[str, Any], hooks.HookReport | None]:
        """Take one hook call: the reply for the client, and what it said (None: refused)."""
        try:
            report = hooks.parse(raw, self.worker.spec.name, self.conversation_id)
        except hooks.HookError as exc:
            log.warning("hook_refused", error=str(exc))
            return {"ok": False, "error": str(exc)}, None
        if report.event in MOVES_ON:
            self.approvals.moved_on()
        now = time.time()
        conversation_changed = False
        if report.conversation_id and report.conversation_id != self.conversation_id:
            self.conversation_id, conversation_changed = report.conversation_id, True
        if report.transcript and report.transcript != self.transcript:
            self.transcript, conversation_changed = report.transcript, True
        if report.ended:
            change = self.tracker.ended(now, "hook", report.attention)
        elif report.state is not None:
            change = self.tracker.report("hook", report.state, now, report.attention)
        else:
            change = None
        # A new conversation is what a resume continues: on disk at once, with its change.
        self._changed(change, durable=report.ended or conversation_changed)
        if conversation_changed and change is None:
            self.worker._nursery.start_soon(self.worker.persist, "conversation")
        return {"ok": True}, report

    async def _watch_output(self) -> None:
        worker = self.worker
        while True:
            tick_at = self._tick_at()
            wake_at = min((t for t in (tick_at, self._screen_due) if t is not None), default=None)
            if worker.fanout.told <= self.offset:  # (not output.end: see Fanout.told)
                with trio.move_on_at(trio.current_time() + max(0.0, wake_at - time.time())
                                     if wake_at is not None else float("inf")):
                    await worker.screen_lot.park()
            if worker.pty.hot.news_delay() < COALESCE:
                await trio.sleep(COALESCE)  # told at once: let the output gather first
            now = time.time()
            if worker.output.end > self.offset:
                self._scan(now)
            if self._tick_at() is not None:
                self._changed(self.tracker.tick(now))
            if self._screen_due is not None and (now >= self._screen_due or (
                    now - self._screen_checked >= SCREEN_BUSY_EVERY and
                    worker.output.end - worker.screen.offset <= SCREEN_BUSY_BUDGET)):
                self._check_screen(now)

    def _tick_at(self) -> float | None:
        """When the quiet-time rule may next find the agent idle (None: not until more is
        told).  Not while a full disk holds the agent back (its writes block: that quiet is
        not a turn finished), nor once the quiet is over but trio has not heard of the
        agent's output that ended it yet (the hot path tells it soon)."""
        if self.worker.pty.unlogged:
            return None
        at = self.tracker.next_tick()
        if at is not None and at <= time.time() and self.worker.pty.hot.agent_output_untold():
            return None
        return at

    def _scan(self, now: float) -> None:
        end = self.worker.output.end
        start = self.offset
        if end - start > SCAN_TAIL:
            start = end - SCAN_TAIL
            self.scanner = TerminalScanner()  # what it held belongs to the skipped bytes
        data = self.worker.output.reader.read(start, end - start)
        self.offset = start + len(data)
        # The quiet-time rule hears of the agent's own output, at the time it came (what
        # it signals too); a keystroke's echo is the user typing, not the agent at work
        # (hot_path.ECHO_WINDOW).
        agent_at = self.worker.pty.agent_output_at
        if agent_at is not None and agent_at != self._agent_output_seen:
            self._agent_output_seen = agent_at
            at = min(agent_at, now)
            self._changed(self.tracker.output(at))
        else:
            at = now
            self._changed(self.tracker.echoed(now))
        for signal in self.scanner.feed(data):
            self._changed(self._terminal(signal, at))
        if self.rules.screen:
            self._screen_due = now + SCREEN_QUIET

    def _terminal(self, signal: Signal, now: float) -> Change | None:
        if signal.kind == "title":
            found = self.rules.for_title(signal.text)
            if found is not None:
                return self.tracker.report("terminal", found[0], now, found[1])
            return None
        if self.kind in EXACT_HOOK_KINDS:
            return None  # its hooks say exactly what a bell or a notification would hint at
        if signal.kind in ("notify", "bell"):
            return self.tracker.report("terminal", "needs_input", now,
                                       signal.text[:200] or None)
        if signal.kind == "progress":
            state, _, _ = signal.text.partition(";")
            return self.tracker.report("terminal", None if state in ("", "0") else "working", now)
        return None

    def _check_screen(self, now: float) -> None:
        self._screen_checked = now
        if now >= (self._screen_due or 0):
            self._screen_due = None
        model = self.worker.screen.screen(self.worker.output.end)  # caught up now
        if model is None:
            return
        try:
            text = model.text()
        except Exception:
            log.exception("screen_model_failed")
            return
        found = self.rules.for_screen(text)
        self.approvals.screen_seen(found, text, time.time())  # what keystroke answers check
        state, attention = found if found is not None else (None, None)
        self._changed(self.tracker.report("screen", state, now, attention))
