"""Fault suite: a crash at every step of the durable writes, then a "reboot".

The product's own durable writes (a snapshot of ``state.json``, the supervisor's
``registry.json``, a log append and its sync) run in a subprocess under ``strace``, which
kills the process with SIGKILL on entering the N-th file syscall of the write (the syscall
itself is not made), for every N.  Then the files are read back with the product's own
readers, as after a reboot: each must read as the old version or the new one, the log as
the old log plus a prefix of the new output; never torn, empty or unreadable.

A kill leaves the page cache intact, which a power loss does not; so the same traces are
also checked for the order that makes a power loss safe: the new data fsynced before the
rename that makes it visible, and the directory fsynced after it, before the write returns.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import fault_report
import pytest
from conftest import REPO

from agent_worker.log import LogReader, OutputLog

pytestmark = pytest.mark.timeout(300)

if shutil.which("strace") is None:
    pytest.fail("the power-loss tests need strace (apt-get install strace)", pytrace=False)

# The file syscalls a crash is put before; every other syscall runs.
STEPS = {"openat", "write", "pwrite64", "fsync", "fdatasync", "close", "rename", "renameat",
         "renameat2", "link", "linkat", "unlink", "unlinkat", "ftruncate"}
SYSCALL = re.compile(r"^(\w+)\((.*)\)\s+=\s+(-?\d+)")

# Runs one durable write of the product's, between two times() calls that mark it in the
# trace.  argv: what to write, the session directory / SUPERV_HOME, the version (1 or 2).
WRITER = textwrap.dedent("""
    import os, sys
    what, where, version = sys.argv[1], sys.argv[2], int(sys.argv[3])
    from pathlib import Path
    os.environ["SUPERV_HOME"] = where
    from agent_worker.log import OutputLog
    from agent_worker.snapshot import Snapshot
    from supervisor import lifecycle
    from supervisor.registry import Entry, save_entries

    def snapshot(version):
        return Snapshot(name="s", worker_pid=100 * version, worker_start=version, agent_pid=None,
                        argv=["x" * 1000 * version], cwd="/", started_at=1.0, state="running",
                        seq=version)

    def entries(version):
        return {f"s{i}": Entry(f"s{i}", worker_pid=100 * version) for i in range(5 * version)}

    log = OutputLog(Path(where)) if what == "log" else None
    os.times()  # the write begins
    if what == "snapshot":
        snapshot(version).write(Path(where))
    elif what == "registry":
        save_entries(entries(version))
    else:
        log.append(bytes([48 + version]) * (100_000 * version))
        log.sync()
    os.times()  # the write is done
""")


def run_writer(what: str, where: Path, version: int, *, kill_at: tuple[str, int] | None = None,
               trace: Path | None = None) -> int:
    argv = ["strace", "-qq", "-o", str(trace or os.devnull)]
    if kill_at:
        name, nth = kill_at
        argv += ["-e", f"inject={name}:error=EIO:signal=KILL:when={nth}"]
    argv += [sys.executable, "-c", WRITER, what, str(where), str(version)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(argv, env=env, capture_output=True, timeout=60).returncode


def steps_of(trace: Path) -> tuple[list[tuple[str, int]], list[tuple[str, str, int]]]:
    """The file syscalls between the two marks, each as (name, its ordinal among the calls
    of that name since the start), and every syscall between the marks as (name, args, ret)."""
    seen: dict[str, int] = {}
    marks = 0
    steps, calls = [], []
    for line in trace.read_text().splitlines():
        m = SYSCALL.match(line)
        if not m:
            continue
        name, args, ret = m.group(1), m.group(2), int(m.group(3))
        seen[name] = seen.get(name, 0) + 1
        if name == "times":
            marks += 1
            continue
        if marks == 1:
            calls.append((name, args, ret))
            if name in STEPS:
                steps.append((name, seen[name]))
    assert marks == 2, f"the write's marks are not in the trace {trace}"
    return steps, calls


def assert_power_safe_order(calls: list[tuple[str, str, int]], target: str) -> None:
    """The temp file is fsynced before it is renamed over ``target``; the directory after."""
    tmp_fd = next(ret for name, args, ret in calls if name == "openat" and ".tmp" in args)
    renames = [i for i, (name, args, _) in enumerate(calls)
               if name.startswith("rename") and args.rstrip('"').endswith(f'/{target}"'.rstrip('"'))]
    assert renames, f"no rename over {target}: {calls}"
    synced = [i for i, (name, args, _) in enumerate(calls) if name in ("fsync", "fdatasync")
              and args == str(tmp_fd)]
    assert synced and synced[0] < renames[-1], f"{target} renamed before its data was fsynced"
    assert any(name == "fsync" for name, _, _ in calls[renames[-1] + 1 :]), (
        f"the directory is not fsynced after {target} is renamed into it")


def crash_at_every_step(what: str, make_old: Callable[[Path], None], read_back: Callable[..., None],
                        tmp: Path) -> int:
    """Kill the write of version 2 over version 1 at each of its steps; check each reboot."""
    model = tmp / "model"
    make_old(model)
    trace = tmp / f"{what}.trace"
    assert run_writer(what, model, 2, trace=trace) == 0
    steps, calls = steps_of(trace)
    assert len(steps) >= 3, steps
    if what != "log":
        assert_power_safe_order(calls, "state.json" if what == "snapshot" else "registry.json")
    else:
        writes = [i for i, (n, _, _) in enumerate(calls) if n == "write"]
        assert writes and any(n == "fdatasync" for n, _, _ in calls[writes[-1]:]), \
            "the log is not fdatasynced after the append"
    read_back(model, complete=True)
    for step, kill_at in enumerate(steps):
        where = tmp / f"crash-{step}"
        make_old(where)
        code = run_writer(what, where, 2, kill_at=kill_at)
        assert code != 0, f"the writer was not killed at {kill_at}"
        read_back(where, complete=False, step=f"killed before {kill_at[0]} #{kill_at[1]}")
    fault_report.note(f"power loss in the {what} write: killed at each of its {len(steps)} steps "
                      "(then read back: never torn or empty)")
    fault_report.add("faults injected", len(steps))
    return len(steps)


def writer_made(what: str, where: Path, version: int) -> None:
    where.mkdir(parents=True, exist_ok=True)
    assert run_writer(what, where, version) == 0


def test_snapshot_write_survives_a_crash_at_every_step(tmp_path: Path) -> None:
    from agent_worker.snapshot import read_snapshot

    def read_back(where: Path, *, complete: bool, step: str = "") -> None:
        snap, _ = read_snapshot(where)  # raises Unreadable if torn or empty
        assert snap.seq in ((2,) if complete else (1, 2)), step
        assert snap.worker_pid == 100 * snap.seq and snap.argv == ["x" * 1000 * snap.seq], step

    crash_at_every_step("snapshot", lambda where: writer_made("snapshot", where, 1), read_back,
                        tmp_path)


def test_registry_write_survives_a_crash_at_every_step(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from agent_worker.atomic import read_json_with_fallback

    def read_back(where: Path, *, complete: bool, step: str = "") -> None:
        data, _ = read_json_with_fallback(where / "registry.json")  # Unreadable if torn
        pids = {e["worker_pid"] for e in data["sessions"]}
        assert len(data["sessions"]) in ((10,) if complete else (5, 10)), step
        assert pids == {20 * len(data["sessions"])}, f"{step}: a mixed registry {pids}"

    crash_at_every_step("registry", lambda where: writer_made("registry", where, 1), read_back,
                        tmp_path)


def test_log_append_survives_a_crash_at_every_step(tmp_path: Path) -> None:
    old = b"1" * 100_000

    def make_old(where: Path) -> None:
        where.mkdir(parents=True)
        log = OutputLog(where, "snapshot")
        log.append(old)
        log.sync()
        log.close()

    def read_back(where: Path, *, complete: bool, step: str = "") -> None:
        data = (where / "output.log").read_bytes()
        assert data.startswith(old), f"{step}: the old log is damaged"
        assert data[len(old):] == b"2" * (len(data) - len(old)), f"{step}: torn new output"
        if complete:
            assert len(data) == len(old) + 200_000
        reader = LogReader(where)
        offsets = [offset for offset, _ in reader.index()]
        assert offsets == sorted(offsets) and all(o <= len(data) for o in offsets), step
        reader.close()
        resumed = OutputLog(where, "never")  # what a resumed worker does: append after it
        assert resumed.end == len(data)
        resumed.close()

    crash_at_every_step("log", make_old, read_back, tmp_path)


def test_the_crash_injector_can_tell_a_torn_write(tmp_path: Path) -> None:
    """The harness itself: a write made the naive way (truncate, then write in two parts)
    and killed between its parts reads back torn, and the check above would say so."""
    target = tmp_path / "naive.json"
    target.write_text(json.dumps({"v": 1}))
    naive = ("import os, sys\nos.times()\nfd = os.open(sys.argv[1], os.O_WRONLY | os.O_TRUNC)\n"
             "os.write(fd, b'{\"v\": ')\nos.write(fd, b'2}')\nos.times()\n")
    trace = tmp_path / "naive.trace"
    subprocess.run(["strace", "-qq", "-o", str(trace), sys.executable, "-c", naive, str(target)],
                   check=True, capture_output=True)
    steps, _ = steps_of(trace)
    second_write = [s for s in steps if s[0] == "write"][1]
    target.write_text(json.dumps({"v": 1}))
    subprocess.run(["strace", "-qq", "-o", os.devnull, "-e",
                    f"inject=write:error=EIO:signal=KILL:when={second_write[1]}",
                    sys.executable, "-c", naive, str(target)], capture_output=True)
    with pytest.raises(ValueError):
        json.loads(target.read_text())
