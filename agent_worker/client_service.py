"""Serving the session's socket: one :class:`~agent_worker.conversation.ServerConversation`
per connection, driven over trio.

The conversation decides what is allowed; this module moves its bytes, serves each attach
client from the log at its own offset, and hands what the client asked for (input, a
resize, a signal, a stop) to the :class:`Session` it serves.  A client that breaks the
protocol gets an Error frame and is closed; it costs the session one line in worker.log
at most, and a flood of them a few lines a minute (:class:`Complaints`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

import attrs
import structlog
import trio

from agent_worker import protocol as p
from agent_worker.conversation import (
    NEED_DATA,
    Closed,
    Exited,
    Notice,
    Refused,
    ServerConversation,
    SessionInfo,
    State,
    Violation,
)
from agent_worker.fanout import Fanout, SharedStream, Subscriber
from agent_worker.feed_policy import FeedPolicy
from agent_worker.handed_terminal import HandedTerminal, received_fds
from agent_worker.log import OutputLog
from agent_worker.peer import refusal

log = structlog.get_logger("agent_worker")

SEND_CHUNK = 256 * 1024  # most bytes in one Output frame to a client
HELLO_TIMEOUT = 10.0
LAST_WORD_TIMEOUT = 2.0  # for the last word to a client we are closing
RECEIVE_SIZE = 65536  # most bytes taken by one read of a client's socket
DRAIN_LIMIT = 4 * p.MAX_FRAME  # of what it still sends, read and dropped before closing


class Session(Protocol):
    """What the client service needs from the worker."""

    output: OutputLog

    @property
    def ended(self) -> trio.Event: ...

    def info(self) -> SessionInfo: ...
    def exit_event(self, log_end: int) -> Exited: ...
    def paint(self, until: int, last: bool = False) -> bytes: ...
    def screen_exact(self) -> bool: ...
    def set_size(self, rows: int, cols: int) -> None: ...
    def force_redraw(self) -> None: ...
    async def write_input(self, data: bytes) -> None: ...
    def signal_agent(self, signum: int) -> None: ...
    def stop(self, grace: float) -> None: ...
    def persist_soon(self, reason: str) -> None: ...


@attrs.define
class Client:
    id: int
    read_only: bool
    since: float
    mode: str


class Complaints:
    """Log what clients do wrong without letting a flood of them fill the disk:
    at most ``burst`` lines per ``window`` seconds, then one line saying how many were
    left out."""

    def __init__(self, burst: int = 10, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.burst, self.window, self._clock = burst, window, clock
        self._window_start = -window
        self._said = 0
        self._dropped = 0

    def warn(self, event: str, **fields: Any) -> None:
        now = self._clock()
        if now - self._window_start >= self.window:
            if self._dropped:
                log.warning("client_complaints_dropped", count=self._dropped)
            self._window_start, self._said, self._dropped = now, 0, 0
        if self._said < self.burst:
            self._said += 1
            log.warning(event, **fields)
        else:
            self._dropped += 1


class ClientService:
    def __init__(self, session: Session, fanout: Fanout) -> None:
        self.session = session
        self.fanout = fanout
        self.clients: dict[int, Client] = {}  # attach clients (watchers are not counted)
        self._sizes: dict[int, tuple[int, int]] = {}  # read-write clients' windows, latest last
        self.none_attached = trio.Event()  # set while no attach client is connected
        self.none_attached.set()
        self.complaints = Complaints()
        self._next_id = 1

    def interactive(self) -> bool:
        """Is a read-write attach client connected (it answers terminal queries itself)?"""
        return any(not c.read_only for c in self.clients.values())

    async def serve(self, stream: trio.SocketStream) -> None:
        try:
            async with stream:
                await self._serve(stream)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away: nothing to say to it
        except Exception:
            # A bug met while serving one client drops that client, never the session.
            self.complaints.warn("client_failed", exc_info=True)

    async def _serve(self, stream: trio.SocketStream) -> None:
        refused = refusal(stream.socket)  # type: ignore[arg-type]
        conversation = ServerConversation()
        if refused:
            self.complaints.warn("client_refused", reason=refused)
            await _last_word(stream, conversation.send(p.Error(refused)))
            return
        with trio.move_on_after(HELLO_TIMEOUT) as waited:
            hello = await _next_event(stream, conversation)
        if waited.cancelled_caught:
            hello = Violation("no hello in time")
        if isinstance(hello, Violation):
            self.complaints.warn("client_protocol_error", error=hello.message)
            await _last_word(stream, conversation.send(p.Error(hello.message)))
            return
        if not isinstance(hello, p.Hello):
            return  # closed before saying hello
        await self._attach(SharedStream(stream), conversation, hello)

    async def _attach(self, stream: SharedStream, conversation: ServerConversation,
                      hello: p.Hello) -> None:
        client_id = self._next_id
        self._next_id += 1
        watching = conversation.watching
        client = Client(client_id, hello.read_only, time.time(), "watch" if watching else "attach")
        events = self.fanout.watch(client_id) if watching else None
        subscriber: Subscriber | None = None
        if not watching:
            self._add(client)
            if not hello.read_only:
                self._sized(client_id, hello.rows, hello.cols)
        handed: HandedTerminal | None = None
        try:
            info = self.session.info()
            offered = hello.hands_terminal
            if offered:
                info = attrs.evolve(info, takes_terminal=True)
            await stream.send_all(conversation.send(info))
            if offered:
                taken = await self._take_terminal(stream, conversation, hello)
                if taken is False:
                    return  # the client went away, detached or broke the protocol
                handed = taken
            if events is None:
                await self._start_stream(stream, conversation, hello, handed)
            # Every task below ends quietly when the client goes away, so that only a bug
            # comes out of the nursery (as an ExceptionGroup, caught by ``serve``).
            async with trio.open_nursery() as nursery:
                if events is not None:
                    nursery.start_soon(self._send_events, stream, conversation, events,
                                       nursery.cancel_scope)
                elif handed is not None:
                    nursery.start_soon(self._serve_terminal, handed, stream, conversation,
                                       nursery.cancel_scope)
                    nursery.start_soon(self._terminal_news, handed, stream, conversation,
                                       nursery.cancel_scope)
                    self.fanout.broadcast(Notice("attached", {"client": client_id,
                                                              "read_only": hello.read_only}))
                    self.session.persist_soon("attached")
                else:
                    feed = FeedPolicy(acks=hello.acks, may_skip=hello.may_skip)
                    subscriber = Subscriber(stream, conversation, feed)
                    nursery.start_soon(self._send_output, subscriber, nursery.cancel_scope)
                    self.fanout.broadcast(Notice("attached", {"client": client_id,
                                                              "read_only": hello.read_only}))
                    self.session.persist_soon("attached")
                violation = await self._receive(client_id, stream, conversation, subscriber, handed)
                if violation is not None:
                    self.complaints.warn("client_protocol_error", error=violation,
                                         client=client_id)
                    await self._refuse(nursery, stream, conversation, violation)
                nursery.cancel_scope.cancel()
        finally:
            if handed is not None:
                await handed.release()  # before the socket closes: then the client writes
            if events is not None:
                self.fanout.unwatch(client_id)
            elif self._remove(client_id):
                self.fanout.broadcast(Notice("detached", {"client": client_id}))
                self.session.persist_soon("detached")

    async def _refuse(self, nursery: trio.Nursery, stream: SharedStream,
                      conversation: ServerConversation, violation: str) -> None:
        """Answer a violation with an Error frame that the client gets whole.

        The conversation has ended, so the output sender stops after the frame it may be
        in the middle of (cancelling it there would leave half a frame before the Error).
        Meanwhile the client's input is read and dropped: a client still writing, while
        not reading, would otherwise block that frame, and closing with its input unread
        would reset the connection before it reads the Error."""
        drained = trio.Event()
        nursery.start_soon(_discard_input, stream.stream, drained)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError), \
                trio.move_on_after(LAST_WORD_TIMEOUT):
            await stream.send_all(conversation.send(p.Error(violation)))
            await stream.stream.send_eof()
            await drained.wait()

    def _add(self, client: Client) -> None:
        if not self.clients:
            self.none_attached = trio.Event()
        self.clients[client.id] = client

    def _remove(self, client_id: int) -> bool:
        gone = self.clients.pop(client_id, None) is not None
        if not self.clients:
            self.none_attached.set()
        if self._sizes.pop(client_id, None) is not None and self._sizes:
            # As tmux does: the window of the client left that sized the session last, not
            # the size of one that is gone (the rest of a bigger window would stay stale).
            self.session.set_size(*next(reversed(self._sizes.values())))
        return gone

    def _sized(self, client_id: int, rows: int, cols: int) -> None:
        """A read-write client's window size (its hello, a resize): the session's now."""
        self._sizes.pop(client_id, None)
        self._sizes[client_id] = (rows, cols)  # the latest last
        self.session.set_size(rows, cols)

    def _hold(self, handed: HandedTerminal) -> None:
        """The hot path stops writing to ``handed``: trio has something to write first."""
        if self.fanout.hot is not None:
            self.fanout.hot.hold(handed)

    async def _take_terminal(self, stream: SharedStream, conversation: ServerConversation,
                             hello: p.Hello) -> HandedTerminal | bool | None:
        """Receive the terminal the client hands over (its Terminal frame and descriptor)
        and say whether we took it: the terminal, None if we could not (the client is
        then served over its socket), False if the client left or broke the protocol."""
        event, fds = await _next_event_with_fds(stream.stream, conversation)
        if not isinstance(event, p.Terminal):
            for fd in fds:
                os.close(fd)
            if isinstance(event, Violation):
                self.complaints.warn("client_protocol_error", error=event.message)
                await _last_word(stream.stream, conversation.send(p.Error(event.message)))
            return False
        handed = HandedTerminal.take(fds, event.detach_key, hello.read_only)
        await stream.send_all(conversation.send(Notice("terminal", {"taken": handed is not None})))
        return handed

    async def _start_stream(self, stream: SharedStream, conversation: ServerConversation,
                            hello: p.Hello, handed: HandedTerminal | None = None) -> None:
        """Place the client in the stream as its hello asks."""
        output = self.session.output
        end = output.end
        if hello.start == p.Start.OFFSET:
            conversation.position = min(hello.value, end)
        elif hello.start == p.Start.TAIL:
            conversation.position = output.reader.tail_offset(hello.value, end)
        else:  # Start.SCREEN: paint the screen as of ``end``, then stream from ``end``
            # An ended session's last screen is shown where it stays: the attach ends at once.
            painted = self.session.paint(end, last=self.session.ended.is_set())
            if handed is None:
                await stream.send_all(conversation.send(p.Screen(end, painted)))
            else:
                conversation.position = end
                handed.shown_pending = painted  # written first, whatever its size
            if not self.session.screen_exact() and not hello.read_only:
                self.session.force_redraw()
        if handed is not None:
            assert conversation.position is not None
            handed.position = conversation.position

    async def _serve_terminal(self, handed: HandedTerminal, stream: SharedStream,
                              conversation: ServerConversation, scope: trio.CancelScope) -> None:
        """What trio writes to the handed terminal: the screen on attach, the status lines
        the client asks for, a repaint; the rest of the time the hot path writes to it
        (:meth:`HotPath.go_live`), as output is logged and from the log when it is behind.
        Never waits on the agent's side: a terminal that does not read is simply further
        behind in the log."""
        output, reader, ended = self.session.output, self.session.output.reader, self.session.ended
        hot = self.fanout.hot
        assert hot is not None
        fd = handed.fd
        hot.add_terminal(handed)  # its keys are read there from now on
        self.fanout.terminals.add(handed)
        try:
            while not handed.closed:
                if handed.writing:  # a catch-up write goes out first (the hot path tells)
                    await handed.lot.park()
                    continue
                if not handed.flush_shown():
                    await trio.lowlevel.wait_writable(fd)
                    continue
                end = output.end
                pos = handed.position
                if handed.repaint_wanted:
                    if pos < end or handed.carry:  # what was before the screen, first
                        if not handed.write_from_log(reader.read, end):
                            await trio.lowlevel.wait_writable(fd)
                        continue
                    handed.repaint_wanted = False
                    handed.shown_pending += self.session.paint(pos)
                elif ended.is_set() and pos >= end and not handed.carry:
                    await handed.release()  # the modes put back before the client hears
                    await stream.send_all(conversation.send(self.session.exit_event(pos)))
                    scope.cancel()
                    return
                else:
                    hot.go_live(handed)  # the hot path writes on from its place in the log
                    await handed.lot.park()  # until caught up, a show, the end, a repaint
                    hot.hold(handed)  # ours to write again
        except trio.ClosedResourceError:
            pass  # released under us (a detach)
        except OSError:
            await _terminal_lost(handed, stream, conversation, scope)
        finally:
            self.fanout.terminals.discard(handed)

    async def _terminal_news(self, handed: HandedTerminal, stream: SharedStream,
                             conversation: ServerConversation, scope: trio.CancelScope) -> None:
        """What the hot path read from the handed terminal and left to trio: keys the PTY
        did not take at once, keys on a read-only attach (the client's status line says
        they are ignored), the detach key (the attach ends), the terminal's hang-up."""
        hot = self.fanout.hot
        assert hot is not None
        try:
            while not handed.closed:
                with hot.lock:
                    keys, refused = handed.keys_pending, handed.refused
                    handed.refused = False
                if refused and not handed.refusal_shown:
                    handed.refusal_shown = True
                    await stream.send_all(conversation.send(Refused()))
                if keys:
                    await self.session.write_input(keys)
                    with hot.lock:  # kept until written: later keys queue behind them
                        handed.keys_pending = handed.keys_pending[len(keys):]
                    continue
                if handed.lost:
                    await _terminal_lost(handed, stream, conversation, scope)
                    return
                if handed.detach_pressed:
                    await handed.release()
                    with contextlib.suppress(trio.BrokenResourceError,
                                             trio.ClosedResourceError):
                        await stream.send_all(conversation.send(
                            Notice("terminal_released", {"reason": "detach"})))
                    scope.cancel()
                    return
                await handed.news_lot.park()
        except trio.ClosedResourceError:
            pass  # released under us

    async def _send_output(self, sub: Subscriber, scope: trio.CancelScope) -> None:
        """Serve one client from the log, from its offset on; the reader may serve it too."""
        output = self.session.output
        reader = output.reader
        stream, conversation, feed = sub.stream, sub.conversation, sub.feed
        ended = self.session.ended
        self.fanout.subscribers.add(sub)
        if self.fanout.hot is not None:
            self.fanout.hot.watchers_changed()
        try:
            # Until the client's side ends the conversation (a violation, say): a task
            # cancelled before it first ran still runs up to its first checkpoint.
            while conversation.state is State.STREAMING:
                end = output.end
                pos = conversation.position
                assert pos is not None
                if stream.pending:
                    await stream.send_all(b"")  # finish the frame the reader started
                elif feed.repaint_wanted:
                    await self._skip(sub, end, time.monotonic())
                elif pos < end:
                    now = time.monotonic()
                    quiet_for = time.time() - (output.last_output_at or 0.0)
                    if feed.should_hold(pos, end, now, quiet_for):
                        feed.caught_up()  # idle by choice: no measure of the link's rate
                        # Until it has shown the last screen, the output goes quiet (the
                        # flood's last screen), or an old client's hold ends.
                        look = feed.look_again_at(now, end, quiet_for)
                        with trio.move_on_at(look - now + trio.current_time()):
                            await self._park(sub)
                        continue
                    feed.backlogged(now)
                    room = feed.room()
                    if not room:
                        await self._park(sub)  # until an ack opens the window
                    elif feed.should_skip(pos, end, now, quiet_for):
                        await self._skip(sub, end, now)
                    else:
                        data = reader.read(pos, min(end - pos, SEND_CHUNK, feed.chunk(), room))
                        frame = conversation.output_frame(pos, data)
                        # Recorded before the send: a fast client's ack can come back
                        # while send_all is still yielding, and must find its frame.
                        feed.sent(pos + len(data), len(frame), now)
                        await stream.send_all(frame)
                elif ended.is_set():
                    await stream.send_all(conversation.send(self.session.exit_event(pos)))
                    scope.cancel()
                    return
                else:
                    feed.caught_up()
                    sub.parked = True
                    try:
                        await sub.lot.park()
                    finally:
                        sub.parked = False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            scope.cancel()  # the client went away
        finally:
            self.fanout.subscribers.discard(sub)
            if self.fanout.hot is not None:
                self.fanout.hot.watchers_changed()

    @staticmethod
    async def _park(sub: Subscriber) -> None:
        """Wait for the client's next ack (or new output, or the end) to look again."""
        await sub.lot.park()

    async def _skip(self, sub: Subscriber, end: int, now: float) -> None:
        """The client is too far behind to catch up soon: send it the screen as of ``end``
        and go on live from there (the log keeps every byte it did not get)."""
        frame = sub.conversation.send(p.Screen(end, self.session.paint(end)))
        sub.feed.sent(end, len(frame), now)  # before the send, as in _send_output
        sub.feed.skipped(end, len(frame), now)
        await sub.stream.send_all(frame)

    async def _send_events(self, stream: SharedStream, conversation: ServerConversation,
                           events: trio.MemoryReceiveChannel[Exited | Notice],
                           scope: trio.CancelScope) -> None:
        try:
            async for event in events:
                if conversation.state is not State.STREAMING:
                    return  # the client's side ended it (a violation): say no more
                await stream.send_all(conversation.send(event))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        scope.cancel()  # the client went, or the worker is going and said all it had

    async def _receive(self, client_id: int, stream: SharedStream, conversation: ServerConversation,
                       subscriber: Subscriber | None,
                       handed: HandedTerminal | None = None) -> str | None:
        """Act on what the client sends until it detaches, leaves or breaks the protocol;
        what it broke, if it did."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            return await self._receive_until_done(client_id, stream, conversation, subscriber,
                                                  handed)
        return None  # it went away

    async def _receive_until_done(self, client_id: int, stream: SharedStream,
                                  conversation: ServerConversation,
                                  subscriber: Subscriber | None,
                                  handed: HandedTerminal | None) -> str | None:
        while True:
            event = await _next_event(stream.stream, conversation)
            match event:
                case p.Detach() | Closed():
                    return None
                case p.Show(data):
                    if handed is not None:  # not for a client whose terminal we could not take
                        self._hold(handed)
                        handed.show(data)
                case p.Ack(offset):
                    if subscriber is not None:  # a watcher asks for no output: no acks
                        subscriber.feed.acked(offset, time.monotonic())
                        subscriber.lot.unpark_all()
                case p.Repaint():
                    if subscriber is not None:
                        subscriber.feed.repaint()
                        subscriber.lot.unpark_all()
                    elif handed is not None:  # once it is caught up: no byte is skipped
                        self._hold(handed)
                        handed.repaint_wanted = True
                        handed.lot.unpark_all()
                case Violation(message):
                    return message
                case Refused():
                    await stream.send_all(conversation.send(event))
                case p.Input(data):
                    if subscriber is not None:
                        subscriber.feed.typed(self.session.output.end)
                    await self.session.write_input(data)
                case p.Resize(rows, cols):
                    self._sized(client_id, rows, cols)
                    self.session.persist_soon("resized")
                case p.Signal(signum):
                    self.session.signal_agent(signum)
                case p.Stop(grace_ms):
                    # Also how the supervisor releases an ended worker it is about to restart.
                    self.session.stop(grace_ms / 1000)


async def _next_event(stream: trio.SocketStream, conversation: ServerConversation) -> Any:
    while (event := conversation.next_event()) is NEED_DATA:
        conversation.receive_data(await _receive_some(stream))
    return event


async def _next_event_with_fds(stream: trio.SocketStream, conversation: ServerConversation
                               ) -> tuple[Any, list[int]]:
    """The next event, and the descriptors that came with its bytes (SCM_RIGHTS)."""
    fds: list[int] = []
    sock = stream.socket
    while (event := conversation.next_event()) is NEED_DATA:
        try:
            data, ancdata, _, _ = await sock.recvmsg(RECEIVE_SIZE, socket.CMSG_SPACE(4 * 4))
        except OSError:
            data, ancdata = b"", []
        fds += received_fds(ancdata)
        conversation.receive_data(data)
    return event, fds


async def _terminal_lost(handed: HandedTerminal, stream: SharedStream,
                         conversation: ServerConversation, scope: trio.CancelScope) -> None:
    """The handed terminal died under us (hung up, closed): drop it, tell the client, end."""
    handed.close()
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(conversation.send(Notice("terminal_released", {"reason": "lost"})))
    scope.cancel()


async def _receive_some(stream: trio.SocketStream) -> bytes:
    """What the client sent next (b"" at its end), for the one task that reads it.

    Waits first, then reads: a keystroke's frame has been read whole by the time we
    look again, so ``receive_some``'s try-first would fail (EAGAIN) on nearly every key,
    and its checkpoints cost a scheduler pass each.  BrokenResourceError if the
    connection broke, ClosedResourceError if it was closed under us, as from the stream.
    """
    sock = stream.socket
    while True:
        if sock.fileno() < 0:
            raise trio.ClosedResourceError("the client's socket was closed")
        await trio.lowlevel.wait_readable(sock)
        try:
            return os.read(sock.fileno(), RECEIVE_SIZE)
        except BlockingIOError:
            continue  # woken for nothing (a spurious wake-up)
        except OSError as exc:
            if sock.fileno() < 0:
                raise trio.ClosedResourceError("the client's socket was closed") from exc
            raise trio.BrokenResourceError from exc


async def _last_word(stream: trio.SocketStream, frame: bytes) -> None:
    """Say one last thing to a client we are closing (nothing else is sending to it).

    Then end our side and drain the client's: closing a socket with unread input resets
    the connection, and the reset can overtake the frame."""
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError), \
            trio.move_on_after(LAST_WORD_TIMEOUT):
        await stream.send_all(frame)
        await stream.send_eof()
        await _discard_input(stream, trio.Event())


async def _discard_input(stream: trio.SocketStream, done: trio.Event) -> None:
    """Read and drop what the client sends, up to its end or :data:`DRAIN_LIMIT` bytes."""
    drained = 0
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        while drained < DRAIN_LIMIT:
            data = await stream.receive_some(65536)
            if not data:
                break
            drained += len(data)
    done.set()
