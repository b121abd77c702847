"""``python -m bench [--quick|--full] [--only WORKLOAD...] [--hosts HOST...]``

Runs each workload on superv and its peers in one run and prints a table of absolute
figures and ratios.  Absolute times drift on shared machines; ratios taken in one run do
not drift as much, which is why everything runs side by side.

Exit status: 0 when every workload that ran was measured and its check passed (a host
that is not built yet is shown as skipped, not failed), 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import importlib
import json
import signal
import sys
import time
from dataclasses import asdict
from pathlib import Path

from bench.harness import RUN_TAG, Config, Result, scratch_dir, sweep
from bench.hosts import ALL_HOSTS

WORKLOADS = ["throughput", "latency", "attach", "memory", "snapshot", "reconnect", "slowlink"]
# Run only when named (--only): activity needs the Claude Code CLI that scripts/test installs;
# notify measures one path of its own.
OPTIONAL_WORKLOADS = ["activity", "notify"]
PR_SET_CHILD_SUBREAPER = 36
RESULTS_DIR = Path(__file__).resolve().parent / "results"


def add_ratios(results: list[Result]) -> None:
    """Ratio to the raw-PTY baseline where the workload has one, else to the best peer.

    The best peer is the lowest figure among dtach, tmux and screen rows that measured the
    same thing (``comparable``); superv is never its own reference.
    """
    groups: dict[str, list[Result]] = {}
    for r in results:
        groups.setdefault(r.workload, []).append(r)
    for rows in groups.values():
        measured = [r for r in rows if r.ok and r.value is not None and not r.skipped]
        base = [r for r in measured if r.baseline]
        peers = [r for r in measured if r.comparable and r.host in ("dtach", "tmux", "screen")]
        ref = base[0] if base else (min(peers, key=lambda r: r.value or 0) if peers else None)
        if ref is None or not ref.value:
            continue
        for r in measured:
            if r.comparable or r.baseline:
                r.ratio = (r.value or 0) / ref.value
                r.note = r.note or ("" if r is ref else f"vs {ref.host}")


def fmt_value(r: Result) -> str:
    if r.value is None:
        return "-"
    if r.unit == "s" and r.value < 1:
        return f"{r.value * 1000:.3g} ms"
    return f"{r.value:.3g} {r.unit}" if r.value < 1000 else f"{r.value:.0f} {r.unit}"


def table(results: list[Result]) -> str:
    header = ("workload", "host", "figure", "ratio", "detail", "verified / note")
    rows = [header]
    for r in results:
        status = "SKIPPED: " if r.skipped else ("" if r.ok else "FAILED: ")
        ratio = f"x{r.ratio:.2f}" if r.ratio is not None else ""
        rows.append(
            (
                r.workload,
                r.host,
                fmt_value(r),
                ratio,
                r.detail,
                status + "; ".join(x for x in (r.verified, r.note) if x),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header) - 1)]
    lines = []
    for n, row in enumerate(rows):
        cells = [cell.ljust(w) for cell, w in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 15)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[1])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="small sizes, under 2 minutes (CI)")
    mode.add_argument("--full", action="store_true", help="the sizes in the README (default)")
    parser.add_argument(
        "--only",
        nargs="+",
        choices=WORKLOADS + OPTIONAL_WORKLOADS,
        metavar="WORKLOAD",
        help=f"run only these ({', '.join(WORKLOADS + OPTIONAL_WORKLOADS)})",
    )
    parser.add_argument(
        "--hosts",
        nargs="+",
        choices=[h.name for h in ALL_HOSTS],
        metavar="HOST",
        help="limit to these hosts (the raw-PTY baseline always runs)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=RESULTS_DIR / "latest.json",
        help="where to write the results (default: bench/results/latest.json)",
    )
    args = parser.parse_args(argv)

    # SIGTERM/SIGHUP unwind like Ctrl-C, so every `finally` below stops what it started.
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    # Become the reaper of whatever our hosts daemonize (screen, the tmux server, superv):
    # they stay our descendants for the sweep, and leave no zombies under a PID 1 that
    # does not reap.
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGHUP, interrupt)

    hosts = [h for h in ALL_HOSTS if not args.hosts or h.name in args.hosts]
    results: list[Result] = []
    began = time.monotonic()
    try:
        with scratch_dir() as scratch:
            cfg = Config(quick=args.quick, scratch=scratch)
            for name in args.only or WORKLOADS:
                t0 = time.monotonic()
                print(f"== {name}", file=sys.stderr, flush=True)
                module = importlib.import_module(f"bench.{name}")
                try:
                    results.extend(module.run(cfg, hosts))
                finally:
                    # Whatever a workload left behind, nothing survives into the next one.
                    if leftover := sweep("BENCH_RUN", RUN_TAG):
                        print(f"   (swept {leftover} leftover processes)", file=sys.stderr)
                print(f"   {time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)
    finally:
        sweep("BENCH_RUN", RUN_TAG)
    add_ratios(results)
    mode_name = "quick" if args.quick else "full"
    print(
        f"\nsuperv bench ({mode_name}, {time.monotonic() - began:.0f}s). "
        "Every figure is lower-is-better; ratio = figure / reference "
        "(raw-pty where shown, else the best of dtach/tmux/screen).\n"
    )
    print(table(results))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"mode": mode_name, "results": [asdict(r) for r in results]}, indent=1))
    failed = [r for r in results if not r.ok]
    if failed:
        print(f"\n{len(failed)} measurement(s) failed", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
