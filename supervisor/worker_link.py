"""The supervisor's watch connection to one worker: lifecycle events in, stop orders out.

One way to open it, for everything the supervisor asks of a worker: who it is (adopting a
worker that no file names yet), its events (relayed to ``superv events``; ``exited`` feeds
the session's lifecycle), and ``Stop`` (``superv stop``, or releasing an ended worker
that need not linger because a new run follows).  It drives the client side of
:mod:`agent_worker.conversation`; the trio code here only moves bytes.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import trio

from agent_worker import conversation as c
from agent_worker import paths
from agent_worker import protocol as p

CONNECT_TIMEOUT = 2.0  # a live worker answers a hello at once


class LinkError(Exception):
    """The worker could not be reached or broke the conversation."""


class WorkerLink:
    def __init__(self, stream: trio.SocketStream, conversation: c.ClientConversation,
                 info: c.SessionInfo) -> None:
        self.info = info
        self._stream = stream
        self._conversation = conversation
        self._send_lock = trio.Lock()  # a stop and a release may be sent at once

    async def send(self, msg: p.Stop | p.Detach) -> None:
        async with self._send_lock:
            try:
                await self._stream.send_all(self._conversation.send(msg))
            except (trio.BrokenResourceError, trio.ClosedResourceError, c.LocalProtocolError) as exc:
                raise LinkError(f"the worker closed its connection ({exc})") from None

    async def events(self) -> AsyncIterator[c.Exited | c.Notice]:
        """The worker's events until it closes the connection (or breaks the protocol)."""
        while True:
            event = await _next_event(self._stream, self._conversation)
            if isinstance(event, c.Exited | c.Notice):
                yield event
            elif isinstance(event, c.Closed | c.Failed | c.Violation):
                return


@contextlib.asynccontextmanager
async def open_link(name: str) -> AsyncIterator[WorkerLink]:
    """A watch connection to ``name``'s worker, welcomed; LinkError if there is none."""
    conversation = c.ClientConversation(p.Hello(p.Start.WATCH))
    try:
        stream = await trio.open_unix_socket(str(paths.session_socket(name)))
    except OSError as exc:
        raise LinkError(f"cannot reach session {name}'s worker: {exc.strerror or exc}") from None
    async with stream:
        try:
            with trio.fail_after(CONNECT_TIMEOUT):
                await stream.send_all(conversation.initiate())
                welcome = await _next_event(stream, conversation)
        except (trio.TooSlowError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise LinkError(f"session {name}'s worker did not answer ({exc!r})") from None
        if not isinstance(welcome, c.SessionInfo):
            raise LinkError(f"session {name}'s worker refused a watch: {welcome}")
        link = WorkerLink(stream, conversation, welcome)
        try:
            yield link
        finally:
            with contextlib.suppress(LinkError), trio.CancelScope(shield=True), \
                    trio.move_on_after(1):
                await link.send(p.Detach())


async def send_to_worker(name: str, msg: p.Stop, link: WorkerLink | None = None) -> None:
    """Send ``msg`` on ``link`` if there is one, else on a connection of its own."""
    if link is not None:
        with contextlib.suppress(LinkError):
            await link.send(msg)
            return
    async with open_link(name) as own:
        await own.send(msg)


async def _next_event(stream: trio.SocketStream, conversation: c.ClientConversation
                      ) -> c.ClientEvent | c.Failed | c.Violation | c.Closed:
    while True:
        event = conversation.next_event()
        if event is not c.NEED_DATA:
            return event  # type: ignore[return-value]
        try:
            data = await stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        conversation.receive_data(data)
