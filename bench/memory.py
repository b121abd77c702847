"""Memory of idle sessions: what each session costs its host, and what the supervisor costs.

N sessions each run ``sleep <unique number>``; once they are idle we find each agent by
its command line and take its parent as the process hosting it (a dtach master, the tmux
server, a SCREEN process, a superv worker).  From /proc/PID/smaps_rollup:

- per session: the hosts' summed PSS divided by N (PSS shares out pages that processes
  forked from one parent have in common, so it is the fair "cost of one more session"),
  with the mean RSS and USS of one host process beside it;
- superv's supervisor (``superv daemon``), at each N: PSS, RSS, USS.

Verified: every one of the N agents was running under a host process of the right kind.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

from bench.harness import BenchError, Config, Result, cmdline, log, memory_of, pids_with_env, ppid
from bench.hosts import ALL_HOSTS, Host, Superv

SETTLE = 1.0  # seconds: let hosts finish starting up (imports, first snapshot) before reading
MB = 1e6


def agent_pids(tokens: list[str]) -> dict[str, int]:
    wanted = set(tokens)
    found = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            argv = cmdline(int(entry))
            if len(argv) == 2 and argv[0].endswith("sleep") and argv[1] in wanted:
                found[argv[1]] = int(entry)
    return found


def host_of(pid: int) -> int:
    parent = ppid(pid)
    # A host that runs the command through a shell: the shell is part of the agent.
    while cmdline(parent)[:1] in (["sh"], ["/bin/sh"]):
        parent = ppid(parent)
    return parent


def measure(host: Host, n: int) -> tuple[list[int], list[int]]:
    """Start ``n`` idle sessions; return (host pids, supervisor pids)."""
    tokens = [f"{os.getpid()}{n:03d}{i:03d}" for i in range(n)]
    for i, token in enumerate(tokens):
        host.start(f"m{i}", ["sleep", token])
    deadline = time.monotonic() + 60
    while len(agents := agent_pids(tokens)) < n:
        if time.monotonic() > deadline:
            raise BenchError(f"only {len(agents)} of {n} sessions are running")
        time.sleep(0.05)
    time.sleep(SETTLE)
    hosts = sorted({host_of(pid) for pid in agents.values()})
    supervisors = []
    if isinstance(host, Superv):
        supervisors = [
            pid
            for pid in pids_with_env("SUPERV_HOME", str(host.home))
            if "daemon" in cmdline(pid) and pid not in hosts
        ]
    kinds = {Path(cmdline(pid)[0]).name if cmdline(pid) else "?" for pid in hosts}
    log(f"  {n} sessions -> {len(hosts)} host process(es): {', '.join(sorted(kinds))}")
    return hosts, supervisors


def run(cfg: Config, hosts: list[type[Host]]) -> list[Result]:
    counts = [1, 10] if cfg.quick else [1, 10, 100]
    results = []
    for n in counts:
        for host_cls in [h for h in hosts if h in ALL_HOSTS]:
            result = Result(f"memory/session, {n} idle", host_cls.name, None, "MB")
            results.append(result)
            if why := host_cls.unavailable(attach=False):
                result.skipped, result.note = True, why
                continue
            log(f"memory, {n} idle sessions: {host_cls.name}")
            sup = None
            if host_cls is Superv:
                sup = Result(f"memory supervisor, {n} idle", "superv", None, "MB", comparable=False)
                results.append(sup)
            try:
                with host_cls(cfg.scratch) as host:
                    host_pids, sup_pids = measure(host, n)
                    mems = [memory_of(pid) for pid in host_pids]
                    sup_mems = [memory_of(pid) for pid in sup_pids]
            except (BenchError, OSError) as exc:
                result.ok, result.note = False, str(exc)[:300]
                if sup:
                    sup.ok, sup.note = False, "see the row above"
                continue
            result.value = sum(m["pss"] for m in mems) / n / MB
            result.detail = (
                f"{len(mems)} proc: RSS {statistics.fmean(m['rss'] for m in mems) / MB:.1f}, "
                f"USS {statistics.fmean(m['uss'] for m in mems) / MB:.1f} MB each"
            )
            result.verified = f"{n} agents under {len(mems)} host process(es)"
            if sup is not None:
                if not sup_mems:
                    if Superv.has_cli():
                        sup.ok, sup.note = False, "no `superv daemon` process found"
                    else:
                        sup.skipped, sup.note = True, "workers started directly: no supervisor yet"
                    continue
                m = sup_mems[0]
                sup.value = m["pss"] / MB
                sup.detail = f"RSS {m['rss'] / MB:.1f}, USS {m['uss'] / MB:.1f} MB"
                sup.verified = f"{len(sup_mems)} daemon process(es)"
    return results
