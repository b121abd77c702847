"""Handing what was just logged to the clients, and lifecycle events to the watchers.

The PTY reader calls :meth:`Fanout.publish` after each batch reaches the log (handed
terminals are written by the hot path itself, :mod:`agent_worker.hot_path`).  A client
that is caught up and idle, with room in its feed window (:mod:`agent_worker.feed_policy`),
gets the batch straight from memory, by a send that does not wait (the echo of a
keystroke then costs no task switch and no read of the log); every other client is woken,
and its own sender reads the log from its offset.  So the reader never waits on a client.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING

import attrs
import trio

from agent_worker import protocol as p
from agent_worker.conversation import Exited, Notice, ServerConversation
from agent_worker.feed_policy import FeedPolicy
from agent_worker.handed_terminal import HandedTerminal

if TYPE_CHECKING:
    from agent_worker.hot_path import HotPath


class SharedStream:
    """One client's stream, shared by its tasks: whole frames, one sender at a time.

    trio refuses a second ``send_all`` while one is in progress (BusyResourceError), and
    the output sender and the receiver's "refused" notice do meet on a busy client.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._send_lock = trio.StrictFIFOLock()
        self.pending = b""  # the rest of a frame that send_nowait could not finish

    async def send_all(self, data: bytes) -> None:
        async with self._send_lock:
            if self.pending:
                rest, self.pending = self.pending, b""
                await self.stream.send_all(rest)
            if data:
                await self.stream.send_all(data)

    def send_nowait(self, frame: bytes) -> bool:
        """Start sending ``frame`` without waiting, if nobody else is sending.

        True if the socket took some or all of it (the rest is in ``pending``, and must be
        flushed by ``send_all`` before anything else is sent); False if nothing was sent.
        """
        if self._send_lock.locked() or self.pending:
            return False
        try:
            sent = os.write(self.stream.socket.fileno(), frame)
        except OSError:
            return False  # full (EAGAIN) or broken: the client's own sender finds out
        self.pending = frame[sent:]
        return sent > 0

    async def receive_some(self, max_bytes: int) -> bytes:
        return await self.stream.receive_some(max_bytes)


@attrs.define(eq=False)
class Subscriber:
    """An attach client's place in the output stream, shared by its sender and the reader.

    Its place is its conversation's ``position``: the conversation refuses a gap and
    drops a duplicate, whichever of the two sends.
    """

    stream: SharedStream
    conversation: ServerConversation
    feed: FeedPolicy  # how much may be in flight to it, and when it skips to the screen
    lot: trio.lowlevel.ParkingLot = attrs.Factory(trio.lowlevel.ParkingLot)
    parked: bool = False  # its sender is asleep, caught up, with nothing half-sent


class Fanout:
    """The attach clients' subscriptions and the watchers' event channels."""

    WATCH_QUEUE = 256  # events a watcher may fall behind by before it loses some

    def __init__(self) -> None:
        self.subscribers: set[Subscriber] = set()
        # Terminals handed over by local clients (the hot path writes to the caught-up ones).
        self.terminals: set[HandedTerminal] = set()
        self.hot: HotPath | None = None  # set by the PTY reader
        self.watchers: dict[int, trio.MemorySendChannel[Exited | Notice]] = {}
        # Notices of a state that still holds (the disk refusing the log), by state: a
        # watcher that comes meanwhile (a restarted supervisor) gets them first, marked
        # ``ongoing`` (it is not news: notify has told of it already).
        self.standing: dict[str, Notice] = {}
        self._unwatched = trio.lowlevel.ParkingLot()  # wakes watchers_gone
        self.woken = trio.lowlevel.ParkingLot()  # anyone else who wants to know of output
        # The log's end as trio last heard of it (agent_worker.pty_reader).  OutputLog.end
        # is ahead of it by what the hot path has not told yet: a task that waits for news
        # compares with this, or it would find "more output" at every look while keys are
        # typed and never wait for the news at all.
        self.told = 0

    def publish(self, start: int, data: bytes) -> None:
        """Output at log offset ``start`` was just logged: hand it on."""
        frame = None
        now = time.monotonic()
        for sub in self.subscribers:
            if (sub.parked and sub.conversation.expects(start)
                    and len(data) <= min(p.MAX_OUTPUT_CHUNK, sub.feed.room())
                    and sub.feed.takes_live(start, start + len(data), now)):
                if frame is None:
                    frame = p.encode_output(start, data)
                if sub.stream.send_nowait(frame):
                    sub.conversation.output_sent(start, len(data))
                    sub.feed.sent(start + len(data), len(frame), now)
                    if not sub.stream.pending:
                        continue  # all sent: its sender sleeps on
            sub.lot.unpark_all()
        self.woken.unpark_all()

    def wake_all(self) -> None:
        """Something other than output happened (the end): every sender looks again."""
        for sub in self.subscribers:
            sub.lot.unpark_all()
        for term in self.terminals:
            term.lot.unpark_all()
        self.woken.unpark_all()

    def watch(self, client_id: int) -> trio.MemoryReceiveChannel[Exited | Notice]:
        send, receive = trio.open_memory_channel[Exited | Notice](self.WATCH_QUEUE)
        for notice in self.standing.values():
            send.send_nowait(Notice(notice.event, {**notice.fields, "ongoing": True}))
        self.watchers[client_id] = send
        return receive

    def unwatch(self, client_id: int) -> None:
        self.watchers.pop(client_id, None)
        self._unwatched.unpark_all()

    def broadcast(self, event: Exited | Notice) -> None:
        for channel in list(self.watchers.values()):
            # A watcher that does not read loses events, never stalls the worker.
            with contextlib.suppress(trio.WouldBlock, trio.BrokenResourceError,
                                     trio.ClosedResourceError):
                channel.send_nowait(event)

    def declare(self, state: str, notice: Notice, holds: bool) -> None:
        """Broadcast ``notice``, which says that ``state`` begins to hold (``holds``) or
        has ended; while it holds, each new watcher gets it too."""
        if holds:
            self.standing[state] = notice
        else:
            self.standing.pop(state, None)
        self.broadcast(notice)

    def close_watchers(self) -> None:
        """The worker is going: each watcher's sender sends what is queued, then ends."""
        for channel in self.watchers.values():
            channel.close()

    async def watchers_gone(self) -> None:
        while self.watchers:
            await self._unwatched.park()
