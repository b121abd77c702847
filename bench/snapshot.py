"""Snapshot cost (superv only): one persist of a session with a 1 MB and a 1 GB log.

A real worker's session prints N bytes and idles.  We then do, from outside, exactly the
file work of the worker's own persist (``Worker._persist_sync``): ``OutputLog.sync()``
(fdatasync of the log and its index) and ``Snapshot.write()`` (temp file, write, fsync,
rename, directory fsync), on the worker's newest snapshot.  The first persist after the
burst also flushes whatever part of the log the kernel had not written back yet, so it is
reported apart; the figure is the median of the next ones, the steady cost of a tick.

Verified: the snapshot read back afterwards is the one written (same ``seq``) and its
``log_end`` covers the whole log.
"""

from __future__ import annotations

import statistics
import time

from bench.harness import BenchError, Config, Result, fmt_bytes, lines_file, log, wait_for
from bench.hosts import Host, Superv

REPEATS = 20


def persist_times(directory) -> tuple[float, list[float], str]:
    from agent_worker import session_files
    from agent_worker.log import OutputLog
    from agent_worker.snapshot import read_snapshot

    snap, _ = read_snapshot(directory)
    output = OutputLog(directory, "snapshot")
    try:
        times = []
        for i in range(REPEATS + 1):
            # A distinct seq per write, so the read-back check below proves the last one won.
            snap = type(snap).from_json({**snap.to_json(), "seq": 10**9 + i, "log_end": output.end})
            t0 = time.perf_counter()
            output.sync()
            snap.write(directory)
            times.append(time.perf_counter() - t0)
    finally:
        output.close()
    back, _ = read_snapshot(directory)
    log_size = (directory / session_files.LOG).stat().st_size
    if back.seq != snap.seq or back.log_end < log_size:
        raise BenchError(f"snapshot read back has seq {back.seq}, log_end {back.log_end} (log {log_size})")
    return times[0], times[1:], f"read back: seq and log_end {fmt_bytes(back.log_end)} match"


def run(cfg: Config, hosts: list[type[Host]]) -> list[Result]:
    sizes = [1_000_000, 50_000_000] if cfg.quick else [1_000_000, 1_000_000_000]
    results = []
    if Superv not in hosts:
        return results
    for size in sizes:
        result = Result(f"snapshot, {fmt_bytes(size)} log", "superv", None, "s", comparable=False)
        results.append(result)
        if why := Superv.unavailable(attach=False):
            result.skipped, result.note = True, why
            continue
        path, _ = lines_file(cfg, size)
        log(f"snapshot, {fmt_bytes(size)} log (printing the log first)")
        try:
            with Superv(cfg.scratch) as host:
                done = host.dir / "printed"
                host.start("snap", ["sh", "-c", f"cat {path}; : > {done}; exec cat"])
                wait_for(done.exists, 30 + size / 300_000, "the session to print its log", 0.05)
                time.sleep(0.5)
                first, steady, verified = persist_times(host.session_dir("snap"))
        except (BenchError, OSError) as exc:
            result.ok, result.note = False, str(exc)[:300]
            continue
        result.value = statistics.median(steady)
        result.detail = f"first after the burst {first * 1000:.1f} ms; max {max(steady) * 1000:.1f} ms"
        result.verified = verified
    return results
