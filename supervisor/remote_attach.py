"""``superv attach [-r] [USER@]HOST:NAME``: attach over SSH, survive the network, lose nothing.

The laptop side of remote attach.  It opens an SSH connection with asyncssh, runs
``superv attach --stdio NAME`` on the box (:mod:`supervisor.stdio_bridge`, which splices the
channel to the session's socket without parsing), and speaks the wire protocol of
:mod:`agent_worker.protocol` end to end through it.

Position in the stream is an offset in the session's durable log (every ``Output`` frame
carries its offset), so surviving a dropped link is simple: remember ``next_offset``, the
first byte not yet shown, and reconnect with ``Hello(Start.OFFSET, next_offset)``.  The
worker replays from its log; bytes below ``next_offset`` that arrive anyway are dropped.
No byte is lost, none is shown twice.

Down links are noticed by SSH keepalives (one a second, three unanswered = down: a frozen
peer is noticed in about 4 s), not by TCP, which can take minutes.  Then a status line
says so and the client reconnects, quickly (the timing is :mod:`supervisor.reconnect_policy`:
tries at most 0.5 s apart, a fresh TCP connection every 0.25 s while the box is silent)
and at once when the laptop's network changes or it resumed from suspend
(:mod:`supervisor.network_watch`), forever, until the user detaches with the detach key
(which works while disconnected) or presses Ctrl-C while disconnected.

The old connection is *held* meanwhile, not closed: its TCP often survives the outage, and
resuming on it costs no new SSH handshake (most of a reconnect's time on a slow link).  The
held :class:`Attempt` and the fresh ones race in the connect loop: the held one delivering
again (data, or a keepalive answered) before a fresh one's Welcome makes it current again
(it is at the right offset; clearing the status line asks for the screen), and the fresh
try is abandoned; a fresh Welcome first closes the held one.  It is given up on a network
change (a new address kills its TCP), when it is reset, or when asyncssh gives up on its
keepalives (:data:`supervisor.ssh_link.HOLD_KEEPALIVES`, about 3 minutes).

Every task (the connect loop, the keyboard, the network watch, the status line's expiry
(:mod:`supervisor.status_line`), a detach's flush) belongs to one ``asyncio.TaskGroup``, and
no loop timer (``call_later``) runs outside it; each connection is an :class:`Attempt` that owns everything
of that connection.  An error nobody expected ends the client with one line and status 1
rather than leaving it hanging.

**Keystrokes typed while disconnected are discarded**, not queued: an agent acts on its
input, and replaying keys typed blind, seconds or minutes late, into whatever the agent
shows by then is unsafe (a stale "y" may approve the wrong action).  The status line says
so while it happens.

asyncio and asyncssh stay in this module, in their own event loop (``asyncio.run``): the
rest of superv is trio and never shares a loop with it.

SSH is configured the OpenSSH way: ``~/.ssh/config`` (Host aliases, HostName, Port, User,
IdentityFile, ProxyJump, ...), the ssh-agent (``SSH_AUTH_SOCK``) and ``~/.ssh/known_hosts``
(or the config's ``UserKnownHostsFile``).  Host keys are always verified: an unknown or
changed key is refused, and ``UserKnownHostsFile none`` does not turn checking off.

Environment:

``SUPERV_SSH_CONFIG``
    an ssh client config file to read instead of ``~/.ssh/config``.
``SUPERV_KNOWN_HOSTS``
    a known_hosts file to trust instead of the configured ones.
``SUPERV_REMOTE_COMMAND``
    the remote superv to run (same as ``--remote-command``), for boxes where it is not on
    the PATH of a non-interactive shell nor in ``~/.local/bin``.  It is a shell fragment,
    like an ssh remote command; `` attach --stdio NAME`` is appended.

When stdout is not a terminal (a pipe, a file), the client writes exactly the session's
bytes to stdout and its notices to stderr, so ``superv attach -r box:NAME > file`` records
the stream.  Without a terminal on stdin only ``-r`` attaches, as for a local attach.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat
import sys
import termios
import traceback
import tty
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import attrs

from agent_worker import conversation, protocol, settings
from agent_worker.paths import PathError, validate_name
from agent_worker.protocol import Detach, Input, Repaint, Resize, Start
from supervisor import status_line, terminal
from supervisor.host_names import split_host
from supervisor.network_watch import NetworkChange, NetworkWatch
from supervisor.notify import attach_notices, message
from supervisor.present import skip_words
from supervisor.reconnect_policy import ReconnectPolicy
from supervisor.remote_attempt import (
    LINK_ERRORS,
    READ_SIZE,
    AttachError,
    Attempt,
    Ended,
    Ending,
    Outcome,
    StreamPosition,
    leaves_of,
)
from supervisor.remote_hints import from_here
from supervisor.ssh_link import (
    REMOTE_MISSING_STATUS,
    SshConfigError,
    SshLink,
    describe,
    superv_missing,
)
from supervisor.status_line import Kind, StatusLine

DETACH_FLUSH_TIMEOUT = 2.0  # how long a Detach may take to reach the worker
CTRL_C = b"\x03"

log = logging.getLogger(__name__)


@attrs.frozen
class Target:
    """``[USER@]HOST:NAME`` taken apart; ``host`` may be an ssh config alias."""

    user: str | None
    host: str
    name: str

    @property
    def shown(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    @property
    def where(self) -> str:
        """``[USER@]HOST`` as a command takes it (an IPv6 address in brackets)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.user}@{host}" if self.user else host

    def from_here(self, text: str) -> str:
        """The box's words, naming the commands as run from here (``superv ls box:``)."""
        return from_here(text, self.where, self.name)


def parse_target(text: str) -> Target:
    """Split ``[USER@]HOST:NAME`` (HOST may be ``[v6addr]``); ValueError says what is wrong."""
    where, sep, name = text.rpartition(":")
    if not sep or not where or not name:
        raise ValueError(f"cannot read {text!r}: write [USER@]HOST:NAME, for example box:fix-tests")
    user, host = split_host(where)
    try:
        validate_name(name)
    except PathError as exc:
        raise ValueError(str(exc)) from None
    return Target(user or None, host, name)


def run_remote_attach(
    target: str,
    *,
    read_only: bool,
    start: Start,
    value: int,
    detach_key: bytes,
    remote_command: str | None,
    flags: int = protocol.FEED_ACKS | protocol.FEED_SKIP,
    exact: bool = False,
) -> int:
    """Attach this terminal to ``[USER@]HOST:NAME`` over SSH; the exit status.

    0 after a detach or when the session ends, 1 on an error (one line on stderr), 2 if
    ``target`` cannot be read or there is no terminal to type on (and not ``read_only``),
    128+N when interrupted by signal N.
    """
    try:
        parsed = parse_target(target)
    except (ValueError, PathError) as exc:
        sys.stderr.write(f"superv: {exc}\n")
        return 2
    if (refused := terminal.typing_refused(target, read_only)) is not None:
        sys.stderr.write(f"superv: {refused}\n")
        return 2
    if remote_command is None:
        remote_command = settings.current().remote_command
    # asyncssh logs failures we already report in one line; keep its records out of the
    # user's terminal.  Done here, at the edge, never on import.
    logging.getLogger("asyncssh").setLevel(logging.CRITICAL)
    client = RemoteAttach(
        parsed,
        read_only=read_only,
        start=start,
        value=value,
        detach_key=detach_key,
        remote_command=remote_command,
        flags=flags,
        exact=exact,
    )
    ending = client.run()
    if ending.message:
        sys.stderr.write(ending.message + "\n")
        sys.stderr.flush()
    return ending.code


def _is_tty(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


def internal_error(exc: BaseException) -> str:
    """One line for a bug: what was raised and where, so a report can find it."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {Path(frames[-1].filename).name}:{frames[-1].lineno}" if frames else ""
    text = " ".join(str(exc).split()) or "(no message)"
    return f"superv: internal error in remote attach: {type(exc).__name__}: {text}{where}; please report it"


class RemoteAttach:
    """One remote attach: the user's terminal, the reconnect loop, the stream position.

    Every task has one owner, the task group of :meth:`_main`: the connect loop, the
    keyboard, the network watch, the status line's expiry and a detach's flush.  Whichever
    ends the client raises :class:`Ended` (or :class:`AttachError`); anything else raised is
    a bug, and ends the client too, with one line and status 1, instead of leaving it
    hanging.
    """

    def __init__(
        self,
        target: Target,
        *,
        read_only: bool,
        start: Start,
        value: int,
        detach_key: bytes,
        remote_command: str | None,
        flags: int = 0,
        exact: bool = False,
        stdin_fd: int = 0,
        stdout_fd: int = 1,
    ) -> None:
        self.target = target
        self.read_only = read_only
        self.detach_key = detach_key
        self.remote_command = remote_command
        self.stdin_fd = stdin_fd
        self.stdout_fd = stdout_fd
        self.tty_in = _is_tty(stdin_fd)
        self.tty_out = _is_tty(stdout_fd)
        self.position = StreamPosition(start, value, read_only, flags)
        self.policy = ReconnectPolicy()
        self.link = SshLink(target.host, target.user)
        self.attempt: Attempt | None = None  # the current connection, if any
        # The connection whose link went down, held while fresh tries race it.
        self.held: Attempt | None = None
        self._wake = asyncio.Event()  # an attempt changed state (see wake)
        self.discarded = 0  # keystrokes dropped during the current outage
        # Set when the user detached: the link closing now is the end, not a drop.
        self.stopping = False
        # The bottom row: reconnect state, notices, skips (one message at a time); its
        # expiry runs in the task group (_expire_status), woken by status_changed.
        self.status = StatusLine(self._write_status, self.size, self._repaint, exact=exact)
        self._cooked: list[Any] | None = None  # the terminal's modes before ours (job control)
        self._status_changed = asyncio.Event()
        self.shown_anything = False
        self.alt_screen = terminal.ShownModes()  # what to put back on exit
        self._last_status: tuple[int, float | None] | None = None
        self._ending: asyncio.Future[Ending] | None = None
        self._tasks: asyncio.TaskGroup | None = None
        self._network_changed: asyncio.Event | None = None

    # ----------------------------------------------------------------- the whole run

    def run(self) -> Ending:
        """Run the attach in its own asyncio loop; restore the terminal however it ends."""
        with self._terminal():
            try:
                return asyncio.run(self._main())
            except KeyboardInterrupt:
                return Ending(Outcome.INTERRUPTED, "", 130)

    @contextlib.contextmanager
    def _terminal(self) -> Iterator[None]:
        self._cooked = termios.tcgetattr(self.stdin_fd) if self.tty_in else None
        with terminal.raw_mode(self.stdin_fd) if self.tty_in else contextlib.nullcontext():
            try:
                yield
            finally:
                if self.tty_out:
                    tail = self.status.leaving()
                    if self.shown_anything:
                        # The session may have left the alternate screen, mouse reporting
                        # or a hidden cursor on; put the user's terminal back.
                        tail += self.alt_screen.leaving_bytes()
                    with contextlib.suppress(OSError):
                        terminal.write_all(self.stdout_fd, tail)

    async def _main(self) -> Ending:
        loop = asyncio.get_running_loop()
        self._ending = loop.create_future()
        self._network_changed = asyncio.Event()
        handled = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
        for signum, code in zip(handled, (130, 143, 129), strict=True):
            loop.add_signal_handler(signum, self._finish, Ending(Outcome.INTERRUPTED, "", code))
        if self.tty_in or self.tty_out:
            handled += [signal.SIGWINCH, signal.SIGTSTP, signal.SIGCONT]
            loop.add_signal_handler(signal.SIGWINCH, self._guarded(self._on_winch))
            loop.add_signal_handler(signal.SIGTSTP, self._guarded(self._suspend))
            loop.add_signal_handler(signal.SIGCONT, self._guarded(self._continued))
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                tasks.create_task(self._connect_loop())
                tasks.create_task(self._read_keys())
                tasks.create_task(NetworkWatch(self._on_network_change).run())
                tasks.create_task(self._expire_status())
                raise Ended(await self._ending)
        except BaseExceptionGroup as group:
            return self._ending_of(group)
        finally:
            for signum in handled:
                loop.remove_signal_handler(signum)
        raise AssertionError("the task group ended without an ending")  # pragma: no cover

    @staticmethod
    def _ending_of(group: BaseExceptionGroup[BaseException]) -> Ending:
        leaves = list(leaves_of(group))
        expected = (Ended, AttachError, SshConfigError)
        for error in leaves:
            if not isinstance(error, Exception):
                raise error  # KeyboardInterrupt, SystemExit: not ours to turn into a line
        bugs = [error for error in leaves if not isinstance(error, expected)]
        if bugs:
            return Ending(Outcome.ERROR, internal_error(bugs[0]), 1)
        first = leaves[0]
        if isinstance(first, Ended):
            return first.ending
        return Ending(Outcome.ERROR, f"superv: {first}", 1)

    def _finish(self, ending: Ending) -> None:
        """End the client from a loop callback (a signal); tasks raise Ended instead."""
        if self._ending is not None and not self._ending.done():
            self._ending.set_result(ending)

    def _guarded(self, callback: Callable[[], None]) -> Callable[[], None]:
        """A loop callback whose errors end the client, as a task's would."""

        def call() -> None:
            try:
                callback()
            except Exception as exc:  # a bug: end the client with its one line
                if self._ending is not None and not self._ending.done():
                    self._ending.set_exception(exc)

        return call

    # ---------------------------------------------------------------- connections

    async def _connect_loop(self) -> None:
        """Keep one connection streaming: when its link goes down, hold it and race fresh
        tries against it; whichever delivers first (the held one's data or keepalive
        answer, a fresh one's Welcome) wins and the other is abandoned."""
        loop = asyncio.get_running_loop()
        assert self._tasks is not None and self._network_changed is not None
        changed = self._network_changed
        tries = 0
        while True:
            attempt = self._take_back_held()
            if attempt is None:
                attempt = Attempt(self, self.policy.patience(), self.policy.budget())
                self._tasks.create_task(attempt.run_in_group())
            self.attempt = attempt
            changed.clear()
            began = loop.time()
            await self._until(lambda: attempt.settled or self._held_is_back())  # noqa: B023
            if self._held_is_back() and attempt is not self.held:
                attempt.abandon()  # the old connection came back before this one's Welcome
                continue
            self.attempt = None
            if self.stopping:
                return
            if attempt.down:
                # Keepalives unanswered: hold the connection (its TCP may well survive the
                # outage) and start fresh tries beside it, as after a drop.
                self.held = attempt
                lived: float | None = loop.time() - attempt.welcomed_at
            elif attempt.error is not None:
                if not self.position.established:
                    raise AttachError(self.link.unreachable(attempt.error)) from None
                lived = None
                log.debug("try failed after %.2fs: %r", loop.time() - began, attempt.error)
            else:
                lived = attempt.lived
            if lived is not None:
                # The link had been streaming: a new outage starts, and the count with it.
                tries = 0
                wait = self.policy.dropped(lived)
            else:
                wait = self.policy.failed(loop.time() - began, timed_out=attempt.timed_out)
            if changed.is_set() or self._held_is_back():
                wait = 0.0
            tries += 1
            self._show_status(tries, wait)
            if wait:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._until(lambda: changed.is_set() or self._held_is_back())
            self._show_status(tries, None)

    def wake(self) -> None:
        """An attempt changed state (ended, down, back): the connect loop looks again."""
        self._wake.set()

    async def _until(self, settled: Callable[[], bool]) -> None:
        while True:
            self._wake.clear()
            if settled():
                return
            await self._wake.wait()

    def _held_is_back(self) -> bool:
        held = self.held
        return held is not None and not held.down and not held.finished

    def _take_back_held(self) -> Attempt | None:
        """The held connection, if it delivered again: resume on it (it is at the right
        offset of the stream) and ask for the present screen."""
        held = self.held
        if held is not None and held.finished:
            self.held = held = None  # it ended meanwhile (reset, or held too long)
        if held is None or held.down:
            return None
        self.held = None
        self.attempt = held
        log.debug("the held connection is back")
        self._online()
        return held

    def _on_network_change(self, change: NetworkChange) -> None:
        """Retry at once: wake a waiting reconnect, restart a try stuck on the old network."""
        log.debug("network: %s", change.reason)
        assert self._network_changed is not None
        self._network_changed.set()
        self.wake()
        held = self.held
        if held is not None:
            # Its TCP cannot survive the laptop's address changing: stop waiting for it.
            held.abandon()
            self.held = None
        attempt = self.attempt
        if attempt is None or not self.position.established:
            return
        if not attempt.welcomed:
            attempt.give_up(change.reason)
        elif change.resumed:
            # After a suspend the connection is most likely dead (NAT and leases expired)
            # but keepalives would take seconds to say so; a reconnect loses nothing.
            attempt.drop()

    def welcomed(self, attempt: Attempt, info: conversation.SessionInfo) -> None:
        assert attempt.setup_time is not None
        held = self.held
        if held is not None and held is not attempt:
            if not held.down:
                attempt.abandon()  # the held connection came back first: it stays
                return
            held.abandon()  # this fresh one won the race
            self.held = None
        self.policy.connected(attempt.setup_time, attempt.answered_after)
        self.position.established = True
        self._online()
        if info.held is not None and self.tty_out:  # told when it began, to those attached
            self._say(message.held(f"{self.target.shown}:{self.target.name}", info.held),
                      Kind.NOTICE)

    def _online(self) -> None:
        """A connection streams again: the status line goes (asking for the screen it
        covered) and the keys discarded meanwhile are counted."""
        self._clear_status()
        if self.discarded:
            self._notice(f"{self.discarded} keystrokes typed while disconnected were discarded")
            self.discarded = 0

    def refused(self, status: int | None, stderr_tail: bytes) -> None:
        """The channel closed before a Welcome: say why, if retrying cannot help."""
        stderr = self.target.from_here(stderr_tail.decode("utf-8", "replace").strip())
        last = stderr.splitlines()[-1] if stderr else ""
        where = self.target.shown
        if status == REMOTE_MISSING_STATUS:
            raise AttachError(superv_missing(where, self.remote_command, option=True))
        if status is not None and status != 0 and not self.position.established:
            detail = f": {last}" if last else ""
            raise AttachError(
                f"the remote 'superv attach --stdio' on {where} failed (exit {status}){detail}"
            )
        if not self.position.established:
            detail = f": {last}" if last else ""
            raise AttachError(f"{where} closed the session before it started{detail}")

    # --------------------------------------------------------------------- stream

    def show(self, data: bytes) -> None:
        if not data:
            return
        self.shown_anything = True
        self.alt_screen.feed(data)
        try:
            terminal.write_all(self.stdout_fd, data)
        except BrokenPipeError:
            raise Ended(Ending(Outcome.INTERRUPTED, "", 0)) from None
        except OSError as exc:
            raise AttachError(f"cannot write to standard output: {describe(exc)}") from None

    def skipped(self, skipped: int) -> None:
        """The worker skipped us to the present: say so for a moment."""
        self._say(skip_words(self.target.name, skipped, self.target.host), Kind.SKIP)

    # -------------------------------------------------------------- the user's side

    async def _read_keys(self) -> None:
        try:
            mode = os.fstat(self.stdin_fd).st_mode
        except OSError:
            return
        if stat.S_ISREG(mode) or (stat.S_ISCHR(mode) and not self.tty_in):
            return  # a file or /dev/null: no keys will ever come (and epoll refuses them)
        loop = asyncio.get_running_loop()
        typed: asyncio.Queue[bytes] = asyncio.Queue()

        def readable() -> None:
            # Read here, while the fd is known to be readable: stdin stays blocking (it is
            # shared with the user's shell), so a read from the task could block the loop.
            try:
                data = os.read(self.stdin_fd, READ_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(self.stdin_fd)
            typed.put_nowait(data)

        try:
            loop.add_reader(self.stdin_fd, readable)
        except (OSError, ValueError):
            return
        try:
            while data := await typed.get():
                if self._on_keys(data):
                    return
            # Input closed (a pipe, /dev/null): keep showing output.
        finally:
            loop.remove_reader(self.stdin_fd)

    def _on_keys(self, data: bytes) -> bool:
        """Send or discard what was typed; True once the user detached."""
        key = data.find(self.detach_key) if self.detach_key else -1
        if key >= 0:
            self._send_input(data[:key])
            self._detach()
            return True
        attempt = self.attempt
        if attempt is None or not attempt.live:
            if CTRL_C in data and self.tty_in:
                gave_up = f"[gave up reconnecting to {self.target.shown}]"
                raise Ended(Ending(Outcome.INTERRUPTED, gave_up, 130))
            if not self.read_only:
                self.discarded += len(data)
                self._refresh_status()
            return False
        self._send_input(data)
        return False

    def _send_input(self, data: bytes) -> None:
        if not data or self.read_only:
            return
        attempt = self.attempt
        if attempt is None or not attempt.live:
            self.discarded += len(data)
            return
        attempt.send(Input(data))

    def _detach(self) -> None:
        ending = Ending(Outcome.DETACHED, f"[detached from {self.target.name}]", 0)
        attempt = self.attempt
        if attempt is None or not attempt.live:
            raise Ended(ending)
        # Tell the worker this was a deliberate detach, and give the frame a moment to
        # get there before the connection is closed.
        attempt.send(Detach())
        assert attempt.writer is not None
        with contextlib.suppress(*LINK_ERRORS):
            attempt.writer.write_eof()
        self.stopping = True
        attempt.stopped = True  # nothing more is shown or sent
        assert self._tasks is not None
        self._tasks.create_task(self._flush_detach(attempt.writer.channel, ending))

    @staticmethod
    async def _flush_detach(channel: asyncssh.SSHClientChannel[bytes], ending: Ending) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DETACH_FLUSH_TIMEOUT):
                await channel.wait_closed()
        raise Ended(ending)

    def _suspend(self) -> None:
        """SIGTSTP (``kill -TSTP``, a shell's job control): give the terminal back as we
        found it, and stop.  Without this, ``fg`` left it in the shell's line mode: keys
        waited for Enter and the detach key killed the client (SIGQUIT)."""
        if self.tty_out and self.shown_anything:
            with contextlib.suppress(OSError):
                terminal.write_all(self.stdout_fd, self.alt_screen.reset_bytes())
        if self._cooked is not None:
            with contextlib.suppress(termios.error):
                termios.tcsetattr(self.stdin_fd, termios.TCSADRAIN, self._cooked)
        os.kill(os.getpid(), signal.SIGSTOP)

    def _continued(self) -> None:
        """SIGCONT (``fg``, or after any stop): the terminal is ours again, in raw mode, at
        the size it has now, repainted (the shell wrote on it meanwhile)."""
        if self.tty_in:
            with contextlib.suppress(termios.error):
                tty.setraw(self.stdin_fd, termios.TCSANOW)
        self._on_winch()
        self._repaint()

    def _on_winch(self) -> None:
        rows, cols = self.size()
        attempt = self.attempt
        if attempt is not None and attempt.live and not self.read_only:
            attempt.send(Resize(rows, cols))
        self.status.redraw()

    def _tty_fd(self) -> int:
        return self.stdin_fd if self.tty_in else self.stdout_fd

    def size(self) -> tuple[int, int]:
        rows, cols = terminal.window_size(self._tty_fd())
        return (
            max(1, min(rows, conversation.MAX_ROWS)),
            max(1, min(cols, conversation.MAX_COLS)),
        )

    # ----------------------------------------------------------------- status line

    def _status_words(self, attempt: int, wait: float | None) -> str:
        key = _key_name(self.detach_key)
        when = "trying now" if wait is None or wait <= 0 else f"next try in {wait:.2g} s"
        typed = f"; {self.discarded} keys typed were discarded" if self.discarded else ""
        return (
            f"reconnecting to {self.target.shown}… (attempt {attempt}, {when}){typed}; "
            f"typing is discarded until then; {key} detaches"
        )

    def _show_status(self, attempt: int, wait: float | None) -> None:
        self._last_status = (attempt, wait)
        text = self._status_words(attempt, wait)
        if self.tty_out:
            self._say(text, Kind.LINK)
        elif wait is not None:
            # Not a terminal: one line per attempt on stderr keeps stdout byte-exact.
            sys.stderr.write(f"superv: {text}\n")
            sys.stderr.flush()

    def _refresh_status(self) -> None:
        last = self._last_status
        if last is not None and self.tty_out:
            self._say(self._status_words(*last), Kind.LINK)

    def _clear_status(self) -> None:
        self.status.clear(Kind.LINK)
        self._status_changed.set()

    def _say(self, text: str, kind: Kind, extra: bytes = b"") -> None:
        self.status.show(text, kind, asyncio.get_running_loop().time(), extra)
        self._status_changed.set()

    async def _expire_status(self) -> None:
        """Take each message off the status line when its time is up (in the task group,
        so that an error here ends the client like any task's)."""
        loop = asyncio.get_running_loop()
        while True:
            self._status_changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.status.due(loop.time())):
                    await self._status_changed.wait()
            self.status.tick(loop.time())

    def _write_status(self, data: bytes) -> None:
        if self.tty_out:
            with contextlib.suppress(OSError):
                terminal.write_all(self.stdout_fd, data)

    def _repaint(self) -> bool:
        """Ask the worker for the row the status line covered (the whole screen)."""
        attempt = self.attempt
        if attempt is None or not attempt.live or attempt.conversation is None:
            return False
        if not status_line.can_repaint(attempt.conversation):
            return False
        attempt.send(Repaint())
        return True

    def show_notice(self, body: dict[str, Any]) -> None:
        """A notification from the box, on the status line for a moment (notify)."""
        self._say(attach_notices.words(body), Kind.NOTICE, attach_notices.bell(body))

    def _notice(self, text: str) -> None:
        if not self.tty_out:
            sys.stderr.write(f"superv: {text}\n")
            sys.stderr.flush()


def _key_name(key: bytes) -> str:
    if len(key) == 1 and key[0] < 0x20:
        return "Ctrl-" + chr(key[0] ^ 0x40)
    if key == b"\x7f":
        return "Ctrl-?"
    return key.decode("utf-8", "replace")


__all__: list[str] = [
    "RemoteAttach",
    "Target",
    "parse_target",
    "run_remote_attach",
]
