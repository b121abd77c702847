"""One connection of a remote attach (:mod:`supervisor.remote_attach`): an :class:`Attempt`
connects to the box, runs the bridge, streams until its link ends, and owns everything of
that connection; only :class:`StreamPosition`, the place in the session's log, carries
over to the next one.  Also the ways an attach ends (:class:`Ending`, :class:`Ended`,
:class:`AttachError`), which the connection and the client both raise.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import asyncssh
import attrs

from agent_worker import conversation, protocol
from agent_worker.paths import validate_name
from agent_worker.protocol import Detach, Hello, Input, Repaint, Resize, Start
from supervisor.notify import attach_notices
from supervisor.ssh_link import (
    KEEPALIVE_COUNT_MAX,
    KEEPALIVE_INTERVAL,
    answering_socket,
    remote_superv,
    unanswered_keepalives,
)

if TYPE_CHECKING:
    from supervisor.remote_attach import RemoteAttach

READ_SIZE = 256 * 1024
# How often a streaming connection's keepalive count is looked at: the link is said to be
# down (and back) within this of asyncssh counting it so.
WATCH_INTERVAL = KEEPALIVE_INTERVAL / 20
# What a dropped or unreachable link raises; anything else is a refusal or a bug.
LINK_ERRORS = (TimeoutError, OSError, asyncssh.Error)


class AttachError(Exception):
    """A failure that ends the attach: one line for the user, exit status 1."""


def remote_command_line(name: str, remote_command: str | None) -> bytes:
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
        if self.conversation is not None:
            self._write(self.conversation.send(msg))

    def _write(self, data: bytes) -> None:
        """To the box, unless its end has closed the channel: what it said before closing
        is still to be read and says why (a box without superv closes at once, and under
        load its close is in before the hello is written).  Writing would raise, and the
        attach would blame the link."""
        if self.writer is not None and not self.writer.is_closing():
            self.writer.write(data)

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
                self._write(self.conversation.initiate())
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
            process = await self.conn.create_process(command, encoding=None)
            try:
                async for line in process.stdout:
                    body = attach_notices.from_json_line(line)
                    if body is not None and not self.stopped:
                        self.client.show_notice(body)
            finally:
                # Closed, not waited for (as ``async with`` would): the box's end closes
                # only when its events command notices, and until then the attach hung,
                # deaf to the detach key and to SIGTERM, after the box had refused it.
                process.close()

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
                if ack and not self.stopped:
                    self._write(ack)
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
                client.welcomed(self, event)
            case conversation.Exited():
                message = _exit_message(client.target.name, event)
                raise Ended(Ending(Outcome.EXITED, message, 0))
            case conversation.Failed(message=message):
                # From the bridge or the worker, on the box: say which box, and name the
                # commands it suggests as run from here.
                raise AttachError(f"{client.target.shown}: {client.target.from_here(message)}")
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
        leaves = list(leaves_of(group))
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


def leaves_of(error: BaseException) -> Iterator[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        for inner in error.exceptions:
            yield from leaves_of(inner)
    else:
        yield error
