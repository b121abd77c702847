"""Where a typed key's CPU goes, thread by thread: superv and screen side by side.

    .venv/bin/python -m bench.cpu_breakdown

The echo bench (:mod:`bench.latency`) gives each host's CPU per key as one figure; this
splits it.  superv and screen each run ``cat`` on a raw PTY and are attached at once; the
keys go round them as in the bench's paced phase, with its aftermath, then an idle phase
as long.  For every thread of every process of each host (the ``cat`` included): its CPU
per key over the keys and their aftermath, less its CPU over the idle phase, and how
often it went to sleep (voluntary context switches: a wake-up each), from
``/proc/PID/task/TID/schedstat`` and ``status``.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

from bench.harness import pids_with_env
from bench.hosts import Screen, Superv
from bench.latency import AFTERMATH, KEYS, PAUSE, SCRIPT, WARMUP, Subject, in_turn

Threads = dict[tuple[int, str], tuple[str, int, int]]  # (pid, tid) -> (who, ns, sleeps)


def threads(tag: str) -> Threads:
    """Every thread of the processes carrying ``tag``: what it is, its CPU so far (ns) and
    how often it has gone to sleep."""
    found: Threads = {}
    for pid in pids_with_env("BENCH_TAG", tag):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        process = b" ".join(a.rsplit(b"/", 1)[-1] for a in argv[:4]).decode(errors="replace")
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                ns = int((task / "schedstat").read_text().split()[0])
                name = (task / "comm").read_text().strip()
                status = (task / "status").read_text().splitlines()
                sleeps = int(next(s for s in status if s.startswith("voluntary_ctxt")).split()[1])
            except (OSError, ValueError, IndexError, StopIteration):
                continue  # ended meanwhile
            found[(pid, task.name)] = (f"{process[:44]} [{name}]", ns, sleeps)
    return found


def spent(before: Threads, after: Threads) -> dict[tuple[int, str], tuple[str, int, int]]:
    return {key: (who, ns - before.get(key, (who, 0, 0))[1], sleeps - before.get(key, (who, 0, 0))[2])
            for key, (who, ns, sleeps) in after.items()}


def main() -> None:
    scratch = Path(tempfile.mkdtemp(prefix="superv-cpu-breakdown-"))
    with contextlib.ExitStack() as stack:
        subjects = []
        for host_cls in (Superv, Screen):
            if why := host_cls.unavailable():
                raise SystemExit(f"{host_cls.name}: {why}")
            host = stack.enter_context(host_cls(scratch))
            host.start("lat", SCRIPT)
            subject = Subject(host_cls.name, stack.enter_context(host.attach("lat")), host.tag)
            subject.ready()
            subjects.append(subject)
        time.sleep(AFTERMATH)  # the attach's own aftermath is not the keys'
        first = {s.tag: threads(s.tag) for s in subjects}
        began = time.monotonic()
        in_turn(subjects, WARMUP + KEYS, 1, PAUSE, "paced")
        time.sleep(AFTERMATH)
        took = time.monotonic() - began
        middle = {s.tag: threads(s.tag) for s in subjects}
        time.sleep(took)
        last = {s.tag: threads(s.tag) for s in subjects}
    keys = WARMUP + KEYS
    for s in subjects:
        busy, idle = spent(first[s.tag], middle[s.tag]), spent(middle[s.tag], last[s.tag])
        print(f"{s.name}: {keys} paced keys over {took:.1f} s; per key: CPU less idle, sleeps")
        total = 0.0
        for key, (who, ns, sleeps) in sorted(busy.items()):
            net = (ns - idle.get(key, (who, 0, 0))[1]) / keys / 1000
            total += net
            if ns or sleeps:
                print(f"  {who:58s} {net:7.1f} us  {sleeps / keys:5.2f}")
        print(f"  {'all':58s} {total:7.1f} us")


if __name__ == "__main__":
    main()
