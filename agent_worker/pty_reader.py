"""The hot path: read what the agent printed from the PTY, log it, then hand it on.

Read in large batches and drain until the PTY has nothing more (each loop iteration is
Python overhead); append the batch to the log before anyone sees it; then
:meth:`Fanout.publish`.  A full disk loses nothing: the batch is kept, nothing more is
read (so the agent blocks on its own writes), and the write is retried every
:data:`DISK_RETRY` seconds.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable

import structlog
import trio

from agent_worker.conversation import Exited, Notice
from agent_worker.fanout import Fanout
from agent_worker.log import OutputLog

log = structlog.get_logger("agent_worker")

READ_BATCH = 1 << 20  # most bytes taken from the PTY before they are logged and shown
READ_SIZE = 65536
DISK_RETRY = 1.0  # a full disk gives no event when it has room again: try again this often


class PtyReader:
    def __init__(
        self,
        fd: int,
        output: OutputLog,
        fanout: Fanout,
        report: Callable[[Exited | Notice], None],
        on_logged: Callable[[bytes], None],
    ) -> None:
        self.fd = fd
        self.output = output
        self.fanout = fanout
        self._report = report
        self._on_logged = on_logged  # sees each logged batch (the terminal-query answerer)
        self.unlogged = b""  # output read from the PTY that the disk has not taken yet
        self.all_logged = trio.Event()  # set while ``unlogged`` is empty
        self.all_logged.set()
        self.eof = trio.Event()  # the PTY reported its end (every slave fd closed)
        self._disk_refused = False

    async def run(self) -> None:
        fd = self.fd
        eof = False
        while True:
            if self.unlogged:
                # The disk refused output: keep it and read nothing more until it is
                # logged, so the agent blocks on its own writes instead of losing any.
                self._keep(await self._log_batch(self.unlogged))
                continue
            if eof:
                break
            await trio.lowlevel.wait_readable(fd)
            chunks = []
            total = 0
            while total < READ_BATCH:
                try:
                    data = os.read(fd, READ_SIZE)
                except BlockingIOError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EIO:  # EIO: every slave fd is closed
                        raise
                    eof = True
                    break
                if not data:
                    eof = True
                    break
                chunks.append(data)
                total += len(data)
            if chunks:
                batch = b"".join(chunks) if len(chunks) != 1 else chunks[0]
                self._keep(await self._log_batch(batch))
        self.eof.set()
        self.fanout.wake_all()

    def _keep(self, rest: bytes) -> None:
        if rest and not self.unlogged:
            self.all_logged = trio.Event()
        elif not rest and self.unlogged:
            self.all_logged.set()
        self.unlogged = rest

    async def _log_batch(self, batch: bytes) -> bytes:
        """Log ``batch``, show it to the clients, and return what the disk refused."""
        try:
            written = self.output.append(batch)
        except OSError as exc:
            # Disk full or file too big: other sessions are untouched, and this one
            # waits for room.  Said once per outage, not once per retry.
            if not self._disk_refused:
                self._disk_refused = True
                log.error("log_write_failed", error=str(exc))
                self._report(Notice("log_write_failed", {"error": str(exc)}))
            await trio.sleep(DISK_RETRY)
            return batch
        if self._disk_refused:
            self._disk_refused = False
            log.info("log_write_resumed")
        logged = batch[:written] if written < len(batch) else batch
        self.fanout.publish(self.output.end - written, logged)
        self._on_logged(logged)
        return batch[written:]
