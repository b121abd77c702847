"""Keystroke echo latency through an attached client.

The session runs ``cat`` on a raw PTY (``stty raw -echo``), so every keystroke travels
the whole way a key to a TUI agent travels: our terminal -> client -> host -> the
session's PTY -> cat -> back.  We write one letter to the client's terminal and time
until that letter is drawn on it (escape sequences a re-rendering client wraps around it
are skipped), one key at a time with a short pause between keys, as a typist would.

Verified: each key's own letter came back, in order.
"""

from __future__ import annotations

import statistics
import time

from bench.harness import BenchError, Config, Result, Terminal, log, visible_text
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


def measure(term: Terminal) -> list[float]:
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
    times = []
    for i in range(WARMUP + KEYS):
        key = LETTERS[i % len(LETTERS) : i % len(LETTERS) + 1]
        time.sleep(PAUSE)
        mark = len(term.buf)
        t0 = time.perf_counter()
        term.write(key)
        wait_for_echo(term, key, mark, 5)
        times.append(time.perf_counter() - t0)
        # A re-rendering client may send the rest of its update later: let it land now,
        # outside the timed window, so the next key's window starts clean.
        term.read_some(0)
    return times[WARMUP:]


def run(cfg: Config, hosts: list[type[Host]]) -> list[Result]:
    results = []
    for host_name, host_cls in [("raw-pty", None), *[(h.name, h) for h in hosts if h in ALL_HOSTS]]:
        p50 = Result("echo p50", host_name, None, "s", baseline=host_cls is None)
        p99 = Result("echo p99", host_name, None, "s", baseline=host_cls is None)
        results += [p50, p99]
        if host_cls is not None and (why := host_cls.unavailable()):
            for r in (p50, p99):
                r.skipped, r.note = True, why
            continue
        log(f"echo latency: {host_name}")
        try:
            if host_cls is None:
                with raw_session(SCRIPT, cfg.scratch) as term:
                    times = measure(term)
            else:
                with host_cls(cfg.scratch) as host:
                    host.start("lat", SCRIPT)
                    with host.attach("lat") as term:
                        times = measure(term)
        except (BenchError, OSError) as exc:
            for r in (p50, p99):
                r.ok, r.note = False, str(exc)[:300]
            continue
        q = statistics.quantiles(times, n=100, method="inclusive")
        for r, value in ((p50, q[49]), (p99, q[98])):
            r.value = value
            r.verified = f"{len(times)} keys echoed in order"
        p50.detail = f"mean {statistics.fmean(times) * 1000:.2f} ms"
        p99.detail = f"max {max(times) * 1000:.2f} ms"
    return results
