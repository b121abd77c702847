"""Reading protocol messages from a trio stream (worker and supervisor alike)."""

from __future__ import annotations

import trio

from agent_worker import protocol as p


async def receive_message(stream: trio.SocketStream, decoder: p.Decoder) -> p.Message:
    """The next message from ``stream``; EOFError if it closes first."""
    while True:
        msg = decoder.next_message()
        if msg is not None:
            return msg
        data = await stream.receive_some(65536)
        if not data:
            raise EOFError
        decoder.feed(data)
