"""Logging never raises (issue 14 item 1): a line that cannot be written is dropped and
counted, and the count is said once, on the first line that can be written again."""

from __future__ import annotations

import os
from pathlib import Path

from agent_worker.logs import SafeStderr


def test_a_full_disk_drops_lines_and_says_so_once_space_returns(tmp_path: Path) -> None:
    full = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC
    writer = SafeStderr(full)
    writer.error("event='log_write_failed'")  # before: the write raised, in the handler itself
    writer.info("event='second'")
    assert writer.dropped == 2 and writer.last_error == os.strerror(28)
    os.close(full)
    log = tmp_path / "worker.log"
    writer.fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        writer.info("event='log_write_resumed'")
        writer.info("event='later'")
    finally:
        os.close(writer.fd)
    lines = log.read_text().splitlines()
    assert len(lines) == 3
    assert "event='log_lines_dropped' count=2 error='No space left on device'" in lines[0]
    assert lines[1:] == ["event='log_write_resumed'", "event='later'"]
    assert writer.dropped == 0


def test_a_line_cut_short_does_not_swallow_the_next(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    writer = SafeStderr(write_end)
    os.set_blocking(write_end, False)
    writer.info("x" * (1 << 20))  # more than the pipe holds: cut short, then EAGAIN
    assert writer.dropped == 1
    got = b""
    os.set_blocking(read_end, False)
    try:
        while chunk := os.read(read_end, 1 << 20):
            got += chunk
    except BlockingIOError:
        pass
    writer.info("event='next'")
    tail = os.read(read_end, 4096)
    assert tail.split(b"\n")[1].startswith(b"timestamp=") and b"event='log_lines_dropped' count=1" in tail
    assert tail.endswith(b"\nevent='next'\n") and got and not got.endswith(b"\n")
    os.close(read_end)
    os.close(write_end)
