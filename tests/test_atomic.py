"""Durable writes: a reader sees the old file or the new one, never a partial or empty one.

The fault tests use real processes: a writer SIGKILLed at random moments, and a writer
whose file size limit (RLIMIT_FSIZE) stands in for a full disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from agent_worker.atomic import (
    Unreadable,
    previous_path,
    read_json_with_fallback,
    write_atomic,
    write_json_atomic,
)

REPO = Path(__file__).resolve().parent.parent


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def make_snapshot(seq: int, payload: str) -> dict[str, object]:
    return {
        "seq": seq,
        "payload": payload,
        "sha": hashlib.sha256(f"{seq}:{payload}".encode()).hexdigest(),
    }


def check_snapshot(value: object) -> int:
    assert isinstance(value, dict), value
    seq, payload = value["seq"], value["payload"]
    expected = hashlib.sha256(f"{seq}:{payload}".encode()).hexdigest()
    assert value["sha"] == expected, f"snapshot {seq} does not match its checksum"
    return seq


# --- basics ----------------------------------------------------------------------------------


def test_write_atomic_round_trip(tmp_path: Path) -> None:
    target = tmp_path / "blob"
    write_atomic(target, b"one")
    assert target.read_bytes() == b"one"
    write_atomic(target, b"")
    assert target.read_bytes() == b""
    write_atomic(target, memoryview(b"three" * 1000))  # type: ignore[arg-type]
    assert target.read_bytes() == b"three" * 1000
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert not previous_path(target).exists()
    assert leftovers(tmp_path) == []


def test_mode_is_applied(tmp_path: Path) -> None:
    target = tmp_path / "spec"
    write_atomic(target, b"x", mode=0o640)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_json_round_trip(tmp_path: Path) -> None:
    target = tmp_path / "snap.json"
    value = {"seq": 1, "text": "héllo\nworld", "list": [1, 2.5, None, True], "nested": {"a": {}}}
    write_json_atomic(target, value)
    assert read_json_with_fallback(target) == (value, None)
    assert json.loads(target.read_bytes()) == value


def test_keep_previous(tmp_path: Path) -> None:
    target = tmp_path / "snap.json"
    prev = previous_path(target)
    assert prev.name == "snap.json.prev"
    write_json_atomic(target, {"seq": 1}, keep_previous=True)
    assert not prev.exists()  # nothing to keep yet
    write_json_atomic(target, {"seq": 2}, keep_previous=True)
    assert json.loads(prev.read_bytes()) == {"seq": 1}
    write_json_atomic(target, {"seq": 3}, keep_previous=True)
    assert json.loads(prev.read_bytes()) == {"seq": 2}
    assert read_json_with_fallback(target) == ({"seq": 3}, None)
    assert leftovers(tmp_path) == []


def test_keep_previous_never_leaves_the_file_missing(tmp_path: Path) -> None:
    """A plain reader (a tool, a test, a person) never finds no file while saves go on.

    Renaming the old file to NAME.prev before renaming the new one in left a moment with no
    NAME at all: a reader racing a save found nothing in most of its reads.
    """
    target = tmp_path / "registry.json"
    write_json_atomic(target, {"seq": 0}, keep_previous=True)
    done = threading.Event()
    missing = 0
    reads = 0

    def read_plainly() -> None:
        nonlocal missing, reads
        while not done.is_set():
            reads += 1
            try:
                json.loads(target.read_bytes())
            except FileNotFoundError:
                missing += 1

    reader = threading.Thread(target=read_plainly)
    reader.start()
    try:
        for seq in range(1, 400):
            write_json_atomic(target, {"seq": seq}, keep_previous=True)
    finally:
        done.set()
        reader.join(timeout=10)
    assert reads > 0
    assert missing == 0, f"{missing} of {reads} plain reads found no {target.name}"
    assert json.loads(previous_path(target).read_bytes()) == {"seq": 398}
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "damage", [b"", b'{"seq": 2', b"\x00" * 4096, b"\xff\xfe garbage", b"[" * 100_000]
)
def test_corrupt_newest_falls_back_to_previous(tmp_path: Path, damage: bytes) -> None:
    target = tmp_path / "snap.json"
    write_json_atomic(target, {"seq": 1}, keep_previous=True)
    write_json_atomic(target, {"seq": 2}, keep_previous=True)
    target.write_bytes(damage)  # a bad block, a hand edit
    value, warning = read_json_with_fallback(target)
    assert value == {"seq": 1}
    assert warning is not None
    assert str(target) in warning and "snap.json.prev" in warning and "unreadable" in warning


def test_missing_newest_falls_back_to_previous(tmp_path: Path) -> None:
    """The state between the two renames of a keep_previous write."""
    target = tmp_path / "snap.json"
    write_json_atomic(target, {"seq": 1}, keep_previous=True)
    write_json_atomic(target, {"seq": 2}, keep_previous=True)
    target.unlink()
    value, warning = read_json_with_fallback(target)
    assert value == {"seq": 1}
    assert warning is not None and "missing" in warning


def test_newest_is_a_directory(tmp_path: Path) -> None:
    target = tmp_path / "snap.json"
    write_json_atomic(previous_path(target), {"seq": 1})
    target.mkdir()
    value, warning = read_json_with_fallback(target)
    assert value == {"seq": 1} and warning


@pytest.mark.parametrize(
    ("newest", "previous"),
    [
        (None, None),
        (b"", b""),
        (b"{", None),
        (None, b"{"),
        (b"\x00", b"nope"),
        (b"[" * 50_000, b""),
    ],
)
def test_both_bad_is_unreadable(
    tmp_path: Path, newest: bytes | None, previous: bytes | None
) -> None:
    target = tmp_path / "snap.json"
    if newest is not None:
        target.write_bytes(newest)
    if previous is not None:
        previous_path(target).write_bytes(previous)
    with pytest.raises(Unreadable) as info:
        read_json_with_fallback(target)
    text = str(info.value)
    assert str(target) in text and "previous copy" in text
    if newest is None:
        assert "missing" in text


def test_leftover_temp_files_do_not_confuse_reader_or_writer(tmp_path: Path) -> None:
    target = tmp_path / "snap.json"
    write_json_atomic(target, {"seq": 1}, keep_previous=True)
    # Temp files of writers killed mid-write, one of them with this very pid.
    (tmp_path / ".snap.json.999999.tmp").write_bytes(b'{"seq": 99, "torn')
    (tmp_path / f".snap.json.{os.getpid()}.tmp").write_bytes(b"")
    assert read_json_with_fallback(target) == ({"seq": 1}, None)
    write_json_atomic(target, {"seq": 2}, keep_previous=True)
    assert read_json_with_fallback(target) == ({"seq": 2}, None)
    assert json.loads(previous_path(target).read_bytes()) == {"seq": 1}
    assert leftovers(tmp_path) == sorted([".snap.json.999999.tmp", f".snap.json.{os.getpid()}.tmp"])


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        write_atomic(tmp_path / "missing-dir" / "x", b"data")
    assert list(tmp_path.iterdir()) == []


def test_unserialisable_value_leaves_old_file(tmp_path: Path) -> None:
    target = tmp_path / "snap.json"
    write_json_atomic(target, {"seq": 1})
    with pytest.raises(TypeError):
        write_json_atomic(target, {"seq": object()})
    assert read_json_with_fallback(target) == ({"seq": 1}, None)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("keep_previous", [False, True])
def test_concurrent_writers_in_threads(tmp_path: Path, keep_previous: bool) -> None:
    """Threads of one process (trio.to_thread) writing one file never share a temp file."""
    target = tmp_path / "snap.json"
    write_json_atomic(target, make_snapshot(0, ""), keep_previous=True)
    write_json_atomic(target, make_snapshot(1, ""), keep_previous=True)
    errors: list[BaseException] = []
    done = threading.Event()

    def writer(tid: int) -> None:
        try:
            for i in range(25):
                payload = f"{tid}-{i}-" * random.choice([1, 1000, 20_000])
                write_json_atomic(
                    target, make_snapshot(tid * 1000 + i, payload), keep_previous=keep_previous
                )
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            while not done.is_set():
                check_snapshot(read_json_with_fallback(target)[0])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(2, 6)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    done.set()
    watcher.join(timeout=30)
    assert errors == []
    check_snapshot(read_json_with_fallback(target)[0])
    assert leftovers(tmp_path) == []


# --- SIGKILL mid-write -------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import hashlib, os, random, sys
    from pathlib import Path
    from agent_worker.atomic import read_json_with_fallback, write_json_atomic

    target = Path(sys.argv[1])
    seq = read_json_with_fallback(target)[0]["seq"]
    rng = random.Random(int(sys.argv[2]))
    sys.stdout.write("ready\\n")
    sys.stdout.flush()
    while True:
        seq += 1
        size = rng.choice([0, 10, 1000, 50_000, 300_000, 500_000])  # hex doubles it
        payload = os.urandom(size).hex()
        snapshot = {
            "seq": seq,
            "payload": payload,
            "sha": hashlib.sha256(f"{seq}:{payload}".encode()).hexdigest(),
        }
        write_json_atomic(target, snapshot, keep_previous=True)
    """
)


def test_sigkill_mid_write_never_tears(tmp_path: Path) -> None:
    target = tmp_path / "snap.json"
    write_json_atomic(target, make_snapshot(0, ""))
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rng = random.Random()
    kills, fallbacks, last_seq = 35, 0, 0
    for i in range(kills):
        child = subprocess.Popen(
            [sys.executable, str(script), str(target), str(rng.randrange(1 << 30))],
            stdout=subprocess.PIPE,
            env=env,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == b"ready\n", "writer failed to start"
            time.sleep(rng.uniform(0, 0.06))  # a random moment in the write loop
            child.send_signal(signal.SIGKILL)
            assert child.wait(timeout=10) == -signal.SIGKILL
        finally:
            if child.poll() is None:
                child.kill()
                child.wait()
            child.stdout.close()  # type: ignore[union-attr]
        # The fallback alone would hide a torn write: each file present must be whole.
        for path in (target, previous_path(target)):
            if path.exists():
                check_snapshot(json.loads(path.read_bytes()))
        value, warning = read_json_with_fallback(target)
        seq = check_snapshot(value)
        fallbacks += warning is not None
        # Each writer starts from what it read, so what a reader sees never goes back.
        assert seq >= last_seq, f"kill {i}: snapshot went back from {last_seq} to {seq}"
        last_seq = seq
    assert last_seq > 0, "the writer never completed a snapshot"
    # Temp files of killed writers may remain; they are dotfiles that no reader opens.
    for name in leftovers(tmp_path):
        assert name.startswith(".snap.json.") and name.endswith(".tmp")
    assert {p.name for p in tmp_path.iterdir()} - set(leftovers(tmp_path)) <= {
        "snap.json",
        "snap.json.prev",
        "writer.py",
    }
    print(
        f"{kills} kills, last seq {last_seq}, {fallbacks} fallbacks to .prev, "
        f"{len(leftovers(tmp_path))} leftover temp files"
    )


# --- full disk ------------------------------------------------------------------------------

FULL_DISK = textwrap.dedent(
    """
    import errno, json, resource, signal, sys
    from pathlib import Path
    from agent_worker.atomic import write_atomic

    target, keep = Path(sys.argv[1]), sys.argv[2] == "keep"
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so that write() fails with EFBIG
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        write_atomic(target, b"N" * 1_000_000, keep_previous=keep)
    except OSError as exc:
        print(json.dumps({"raised": "OSError", "errno": exc.errno}))
    else:
        print(json.dumps({"raised": None}))
    """
)


@pytest.mark.parametrize("keep", ["keep", "nokeep"])
def test_full_disk_keeps_old_file(tmp_path: Path, keep: str) -> None:
    target = tmp_path / "snap.json"
    write_atomic(target, b"old-1")
    write_atomic(target, b"old-2", keep_previous=True)
    script = tmp_path / "full_disk.py"
    script.write_text(FULL_DISK)
    proc = subprocess.run(
        [sys.executable, str(script), str(target), keep],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    import errno

    assert json.loads(proc.stdout) == {"raised": "OSError", "errno": errno.EFBIG}
    assert target.read_bytes() == b"old-2"
    assert previous_path(target).read_bytes() == b"old-1"
    assert leftovers(tmp_path) == [], "the failed write left its temp file behind"
