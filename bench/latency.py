"""Keystroke echo latency through an attached client.

The session runs ``cat`` on a raw PTY (``stty raw -echo``), so every keystroke travels
the whole way a key to a TUI agent travels: our terminal -> client -> host -> the
session's PTY -> cat -> back.  We write one letter to the client's terminal and time
until that letter is drawn on it (escape sequences a re-rendering client wraps around it
are skipped), one key at a time: with a short pause between keys, as a typist would, and
back to back (the next key as soon as the last one's echo is drawn).

CPU per key: the CPU time every process of the host spent (client, server, the ``cat``:
each carries the run's tag in its environment) over the paced keys, divided by the keys;
read from ``/proc/PID/task/*/schedstat`` (nanoseconds; ``stat``'s ticks are too coarse).
raw-pty's row is the ``cat`` alone: what a host adds is its row minus that one.

Verified: each key's own letter came back, in order.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

from bench.harness import (
    RUN_TAG,
    BenchError,
    Config,
    Result,
    Terminal,
    log,
    pids_with_env,
    visible_text,
)
from bench.hosts import ALL_HOSTS, Host, raw_session

SCRIPT = ["sh", "-c", "stty raw -echo; exec cat"]
LETTERS = b"abcdefgijkopqvwxyz"
WARMUP = 20
KEYS = 300
PAUSE = 0.002  # between keys, so that no key is batched with the previous one's echo


def wait_for_echo(term: Terminal, key: bytes, mark: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while key not in visible_text(bytes(term.buf[mark:])):
        left = deadline - time.monotonic()
        if left <= 0 or term.eof:
            raise BenchError(f"key {key!r} never came back; got {bytes(term.buf[mark:])[-200:]!r}")
        term.read_some(min(left, 0.5))


def cpu_seconds(tag: str) -> float:
    """CPU time so far of every live process whose environment carries ``tag``."""
    total = 0
    for pid in pids_with_env("BENCH_TAG", tag):
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            try:
                total += int(stat.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # the thread or process ended meanwhile
    return total / 1e9


def type_keys(term: Terminal, pause: float) -> list[float]:
    times = []
    for i in range(WARMUP + KEYS):
        key = LETTERS[i % len(LETTERS) : i % len(LETTERS) + 1]
        if pause:
            time.sleep(pause)
        mark = len(term.buf)
        t0 = time.perf_counter()
        term.write(key)
        wait_for_echo(term, key, mark, 5)
        times.append(time.perf_counter() - t0)
        # A re-rendering client may send the rest of its update later: let it land now,
        # outside the timed window, so the next key's window starts clean.
        term.read_some(0)
    return times[WARMUP:]


def measure(term: Terminal, tag: str) -> tuple[list[float], list[float], float]:
    """Echo times with pauses, back to back, and the CPU seconds per paced key."""
    # Until the first key echoes, the client may still be connecting: retype it.
    deadline = time.monotonic() + 20
    while True:
        mark = len(term.buf)
        term.write(b"z")
        try:
            wait_for_echo(term, b"z", mark, 0.5)
            break
        except BenchError:
            if time.monotonic() > deadline:
                raise
    term.drain(0.2)
    cpu0 = cpu_seconds(tag)
    paced = type_keys(term, PAUSE)
    cpu = (cpu_seconds(tag) - cpu0) / (WARMUP + KEYS)
    return paced, type_keys(term, 0), cpu


def run(cfg: Config, hosts: list[type[Host]]) -> list[Result]:
    results = []
    for host_name, host_cls in [("raw-pty", None), *[(h.name, h) for h in hosts if h in ALL_HOSTS]]:
        is_raw = host_cls is None
        rows = {
            name: Result(name, host_name, None, "s", baseline=is_raw)
            for name in ("echo p50", "echo p99", "echo p50 back-to-back", "echo p99 back-to-back")
        }
        # raw-pty's CPU is the cat alone, not a host: ratios are to the best peer.
        rows["cpu per key"] = Result("cpu per key", host_name, None, "s", comparable=not is_raw)
        results += rows.values()
        if host_cls is not None and (why := host_cls.unavailable()):
            for r in rows.values():
                r.skipped, r.note = True, why
            continue
        log(f"echo latency: {host_name}")
        try:
            if host_cls is None:
                with raw_session(SCRIPT, cfg.scratch) as term:
                    paced, back_to_back, cpu = measure(term, f"{RUN_TAG}-raw")
            else:
                with host_cls(cfg.scratch) as host:
                    host.start("lat", SCRIPT)
                    with host.attach("lat") as term:
                        paced, back_to_back, cpu = measure(term, host.tag)
        except (BenchError, OSError) as exc:
            for r in rows.values():
                r.ok, r.note = False, str(exc)[:300]
            continue
        for times, suffix in ((paced, ""), (back_to_back, " back-to-back")):
            q = statistics.quantiles(times, n=100, method="inclusive")
            p50, p99 = rows[f"echo p50{suffix}"], rows[f"echo p99{suffix}"]
            for r, value in ((p50, q[49]), (p99, q[98])):
                r.value = value
                r.verified = f"{len(times)} keys echoed in order"
            p50.detail = f"mean {statistics.fmean(times) * 1000:.2f} ms"
            p99.detail = f"max {max(times) * 1000:.2f} ms"
        rows["cpu per key"].value = cpu
        rows["cpu per key"].verified = f"{WARMUP + KEYS} paced keys"
    return results
