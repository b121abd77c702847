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
the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import os
import signal
import stat
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncssh
import attrs

from agent_worker import conversation, protocol, settings
from agent_worker.paths import PathError, validate_name
from agent_worker.protocol import Detach, Hello, Input, Repaint, Resize, Start
from supervisor import status_line, terminal
from supervisor.network_watch import NetworkChange, NetworkWatch
from supervisor.notify import attach_notices
from supervisor.present import skip_words
from supervisor.reconnect_policy import ReconnectPolicy
from supervisor.ssh_link import (
    KEEPALIVE_COUNT_MAX,
    KEEPALIVE_INTERVAL,
    REMOTE_MISSING_STATUS,
    SshConfigError,
    SshLink,
    answering_socket,
    describe,
    remote_superv,
    unanswered_keepalives,
)
from supervisor.status_line import Kind, StatusLine

DETACH_FLUSH_TIMEOUT = 2.0  # how long a Detach may take to reach the worker
READ_SIZE = 256 * 1024
CTRL_C = b"\x03"
# How often a streaming connection's keepalive count is looked at: the link is said to be
# down (and back) within this of asyncssh counting it so.
WATCH_INTERVAL = KEEPALIVE_INTERVAL / 20
# What a dropped or unreachable link raises; anything else is a refusal or a bug.
LINK_ERRORS = (TimeoutError, OSError, asyncssh.Error)

log = logging.getLogger(__name__)


class AttachError(Exception):
    """A failure that ends the attach: one line for the user, exit status 1."""


@attrs.frozen
class Target:
    """``[USER@]HOST:NAME`` taken apart; ``host`` may be an ssh config alias."""

    user: str | None
    host: str
    name: str

    @property
    def shown(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


def parse_target(text: str) -> Target:
    """Split ``[USER@]HOST:NAME`` (HOST may be ``[v6addr]``); ValueError says what is wrong."""
    where, sep, name = text.rpartition(":")
    if not sep or not where or not name:
        raise ValueError(f"cannot read {text!r}: write [USER@]HOST:NAME, for example box:fix-tests")
    user, _, host = where.rpartition("@")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not host or (user == "" and "@" in where):
        raise ValueError(f"cannot read {text!r}: write [USER@]HOST:NAME, for example box:fix-tests")
    try:
        validate_name(name)
    except PathError as exc:
        raise ValueError(str(exc)) from None
    return Target(user or None, host, name)


def remote_command_line(name: str, remote_command: str | None) -> str:
    """The command sshd runs (through the user's login shell) to start the bridge."""
    return remote_superv(["attach", "--stdio", validate_name(name)], remote_command)


class Outcome(enum.Enum):
    DETACHED = "detached"
    EXITED = "exited"
    ERROR = "error"
    INTERRUPTED = "interrupted"


@attrs.frozen
class Ending:
    outcome: Outcome
    message: str
    code: int


class Ended(Exception):
    """Raised by any of the client's tasks to end it the way ``ending`` says."""

    def __init__(self, ending: Ending) -> None:
        super().__init__(ending.outcome.value)
        self.ending = ending


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
    ``target`` cannot be read, 128+N when interrupted by signal N.
    """
    try:
        parsed = parse_target(target)
    except (ValueError, PathError) as exc:
        sys.stderr.write(f"superv: {exc}\n")
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


@attrs.define
class StreamPosition:
    """What carries over from one connection to the next: where the user's screen is.

    Each connection is a fresh :class:`~agent_worker.conversation.ClientConversation`
    (the protocol's rules: duplicates dropped, a gap refused); this opens each one at the
    log offset the last one reached, so a reconnect shows every byte once.
    """

    start: Start
    value: int
    read_only: bool
    flags: int = 0  # the hello's feed flags (acks, may be skipped to the present)
    # The first byte of the log not yet shown; None until the worker told us where the
    # stream starts (a Screen, or the first Output of a tail).
    offset: int | None = None
    established: bool = False  # a Welcome was ever received

    def conversation(self, rows: int, cols: int) -> conversation.ClientConversation:
        if self.offset is not None:
            hello = Hello(Start.OFFSET, self.offset, rows, cols, self.read_only, flags=self.flags)
        else:
            hello = Hello(self.start, self.value, rows, cols, self.read_only, flags=self.flags)
        return conversation.ClientConversation(hello, self.offset)


def _exit_message(name: str, exited: conversation.Exited) -> str:
    if exited.exit_signal:
        try:
            shown = signal.Signals(exited.exit_signal).name
        except ValueError:
            shown = str(exited.exit_signal)
        return f"[{name} was killed by {shown}]"
    if exited.exit_code is not None:
        return f"[{name} exited with status {exited.exit_code}]"
    return f"[{name} ended: {exited.state}]" if exited.state else f"[{name} ended]"


class Attempt:
    """One connection to the box: connect, run the bridge, stream until the link ends.

    Everything that belongs to one connection (the SSH connection, the channel, the
    protocol conversation, whether the worker said Welcome, the remote's stderr) lives
    here and dies with it; only :class:`StreamPosition` carries over to the next one.
    """

    def __init__(self, client: RemoteAttach, patience: float, budget: float) -> None:
        self.client = client
        self.patience = patience  # seconds the box may take to answer at all
        self.budget = budget  # seconds from the box's answer to the worker's Welcome
        # Opened when the channel is: the hello carries the window size of that moment.
        self.conversation: conversation.ClientConversation | None = None
        self.conn: asyncssh.SSHClientConnection | None = None
        self.writer: asyncssh.SSHWriter[bytes] | None = None
        self.setup_time: float | None = None  # seconds to the Welcome, once it came
        # Seconds from the winning TCP connect to the box's first byte (not from the try's
        # start, which may include an outage).
        self.answered_after: float | None = None
        self.welcomed_at = 0.0
        self.stderr_tail = b""
        self.stopped = False  # the user detached: show nothing more
        self.given_up: str | None = None  # why the try was cut short (a network change)
        # Keepalives unanswered while streaming: the link is down, but the connection is
        # held (not closed) in case it comes back before a fresh one is welcomed.
        self.down = False
        self.finished = False  # run() returned or raised
        self.lived: float | None = None  # run()'s result, once finished
        self.error: BaseException | None = None  # the link error run() raised
        self.abandoned = False  # cancelled by the client: it lost the race
        self.task: asyncio.Task[None] | None = None
        self._setup: asyncio.Timeout | None = None
        self._began = 0.0

    @property
    def welcomed(self) -> bool:
        return self.setup_time is not None

    @property
    def timed_out(self) -> bool:
        """The try ran out of its budget after the box had answered: the link is slow.

        (Not cut short by a network change, and not a link that never answered: that one
        is dead, and a longer try would not help.)
        """
        return (
            self._setup is not None
            and self._setup.expired()
            and self.given_up is None
            and self.answered_after is not None
        )

    @property
    def settled(self) -> bool:
        """Ended, or its link went down: the connect loop's turn."""
        return self.finished or self.down

    @property
    def live(self) -> bool:
        """Welcomed and not detached: keys and resizes may be sent."""
        return self.welcomed and not self.stopped and not self.down and self.writer is not None

    def send(self, msg: Input | Resize | Detach | Repaint) -> None:
        if self.writer is not None and self.conversation is not None:
            self.writer.write(self.conversation.send(msg))

    def give_up(self, reason: str) -> None:
        """Cut a try that has not reached its Welcome short: the network changed under it."""
        if self._setup is not None and not self.welcomed:
            self.given_up = reason
            self._setup.reschedule(asyncio.get_running_loop().time())

    def drop(self) -> None:
        """Abandon the connection (it is probably dead): the stream ends as a drop."""
        if self.conn is not None:
            self.conn.abort()

    def abandon(self) -> None:
        """This connection lost the race (a held one came back, or a fresh one was
        welcomed): show nothing more from it and end its task."""
        self.abandoned = self.stopped = True
        self.drop()
        if self.task is not None:
            self.task.cancel()

    async def run_in_group(self) -> None:
        """:meth:`run` as a task of the client's group: a link error or being abandoned
        is kept for the connect loop; an ending (Ended, AttachError) ends the client."""
        self.task = asyncio.current_task()
        try:
            self.lived = await self.run()
        except LINK_ERRORS as exc:
            self.error = exc
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not (self.abandoned and task is not None and task.uncancel() == 0):
                raise
        except BaseException:
            self.finished = True  # an ending: the group cancels the connect loop, unwoken
            raise
        self.finished = True
        self.client.wake()

    async def _watch_keepalives(self) -> None:
        """Say when the link goes down (keepalives unanswered) and when it is back (one
        is answered); the connection is held meanwhile, not closed."""
        while True:
            await asyncio.sleep(WATCH_INTERVAL)
            if self.conn is None or not self.welcomed:
                continue
            missed = unanswered_keepalives(self.conn)
            if not self.down and missed > KEEPALIVE_COUNT_MAX:
                self.down = True
                self.client.wake()
            elif self.down and missed == 0:
                self._back()

    def _back(self) -> None:
        """The held connection delivers again: the connect loop resumes on it."""
        if self.down:
            self.down = False
            self.client.wake()

    async def run(self) -> float | None:
        """Returns how long the session streamed, None if the worker never said Welcome.

        Raises AttachError for what retrying cannot fix, Ended when the session ended,
        and one of LINK_ERRORS when the link failed before the Welcome.
        """
        loop = asyncio.get_running_loop()
        self._began = loop.time()
        client = self.client
        polite = False
        try:
            async with asyncio.timeout(self.patience) as self._setup:
                options = await client.link.options()
                answered = await answering_socket(options, stagger=client.policy.stagger())
                sock = None
                if answered is None:  # a ProxyJump or ProxyCommand: no answer to wait for
                    self._setup.reschedule(self._began + self.budget)
                else:
                    sock, self.answered_after = answered
                    self._setup.reschedule(loop.time() + self.budget)
                self.conn = await asyncssh.connect(client.link.host, options=options, sock=sock)
                command = remote_command_line(client.target.name, client.remote_command)
                writer, reader, errors = await self.conn.open_session(command, encoding=None)
                self.writer = writer
                self.conversation = client.position.conversation(*client.size())
                writer.write(self.conversation.initiate())
                async with _one_error(), asyncio.TaskGroup() as tasks:
                    tasks.create_task(self._keep_stderr(errors))
                    notices = tasks.create_task(self._follow_notices())  # notify
                    watch = tasks.create_task(self._watch_keepalives())
                    await self._stream(reader)
                    notices.cancel()
                    watch.cancel()
                await writer.channel.wait_closed()
            polite = True
            if not self.welcomed:
                client.refused(writer.channel.get_exit_status(), self.stderr_tail)
                return None  # closed before Welcome on a reconnect: try again
            return loop.time() - self.welcomed_at
        except LINK_ERRORS:
            if self.welcomed:
                return loop.time() - self.welcomed_at  # the link dropped while streaming
            raise
        except (Ended, AttachError, asyncio.CancelledError):
            polite = self.welcomed
            raise
        finally:
            self.writer = None
            if self.conn is not None:
                # A dead link is dropped at once; a finished one is closed politely.
                if polite:
                    self.conn.close()
                else:
                    self.conn.abort()

    async def _follow_notices(self) -> None:
        """The box's notices, of every session, on our status line (``superv events --json``
        over a second channel of this connection).  Best effort: whatever goes wrong
        here (an older superv on the box, the channel refused) never touches the attach."""
        if self.conn is None or not self.client.tty_out or self.client.status.exact:
            return
        command = remote_superv(["events", "--json"], self.client.remote_command)
        with contextlib.suppress(Exception):
            async with self.conn.create_process(command, encoding=None) as process:
                async for line in process.stdout:
                    body = attach_notices.from_json_line(line)
                    if body is not None and not self.stopped:
                        self.client.show_notice(body)

    async def _keep_stderr(self, errors: asyncssh.SSHReader[bytes]) -> None:
        # Only for error messages: keep the end, bounded.  The link failing is the
        # stdout stream's to report, not this one's.
        with contextlib.suppress(*LINK_ERRORS):
            while data := await errors.read(READ_SIZE):
                self.stderr_tail = (self.stderr_tail + data)[-4096:]

    async def _stream(self, reader: asyncssh.SSHReader[bytes]) -> None:
        """Hand what the bridge sends to the conversation until the stream ends."""
        talk = self.conversation
        assert talk is not None
        while True:
            event = talk.next_event()
            if event is conversation.NEED_DATA:
                ack = talk.ack()  # all that came is on the screen: the worker may send more
                if ack and self.writer is not None and not self.stopped:
                    self.writer.write(ack)
                data = await reader.read(READ_SIZE)
                if data:
                    self._back()
                talk.receive_data(data)
            elif isinstance(event, conversation.Closed):
                return
            elif not self.stopped:
                self._on_event(event)
                if not self.stopped:  # abandoned by its Welcome: the held one is current
                    self.client.position.offset = talk.position

    def _on_event(self, event: object) -> None:
        client = self.client
        match event:
            case protocol.Output(data=data):
                client.show(data)
            case protocol.Screen(data=data):
                client.show(data)
                client.status.screen_came()
            case conversation.Skipped(skipped=skipped):
                client.show(event.data)
                if not client.status.screen_came():  # not the screen a Repaint asked for
                    client.skipped(skipped)
            case conversation.SessionInfo():
                now = asyncio.get_running_loop().time()
                self.setup_time = now - self._began
                self.welcomed_at = now
                if self._setup is not None:
                    self._setup.reschedule(None)  # streaming: no deadline any more
                client.welcomed(self)
            case conversation.Exited():
                message = _exit_message(client.target.name, event)
                raise Ended(Ending(Outcome.EXITED, message, 0))
            case conversation.Failed(message=message):
                # From the bridge or the worker, on the box: say which box.
                raise AttachError(f"{client.target.shown}: {message}")
            case conversation.Violation(message=message) if not self.welcomed:
                raise AttachError(
                    f"{client.target.shown} is not speaking superv protocol ({message}); "
                    "does a shell startup file print something for non-interactive shells?"
                )
            case conversation.Violation(message=message):
                raise AttachError(f"{client.target.shown} broke the superv protocol: {message}")
            case _:
                pass  # a notice (attached, detached, ...): nothing to show


@contextlib.asynccontextmanager
async def _one_error() -> Any:
    """Re-raise a task group's single error as itself, so callers can catch it by type."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaves = list(_leaves(group))
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


def _leaves(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from _leaves(inner)
    else:
        yield error


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
        with terminal.raw_mode(self.stdin_fd) if self.tty_in else contextlib.nullcontext():
            try:
                yield
            finally:
                if self.tty_out:
                    tail = self.status.leaving()
                    if self.shown_anything:
                        # The session may have left the alternate screen, mouse reporting
                        # or a hidden cursor on; put the user's terminal back.
                        tail += self.alt_screen.reset_bytes() + b"\r\n"
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
            handled.append(signal.SIGWINCH)
            loop.add_signal_handler(signal.SIGWINCH, self._guarded(self._on_winch))
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
        leaves = list(_leaves(group))
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

    def welcomed(self, attempt: Attempt) -> None:
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

    def _online(self) -> None:
        """A connection streams again: the status line goes (asking for the screen it
        covered) and the keys discarded meanwhile are counted."""
        self._clear_status()
        if self.discarded:
            self._notice(f"{self.discarded} keystrokes typed while disconnected were discarded")
            self.discarded = 0

    def refused(self, status: int | None, stderr_tail: bytes) -> None:
        """The channel closed before a Welcome: say why, if retrying cannot help."""
        stderr = stderr_tail.decode("utf-8", "replace").strip()
        last = stderr.splitlines()[-1] if stderr else ""
        where = self.target.shown
        if status == REMOTE_MISSING_STATUS:
            if self.remote_command:
                raise AttachError(
                    f"remote command {self.remote_command!r} not found on {where}: "
                    "check --remote-command / SUPERV_REMOTE_COMMAND"
                )
            raise AttachError(
                f"superv is not installed on {where} (not on a non-interactive shell's PATH, "
                "nor in ~/.local/bin): install it there, or name it with --remote-command "
                "PATH or SUPERV_REMOTE_COMMAND"
            )
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
    "AttachError",
    "RemoteAttach",
    "Target",
    "parse_target",
    "remote_command_line",
    "run_remote_attach",
]
