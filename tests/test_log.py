"""The durable output log, against a reference model, with hypothesis.

Any sequence of appends reads back exactly; a crash can only shorten the log (a torn
index record is ignored); ``tail_offset`` finds where the last N lines begin, by reading
backwards, exactly as counting lines from the start would.
"""

from __future__ import annotations

import contextlib
import errno
import struct
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_worker import log as log_module
from agent_worker.log import LogReader, OutputLog, offset_at_time
from agent_worker.session_files import INDEX as INDEX_NAME
from agent_worker.session_files import LOG as LOG_NAME

# Mostly line-shaped output (the edge cases of tail_offset live at line ends), some binary.
chunks = st.lists(
    st.sampled_from([b"\n", b"x\n", b"\r\n", b"ab\n\n", b"no newline", b""])
    | st.binary(max_size=300),
    max_size=40,
)


def reference_tail(data: bytes, lines: int) -> int:
    """Where the last ``lines`` lines of ``data`` begin, counting from the start."""
    if lines <= 0:
        return len(data)
    starts = [0] + [i + 1 for i, byte in enumerate(data) if byte == 0x0A]
    if starts[-1] == len(data) and len(starts) > 1:
        starts.pop()  # a final newline ends the last line; it starts none
    return starts[-lines] if lines <= len(starts) else 0


@contextlib.contextmanager
def fresh() -> Iterator[Path]:
    """A new session directory for each hypothesis example."""
    with tempfile.TemporaryDirectory(prefix="svlog-") as name:
        yield Path(name)


@settings(max_examples=150, deadline=None)
@given(parts=chunks, lines=st.integers(min_value=0, max_value=12))
def test_appends_read_back_and_tail_matches_counting(parts: list[bytes], lines: int) -> None:
    with fresh() as directory:
        log = OutputLog(directory, "never")
        try:
            for part in parts:
                assert log.append(part) == len(part)
            data = b"".join(parts)
            assert log.end == len(data)
            reader = LogReader(directory)
            assert reader.read(0, len(data) + 10) == data
            assert reader.tail_offset(lines) == reference_tail(data, lines)
            reader.close()
        finally:
            log.close()


@settings(max_examples=60, deadline=None)
@given(data=st.binary(min_size=1, max_size=5000), lines=st.integers(min_value=1, max_value=30))
def test_tail_offset_crosses_block_boundaries(data: bytes, lines: int) -> None:
    # Long runs of newline-free bytes around the reader's 64 KiB blocks.
    with fresh() as directory:
        body = data * (70_000 // len(data) + 1) + b"\nlast line\n"
        (directory / LOG_NAME).write_bytes(body)
        reader = LogReader(directory)
        assert reader.tail_offset(lines) == reference_tail(body, lines)
        reader.close()


@settings(max_examples=80, deadline=None)
@given(parts=chunks.filter(bool), cut=st.integers(min_value=0, max_value=10_000))
def test_a_crash_only_shortens_the_log_and_a_torn_index_record_is_ignored(
    parts: list[bytes], cut: int
) -> None:
    with fresh() as directory:
        log = OutputLog(directory, "never")
        for part in parts:
            log.append(part)
            log._last_index = 0.0  # an index record for every append, for this test
        log.close()
        data = b"".join(parts)
        # What a crash may leave: any prefix of the log, any prefix of the index.
        log_cut = cut % (len(data) + 1)
        index = (directory / INDEX_NAME).read_bytes()
        index_cut = cut % (len(index) + 1)
        (directory / LOG_NAME).write_bytes(data[:log_cut])
        (directory / INDEX_NAME).write_bytes(index[:index_cut])
        reader = LogReader(directory)
        assert reader.read(0, len(data)) == data[:log_cut]
        records = reader.index()
        # Every whole record survives, but one naming an offset the shortened log lacks.
        whole = [struct.unpack_from("!Qd", index, i) for i in range(0, index_cut - 15, 16)]
        assert records == [r for r in whole if r[0] <= log_cut]
        offsets = [offset for offset, _ in records]
        assert offsets == sorted(offsets) and all(0 <= o <= len(data) for o in offsets)
        assert 0 <= reader.offset_at(time.time() - 3600) <= reader.size()
        reader.close()
        # A worker resuming this session appends after whatever survived.
        resumed = OutputLog(directory, "never")
        assert resumed.end == log_cut
        resumed.append(b"marker\n")
        resumed.close()
        assert (directory / LOG_NAME).read_bytes() == data[:log_cut] + b"marker\n"


def test_unknown_fsync_policy_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_worker.log import fsync_policy

    monkeypatch.setenv("SUPERV_LOG_FSYNC", "sometimes")
    with pytest.raises(ValueError, match="snapshot, always, never"):
        fsync_policy()


# ---- the time index behind ``logs --since`` ---------------------------------------------

# Index records at t=100 (offset 0), 103 (offset 20) and 104.5 (offset 30); the log ends at
# 40.  Output appended within a second of a record writes none of its own.
INDEX = [(0, 100.0), (20, 103.0), (30, 104.5)]
END = 40


@pytest.mark.parametrize(("when", "last_write", "expected", "why"), [
    (50.0, 104.6, 0, "before the first record: everything"),
    (100.0, 104.6, 0, "exactly at the first record: that record's output on"),
    (100.5, 104.6, 0, "within a second of a record: that batch may run past it"),
    (101.0, 104.6, 20, "a second or more after a record: its batch is all older"),
    (102.9, 104.6, 20, "just before the next record: from that record"),
    (103.0, 104.6, 20, "exactly at a record"),
    (103.5, 104.6, 20, "half a second after a record: from that record"),
    (104.0, 104.6, 30, "a second after a record: from the next one"),
    (104.5, 104.6, 30, "exactly at the last record"),
    (104.55, 104.6, 30, "after the last record, the log written since: its batch"),
    (105.0, 104.6, END, "after the last write: nothing"),
])
def test_offset_at_time_with_explicit_times(when: float, last_write: float, expected: int,
                                            why: str) -> None:
    assert offset_at_time(INDEX, when, last_write, END) == expected, why


def test_offset_at_time_of_an_empty_index() -> None:
    assert offset_at_time([], 100.0, 99.0, 0) == 0


def test_a_refused_batch_is_indexed_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full disk refuses the same batch at every retry: the index names its offset once
    (with the first try's time), instead of growing by a record a try on the full disk."""
    monkeypatch.setattr(log_module, "_INDEX_EVERY", 0.0)  # every append is due a record
    (tmp_path / "output.log").symlink_to("/dev/full")  # every write: ENOSPC, for real
    log = OutputLog(tmp_path)
    try:
        for _ in range(3):
            with pytest.raises(OSError) as refused:
                log.append(b"held back\n")
            assert refused.value.errno == errno.ENOSPC
        assert [offset for offset, _ in log.reader.index()] == [0]
    finally:
        log.close()


def test_a_damaged_index_gives_fewer_times_never_wrong_ones(tmp_path: Path) -> None:
    """Records that cannot be right are left out: ``logs --since`` then shows more of the
    log, not nothing (garbage offsets past the end put every time after the output)."""
    log = OutputLog(tmp_path)
    log.append(b"x" * 100)
    log.close()
    record = struct.Struct("!Qd")
    (tmp_path / INDEX_NAME).write_bytes(
        record.pack(0, 1000.0) + record.pack(1 << 60, 2000.0)  # past the log
        + record.pack(50, float("nan")) + record.pack(60, 500.0)  # not a time; going back
        + record.pack(40, 3000.0) + record.pack(10, 4000.0))  # ok; offset going back
    reader = LogReader(tmp_path)
    try:
        assert reader.index() == [(0, 1000.0), (40, 3000.0)]
        assert reader.offset_at(2500.0) == 40
    finally:
        reader.close()
