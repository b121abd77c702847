"""The session's durable output log: every byte the agent printed, in order.

The log file ``output.log`` holds the raw bytes exactly as the PTY delivered them, so a
byte's offset in the stream *is* its position in the file: "everything after offset N"
is one ``pread``, as fast on a 1 GB log as on a 1 MB one, and any prefix of the file is a
valid log (a crash can shorten it, never tear it).  One writer (the worker) appends with
``O_APPEND``; readers (attach clients, ``superv logs``) only ``pread``.

Beside it, ``output.idx`` records ``(offset, unix time)`` pairs at most once a second of
output, so ``logs --since`` and ``export`` can put times on the stream without scanning it.
A torn last record in the index is ignored on read.

Durability of the log is a named policy (``SUPERV_LOG_FSYNC``):

- ``snapshot`` (default): fsync at every snapshot (at least every
  ``SUPERV_SNAPSHOT_INTERVAL`` s), on SIGHUP, SIGTERM and agent exit.  A crash of the
  worker loses nothing (the kernel has every byte); a power loss loses at most the output
  of the last interval.
- ``always``: fsync after every batch read from the PTY.  A power loss loses at most the
  batch being written; it costs throughput.
- ``never``: leave it to the kernel's writeback (about 30 s on Linux).  A power loss
  may lose that much, and the snapshot's ``log_end`` may point past the durable end.
"""

from __future__ import annotations

import bisect
import math
import os
import struct
import time
from pathlib import Path

import attrs

from agent_worker import settings
from agent_worker.session_files import INDEX, LOG

FSYNC_POLICIES = ("snapshot", "always", "never")
_INDEX_RECORD = struct.Struct("!Qd")
_INDEX_EVERY = 1.0  # seconds between index records


@attrs.frozen
class NativeAppends:
    """What the native lane appends with (:meth:`OutputLog.native_appends`)."""

    log_fd: int
    index_fd: int
    index_at: float  # time.time() from which the next batch wants an index record first
    index_every: float
    end: int  # the log's end
    last_indexed: int  # the offset of the last index record (-1: none)


def fsync_policy() -> str:
    return settings.current().log_fsync


class OutputLog:
    """The worker's writing end of a session log."""

    def __init__(self, directory: Path, policy: str = "snapshot") -> None:
        self.path = directory / LOG
        self.policy = policy
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._index_fd = os.open(
            directory / INDEX, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600
        )
        self.end = os.fstat(self._fd).st_size
        self._last_index = 0.0
        self._last_indexed = -1  # the offset of the last index record
        self.last_output_at: float | None = None
        self.reader = LogReader(directory)

    def append(self, data: bytes) -> int:
        """Append as much of ``data`` as the disk takes; return how much that was.

        Raises OSError (ENOSPC, EFBIG...) only when nothing could be written; the caller
        keeps the rest and tries again later, so nothing the agent printed is dropped.
        """
        now = time.time()
        if now - self._last_index >= _INDEX_EVERY and self.end != self._last_indexed:
            # The index record goes first: it names the offset this batch starts at.  Not
            # twice for one offset: a full disk refuses the same batch every second, and
            # the first try's time is when it was printed.
            os.write(self._index_fd, _INDEX_RECORD.pack(self.end, now))
            self._last_index, self._last_indexed = now, self.end
        written = 0
        view = memoryview(data)
        while written < len(data):
            try:
                written += os.write(self._fd, view[written:])
            except OSError:
                if written == 0:
                    raise
                break
        self.end += written
        self.last_output_at = now
        if self.policy == "always":
            os.fdatasync(self._fd)
        return written

    def native_appends(self) -> NativeAppends | None:
        """For the hot path's native lane (:mod:`agent_worker.hot_lane`), which appends
        through this log's descriptors while nothing else does, by :meth:`append`'s rule
        (the C source keeps it and the index record's layout, ``_INDEX_RECORD``).  None
        while the policy fsyncs every batch."""
        if self.policy == "always":
            return None
        return NativeAppends(self._fd, self._index_fd, self._last_index + _INDEX_EVERY,
                             _INDEX_EVERY, self.end, self._last_indexed)

    def appended_natively(self, written: int, at: float, indexed: tuple[int, float] | None
                          ) -> None:
        """The native lane appended ``written`` bytes, the last at ``at`` (time.time()),
        and the last index record it wrote was ``indexed`` (offset, time), if it wrote one."""
        self.end += written
        if written:
            self.last_output_at = at
        if indexed is not None:
            self._last_indexed, self._last_index = indexed

    def sync(self) -> None:
        """Make everything appended so far durable (unless the policy is ``never``)."""
        if self.policy != "never":
            os.fdatasync(self._fd)
            os.fdatasync(self._index_fd)

    def close(self) -> None:
        for fd in (self._fd, self._index_fd):
            os.close(fd)
        self.reader.close()


class LogReader:
    """Reads a session log by offset; safe while the worker appends to it."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._fd = os.open(directory / LOG, os.O_RDONLY | os.O_CLOEXEC)

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self._fd, size, offset)

    def tail_offset(self, lines: int, end: int | None = None) -> int:
        """Offset where the last ``lines`` lines before ``end`` begin.

        Reads backwards in blocks, so its cost depends on the lines asked for, not on the
        size of the log.
        """
        pos = self.size() if end is None else end
        if lines <= 0:
            return pos
        # A final line without its newline counts as a line too.
        needed = lines + 1 if pos and self.read(pos - 1, 1) == b"\n" else lines
        block = 64 * 1024
        while pos > 0:
            start = max(0, pos - block)
            chunk = self.read(start, pos - start)
            idx = len(chunk)
            while needed:
                idx = chunk.rfind(b"\n", 0, idx)
                if idx < 0:
                    break
                needed -= 1
                if needed == 0:
                    return start + idx + 1
            pos = start
        return 0

    def index(self) -> list[tuple[int, float]]:
        """The ``(offset, time)`` records, in order, without a torn last record, and
        without any record that cannot be right: an offset past the log or going back, a
        time that is not finite or goes back (a damaged file, or a clock stepped back).
        Fewer records only make ``--since`` show more, never less."""
        try:
            raw = (self.directory / INDEX).read_bytes()
        except FileNotFoundError:
            return []
        size = self.size()
        records: list[tuple[int, float]] = []
        for i in range(0, len(raw) - len(raw) % _INDEX_RECORD.size, _INDEX_RECORD.size):
            offset, when = _INDEX_RECORD.unpack_from(raw, i)
            if offset > size or not math.isfinite(when) or (
                    records and (offset < records[-1][0] or when < records[-1][1])):
                continue
            records.append((offset, when))
        return records

    def offset_at(self, when: float) -> int:
        """The first offset whose output was logged at or after ``when`` (unix time)."""
        return offset_at_time(self.index(), when, os.fstat(self._fd).st_mtime, self.size())

    def close(self) -> None:
        os.close(self._fd)


def offset_at_time(records: list[tuple[int, float]], when: float, last_write: float, end: int) -> int:
    """Where the output logged at or after ``when`` starts, from the index alone.

    ``records`` are the index's ``(offset, time)`` pairs, ``last_write`` the log's mtime and
    ``end`` its size.  Pure, so the one-second resolution is tested with explicit times.
    """
    times = [t for _, t in records]
    i = bisect.bisect_left(times, when)
    if i == 0:
        return 0
    if i >= len(records):
        # Every batch started before ``when``; the last one may have gone on past it.
        return records[-1][0] if last_write >= when else end
    # Output between two records was logged less than _INDEX_EVERY after the first
    # one's time (a later batch writes a record of its own): if that is before
    # ``when``, all of it is, and the output from ``when`` on starts at the next record.
    if when - records[i - 1][1] >= _INDEX_EVERY:
        return records[i][0]
    # The batch that started before ``when`` may run past it: start from that batch.
    return records[i - 1][0]
