"""Attach time: from running the attach command to the current screen on the terminal.

The session prints N bytes of numbered lines (that is its "log"), then a marker line, and
then waits in ``cat``.  Once it has printed everything and the host had time to take it
in, we run the attach command in a fresh terminal and stop the clock when the marker (the
last line of the current screen) has been drawn on it.

Verified: the marker and the last numbered line were drawn, i.e. the screen is current.
dtach keeps no screen at all, so it can never show them; its row is the time until the
client is interactive (a typed key echoes), marked as not comparable.
"""

from __future__ import annotations

import time

from bench.harness import RUN_ID, BenchError, Config, Result, fmt_bytes, lines_file, log, wait_for
from bench.hosts import ALL_HOSTS, Dtach, Host


def time_to_screen(host: Host, sid: str, marker: bytes, last_line: bytes) -> tuple[float, str]:
    t0 = time.monotonic()
    with host.attach(sid) as term:
        term.read_until(marker, 60, what="the last line of the screen")
        elapsed = time.monotonic() - t0
        term.read_some(0.05)
        if last_line not in term.buf:
            raise BenchError("the marker was drawn but the last numbered line was not")
        return elapsed, f"current screen drawn ({fmt_bytes(len(term.buf))} sent to the terminal)"


def time_to_echo(host: Host, sid: str) -> tuple[float, str]:
    t0 = time.monotonic()
    with host.attach(sid) as term:
        mark = 0
        while True:
            term.write(b"k")  # the session's PTY echoes it (cat runs in cooked mode)
            try:
                term.read_until(b"k", 0.01, start=mark)
                break
            except BenchError:
                if time.monotonic() - t0 > 30:
                    raise
                mark = len(term.buf)
        return time.monotonic() - t0, "no screen restore: time until a typed key echoes"


def run(cfg: Config, hosts: list[type[Host]]) -> list[Result]:
    sizes = [1_000_000, 50_000_000] if cfg.quick else [1_000_000, 1_000_000_000]
    results = []
    for size in sizes:
        path, count = lines_file(cfg, size)
        label = f"attach, {fmt_bytes(size)} log"
        for host_cls in [h for h in hosts if h in ALL_HOSTS]:
            result = Result(label, host_cls.name, None, "s")
            results.append(result)
            if why := host_cls.unavailable():
                result.skipped, result.note = True, why
                continue
            nonce = f"{RUN_ID}{len(results)}"
            marker = f"BENCH-SCREEN-{nonce}".encode()
            log(f"{label}: {host_cls.name} (printing the log first)")
            try:
                with host_cls(cfg.scratch) as host:
                    done = host.dir / "printed"
                    host.start(
                        "at",
                        ["sh", "-c", f"cat {path}; echo {marker.decode()}; : > {done}; exec cat"],
                    )
                    # A tenth of the slowest rate seen here, then time for the host to take
                    # in what is still in the PTY buffer.
                    wait_for(done.exists, 30 + size / 300_000, "the session to print its log", 0.05)
                    time.sleep(0.5)
                    if host_cls is Dtach:
                        result.value, result.verified = time_to_echo(host, "at")
                        result.comparable = False
                    else:
                        result.value, result.verified = time_to_screen(
                            host, "at", marker, b"%09d " % (count - 1)
                        )
            except (BenchError, OSError) as exc:
                result.ok, result.note = False, str(exc)[:300]
    return results
