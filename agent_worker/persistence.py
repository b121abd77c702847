"""When the worker makes its session durable: the log's fsync and the snapshot, together.

Every snapshot is taken in the trio thread (one consistent state) under a lock (a
snapshot never overwrites a newer one), and only the file work runs in a thread, so a
slow disk never stalls the PTY reader.

Some moments must be on disk at once (the start, a SIGHUP or SIGTERM, the exit):
:meth:`Persister.persist`.  Others only need to be on disk soon (a client attached,
detached or resized the window: ``ls`` shows the client count, and nothing is lost if a
crash takes them; an activity change, which ``ls`` has from the worker's event at
once): :meth:`Persister.persist_soon`, which coalesces a burst into one write at most
every :data:`COALESCE` seconds, so 6,000 attach/detach cycles do not mean 6,000 fsyncs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import structlog
import trio

from agent_worker.conversation import Exited, Notice
from agent_worker.log import OutputLog
from agent_worker.outage import Outage
from agent_worker.snapshot import Snapshot

log = structlog.get_logger("agent_worker")

COALESCE = 1.0  # at most this long between a "soon" request and its snapshot


class Persister:
    def __init__(
        self,
        directory: Path,
        output: OutputLog,
        take_snapshot: Callable[[int], Snapshot],
        report: Callable[[Exited | Notice], None],
    ) -> None:
        self.directory = directory
        self.output = output
        self._take_snapshot = take_snapshot  # given the sequence number, the state now
        self._report = report
        self._seq = 0
        self._lock = trio.Lock()
        self._outage = Outage()  # snapshot_failed is reported once an outage
        self._soon: set[str] = set()
        self._soon_wanted = trio.Event()

    async def persist(self, reason: str) -> None:
        """Fsync the log and write a snapshot of the state now; failures are reported."""
        async with self._lock:
            self._seq += 1
            snap = self._take_snapshot(self._seq)
            self._soon.clear()  # this snapshot covers what was waiting
            try:
                await trio.to_thread.run_sync(self._persist_sync, snap)
            except OSError as exc:
                log.error("snapshot_failed", reason=reason, error=str(exc))
                if self._outage.failed():
                    self._report(Notice("snapshot_failed", {"error": str(exc)}))
            else:
                if self._outage.succeeded():
                    log.info("snapshot_resumed", reason=reason)
                log.debug("persisted", reason=reason, seq=snap.seq, log_end=snap.log_end)

    def persist_soon(self, reason: str) -> None:
        """Ask for a snapshot within :data:`COALESCE` seconds (many asks, one write)."""
        self._soon.add(reason)
        self._soon_wanted.set()

    def _persist_sync(self, snap: Snapshot) -> None:
        self.output.sync()
        snap.write(self.directory)

    async def run(self, interval: float) -> None:
        """The first snapshot, then one every ``interval`` seconds and the coalesced ones."""
        await self.persist("start")
        next_at = trio.current_time() + interval
        while True:
            with trio.move_on_at(next_at):
                await self._soon_wanted.wait()
                await trio.sleep(COALESCE)  # let the rest of a burst join this one
            self._soon_wanted = trio.Event()
            if trio.current_time() >= next_at:
                next_at = trio.current_time() + interval
                await self.persist("interval")
            elif self._soon:
                await self.persist("+".join(sorted(self._soon)))
