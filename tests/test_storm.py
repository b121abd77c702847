"""A SIGKILL storm: the supervisor and workers killed at random while sessions print.

Afterwards every session runs again under exactly one worker, the supervisor's view
matches the processes, and every log, cut at its restart markers, is a clean prefix of
what each run of its agent printed: nothing torn, interleaved or duplicated.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
from pathlib import Path

import pytest
from conftest import SupervEnv, wait_until
from test_cli import alive, cmdline, lock_holder, log_bytes, script
from worker_helpers import PATTERN_FN, cooked, pattern

from agent_worker.procfs import pids_with_env

SESSIONS = ("s1", "s2", "s3")
ROUNDS = 16
# Numbered lines, a few hundred a second, forever.
PRINTER = PATTERN_FN + (
    "import sys, time\n"
    "i = 0\n"
    "while True:\n"
    "    sys.stdout.buffer.write(pattern(20, i))\n"
    "    sys.stdout.flush()\n"
    "    i += 20\n"
    "    time.sleep(0.02)\n"
)
MARKER = re.compile(rb"\r\n\x1b\[0m\[superv: [^\]\r\n]*\]\r\n")


def listing(senv: SupervEnv) -> dict[str, dict]:
    proc = senv.superv("ls", "--json", timeout=30)
    assert proc.returncode == 0, f"ls failed during the storm: {proc.stderr}"
    return {s["name"]: s for s in json.loads(proc.stdout)}


def workers_of(senv: SupervEnv, name: str) -> list[int]:
    """Live worker processes serving ``name`` (forked ones are named sv:NAME)."""
    found = []
    for pid in pids_with_env("SUPERV_HOME", str(senv.home)):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        args = b"\0".join(cmdline(pid))
        forked = comm == f"sv:{name}"[:15]
        execd = b"agent_worker\0" + name.encode() + b"\0" in args
        if (forked or execd) and alive(pid):
            found.append(pid)
    return found


@pytest.mark.timeout(150)
def test_sigkill_storm_of_supervisor_and_workers(superv_env: SupervEnv) -> None:
    senv = superv_env
    senv.env.update(SUPERV_RESTART_BACKOFF="0.1", SUPERV_RESTART_LIMIT="1000")
    argv = script(senv, "printer", PRINTER)
    for name in SESSIONS:
        senv.superv("start", "--restart", "always", name, "--", *argv, check=True)
    rng = random.Random(20261122)
    killed: dict[str, set[int]] = {name: set() for name in SESSIONS}  # workers killed, by session
    for _ in range(ROUNDS):
        supervisor = lock_holder(senv)
        workers = {info["worker_pid"]: name for name, info in listing(senv).items() if info["worker_pid"]}
        victim = rng.choice([supervisor, *workers])
        if victim in workers and alive(victim):
            killed[workers[victim]].add(victim)
        os.kill(victim, signal.SIGKILL)
        wait_until(lambda victim=victim: not alive(victim), message=f"{victim} to die")
        if rng.random() < 0.5:
            listing(senv)  # the next command at once (restarting the supervisor if it died)
        else:
            # ...or a little later, after restarts may have begun.
            wait_until(lambda: all(workers_of(senv, n) for n in SESSIONS), timeout=20,
                       message="every session to have a worker again")

    def settled() -> bool:
        info = listing(senv)
        return all(
            info[n]["state"] == "running" and workers_of(senv, n) == [info[n]["worker_pid"]]
            for n in SESSIONS
        )

    try:
        wait_until(settled, timeout=30, message="one running worker per session, as listed")
    except AssertionError:
        info = listing(senv)
        detail = {n: (info[n]["state"], info[n]["worker_pid"], workers_of(senv, n)) for n in SESSIONS}
        raise AssertionError(f"not settled: {detail}") from None
    daemons = [p for p in pids_with_env("SUPERV_HOME", str(senv.home))
               if b"supervisor\0daemon" in b"\0".join(cmdline(p)) and alive(p)]
    assert daemons == [lock_holder(senv)]

    for name in SESSIONS:
        # Running again means printing again: the run after the last marker has output.
        wait_until(lambda name=name: MARKER.split(log_bytes(senv, name))[-1], timeout=20,
                   message=f"{name}'s agent to print after the storm")
        senv.superv("stop", "--grace", "2", name, check=True)
        runs = MARKER.split(log_bytes(senv, name))
        # Every worker killed meant a restart, and every restart starts with a marker line.
        # (More runs than that are possible: a supervisor killed while starting a worker.)
        assert len(runs) >= len(killed[name]) + 1, (
            f"{name}: {len(killed[name])} of its workers were killed, but its log has "
            f"{len(runs) - 1} restart markers")
        for number, run in enumerate(runs):
            expected = cooked(pattern(len(run) // 100 + 2))
            assert run == expected[: len(run)], (
                f"{name}: run {number} of {len(runs)} is not a prefix of what its agent "
                f"printed; first 60 bytes: {run[:60]!r}"
            )
