"""Keystroke echo latency through an attached client.

The session runs ``cat`` on a raw PTY (``stty raw -echo``), so every keystroke travels
the whole way a key to a TUI agent travels: our terminal -> client -> host -> the
session's PTY -> cat -> back.  We write one letter to the client's terminal and time
until that letter is drawn on it (escape sequences a re-rendering client wraps around it
are skipped), one key at a time: with a short pause between keys, as a typist would, and
back to back (the next key as soon as the last one's echo is drawn).

Interleaved: every host is attached at once and the keys go round them (paced: one key
each in turn; back to back: a block of :data:`BLOCK` keys each in turn, so that a host's
keys still follow each other at once), the first host of each round changing.  On a
shared machine the speed drifts by seconds (another tenant's burst); measured one host
after the other, a burst lands on one host's figures only, and the same build's p50 came
out anywhere between 0.9x and 2.5x the best peer's in eight runs; interleaved, every host
sees the same drift, and the ratios are what the run measured.

CPU per key: the CPU time every process of the host spent (client, server, the ``cat``:
each carries the run's tag in its environment) over the paced phase and the
:data:`AFTERMATH` after it, less what it spent over an idle phase as long, after that
(every host attached, no key: its timers, a snapshot), divided
by its keys; read from ``/proc/PID/task/*/schedstat`` (nanoseconds; ``stat``'s ticks are
too coarse).  raw-pty's row is the ``cat`` alone: what a host adds is its row minus that
one.

Verified: each key's own letter came back, in order.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable
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
from bench.hosts import ALL_HOSTS, Host, Superv, SupervPythonLoop, raw_session

SCRIPT = ["sh", "-c", "stty raw -echo; exec cat"]
LETTERS = b"abcdefgijkopqvwxyz"
WARMUP = 20
KEYS = 300
PAUSE = 0.002  # between keys, so that no key is batched with the previous one's echo


BLOCK = 20  # back-to-back keys a host gets in a row before the next host's turn
# What a host does after the last key is the keys' cost too, not its idle baseline: superv
# tells trio of output a quarter of a second after it pauses, its screen model and
# activity monitor look once the output is quiet, and a quiet session counts as idle 2 s
# after its last output.  With the idle phase straight after the keys, that was measured as idle and
# taken off the keys' CPU (superv's idle read 12-47 us a key, screen's 0).
AFTERMATH = 3.0


def wait_for_echo(term: Terminal, key: bytes, mark: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while key not in visible_text(bytes(term.buf[mark:])):
        left = deadline - time.monotonic()
        if left <= 0 or term.eof:
            raise BenchError(f"key {key!r} never came back; got {bytes(term.buf[mark:])[-200:]!r}")
        term.read_some(min(left, 0.5))


# Each thread's CPU as last read, by tag, then (pid, tid): a thread that ends (trio's idle
# worker threads do, 10 s after their last job) keeps counting what it spent, where a sum of
# the live threads alone fell, and an idle phase read less than nothing.
_cpu_seen: dict[str, dict[tuple[int, str], int]] = {}


def cpu_seconds(tag: str) -> float:
    """CPU time so far of every process whose environment carries ``tag``: its live
    threads as they are now, the ended ones as they were last read."""
    seen = _cpu_seen.setdefault(tag, {})
    for pid in pids_with_env("BENCH_TAG", tag):
        for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
            try:
                seen[(pid, stat.parent.name)] = int(stat.read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue  # the thread or process ended meanwhile
    return sum(seen.values()) / 1e9


class Subject:
    """One host's attached terminal in the interleaved run, and what it measured."""

    def __init__(self, name: str, term: Terminal, tag: str) -> None:
        self.name = name
        self.term = term
        self.tag = tag
        self.typed = 0
        self.paced: list[float] = []
        self.back_to_back: list[float] = []
        self.cpu_busy = 0.0  # CPU seconds over the paced phase
        self.cpu_idle = 0.0  # ... over the idle phase
        self.failure: str | None = None

    def ready(self) -> None:
        """Until the first key echoes, the client may still be connecting: retype it."""
        deadline = time.monotonic() + 20
        while True:
            mark = len(self.term.buf)
            self.term.write(b"z")
            try:
                wait_for_echo(self.term, b"z", mark, 0.5)
                break
            except BenchError:
                if time.monotonic() > deadline:
                    raise
        self.term.drain(0.2)

    def key(self, pause: float) -> float:
        """Type the next letter and time its echo."""
        key = LETTERS[self.typed % len(LETTERS) :][:1]
        self.typed += 1
        if pause:
            time.sleep(pause)
        mark = len(self.term.buf)
        t0 = time.perf_counter()
        self.term.write(key)
        wait_for_echo(self.term, key, mark, 5)
        took = time.perf_counter() - t0
        # A re-rendering client may send the rest of its update later: let it land now,
        # outside the timed window, so the next key's window starts clean.
        self.term.read_some(0)
        return took


def in_turn(subjects: list[Subject], rounds: int, per_turn: int, pause: float,
            into: str) -> None:
    """``rounds`` rounds of ``per_turn`` keys for each subject still measuring, the first
    subject of each round changing; the times after the first :data:`WARMUP` keys go to
    each subject's list ``into``."""
    for r in range(rounds):
        shift = r % len(subjects)
        for subject in subjects[shift:] + subjects[:shift]:
            for _ in range(per_turn):
                if subject.failure is not None:
                    break
                try:
                    took = subject.key(pause)
                except (BenchError, OSError) as exc:
                    subject.failure = str(exc)[:300]
                    break
                times = getattr(subject, into)
                if r * per_turn >= WARMUP:
                    times.append(took)


def cpu_over(subjects: list[Subject], phase: Callable[[], None]) -> tuple[list[float], float]:
    """Each subject's CPU seconds over ``phase``, and how long it took."""
    before = [cpu_seconds(s.tag) for s in subjects]
    t0 = time.monotonic()
    phase()
    took = time.monotonic() - t0
    return [cpu_seconds(s.tag) - b for s, b in zip(subjects, before, strict=True)], took


def measure(subjects: list[Subject]) -> None:
    """Paced keys and their aftermath (with the CPU they cost), an idle phase as long, keys
    back to back."""

    def paced() -> None:
        in_turn(subjects, WARMUP + KEYS, 1, PAUSE, "paced")
        time.sleep(AFTERMATH)

    busy, took = cpu_over(subjects, paced)
    idle, _ = cpu_over(subjects, lambda: time.sleep(took))
    for subject, b, i in zip(subjects, busy, idle, strict=True):
        subject.cpu_busy, subject.cpu_idle = b, i
    in_turn(subjects, -(-(WARMUP + KEYS) // BLOCK), BLOCK, 0, "back_to_back")


def measured(hosts: list[type[Host]]) -> list[type[Host]]:
    """The hosts to attach: with superv, superv's Python loop beside it (the lane's worth)."""
    chosen = [h for h in hosts if h in ALL_HOSTS]
    return [*chosen, SupervPythonLoop] if Superv in chosen else chosen


def attach_all(cfg: Config, hosts: list[type[Host]], stack: contextlib.ExitStack,
               rows: dict[str, dict[str, Result]]) -> list[Subject]:
    """Every available host's session, attached and echoing; the others' rows say why not."""
    subjects = []
    for host_name, host_cls in [("raw-pty", None), *[(h.name, h) for h in measured(hosts)]]:
        if host_cls is not None and (why := host_cls.unavailable()):
            for r in rows[host_name].values():
                r.skipped, r.note = True, why
            continue
        log(f"echo latency: attaching {host_name}")
        try:
            if host_cls is None:
                term, tag = stack.enter_context(raw_session(SCRIPT, cfg.scratch)), f"{RUN_TAG}-raw"
            else:
                host = stack.enter_context(host_cls(cfg.scratch))
                host.start("lat", SCRIPT)
                term, tag = stack.enter_context(host.attach("lat")), host.tag
            subject = Subject(host_name, term, tag)
            subject.ready()
        except (BenchError, OSError) as exc:
            for r in rows[host_name].values():
                r.ok, r.note = False, str(exc)[:300]
            continue
        subjects.append(subject)
    return subjects


def run(cfg: Config, hosts: list[type[Host]]) -> list[Result]:
    rows: dict[str, dict[str, Result]] = {}
    for host_name in ["raw-pty", *[h.name for h in measured(hosts)]]:
        is_raw = host_name == "raw-pty"
        rows[host_name] = {
            name: Result(name, host_name, None, "s", baseline=is_raw)
            for name in ("echo p50", "echo p99", "echo p50 back-to-back", "echo p99 back-to-back")
        }
        # raw-pty's CPU is the cat alone, not a host: ratios are to the best peer.
        rows[host_name]["cpu per key"] = Result("cpu per key", host_name, None, "s", comparable=not is_raw)
    with contextlib.ExitStack() as stack:
        subjects = attach_all(cfg, hosts, stack, rows)
        log(f"echo latency: {len(subjects)} hosts, keys in turn")
        measure(subjects)
    for subject in subjects:
        record(subject, rows[subject.name])
    return [r for host_rows in rows.values() for r in host_rows.values()]


def record(subject: Subject, rows: dict[str, Result]) -> None:
    if subject.failure is not None:
        for r in rows.values():
            r.ok, r.note = False, subject.failure
        return
    for times, suffix in ((subject.paced, ""), (subject.back_to_back, " back-to-back")):
        q = statistics.quantiles(times, n=100, method="inclusive")
        p50, p99 = rows[f"echo p50{suffix}"], rows[f"echo p99{suffix}"]
        for r, value in ((p50, q[49]), (p99, q[98])):
            r.value = value
            r.verified = f"{len(times)} keys echoed in order"
        p50.detail = f"mean {statistics.fmean(times) * 1000:.2f} ms"
        p99.detail = f"max {max(times) * 1000:.2f} ms"
    keys = WARMUP + KEYS
    cpu = rows["cpu per key"]
    cpu.value = max(0.0, subject.cpu_busy - subject.cpu_idle) / keys
    cpu.detail = f"idle {subject.cpu_idle / keys * 1e6:.1f} us/key less"
    cpu.verified = f"{keys} paced keys"
