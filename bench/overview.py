"""The overview's figures: start-up to the first full frame, CPU while idle, redraw time.

    .venv/bin/python -m bench.overview [--sessions 20] [--idle 10] [--runs 5]

A throwaway home gets N generic sessions (each ``sleep``s, so nothing changes while we
measure); ``superv top`` runs in a tmux pane of 80x24, polled by capture-pane every 2 ms
from the exec until the header, every row that fits and the bottom line are shown
(start-up, tmux's spawn included); then its CPU time (utime+stime from /proc) over the idle
window; then, in another pane, the in-process time of a whole redraw of 100 rows.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.conftest import isolated_env
from tests.tmux_helpers import SUPERV, Tmux


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def overview_pid(tmux: Tmux, pane: str) -> int:
    return tmux.pane_pid(pane)


def draw_only(out: Path) -> None:
    """Time App.draw with 100 rows whose times all change (the worst redraw), in a real
    curses terminal (this runs in a tmux pane)."""
    import curses

    from supervisor.overview.app import App
    from supervisor.overview.model import LOCAL

    def body(screen: curses.window) -> None:
        app = App(screen)
        app.model.load(LOCAL, [{"name": f"s{i:03d}", "agent": "generic", "state": "running",
                                "activity": ["working", "idle", "needs_input"][i % 3],
                                "activity_since": time.time() - i, "attention": None,
                                "command": ["sleep", "1"]} for i in range(100)])
        times = []
        for i in range(200):
            app.model.selected = i % 100
            t0 = time.perf_counter()
            app.draw()
            times.append(time.perf_counter() - t0)
        times.sort()
        out.write_text(f"median {statistics.median(times)*1000:.2f} ms, "
                       f"p99 {times[int(len(times)*0.99)]*1000:.2f} ms over {len(times)} draws")

    curses.wrapper(body)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--idle", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--draw-only", metavar="OUT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.draw_only:
        draw_only(Path(args.draw_only))
        return
    with isolated_env() as env:
        for i in range(args.sessions):
            env.superv("start", f"s{i:03d}", "--", "sh", "-c", "echo up; exec sleep 100000", check=True)
        env.superv("ls", check=True)  # the supervisor is up and warm
        starts = []
        tmux = Tmux(env.env, env.root)
        try:
            import tests.tmux_helpers as th
            th.WIDTH, th.HEIGHT = 80, 24
            full = f"superv top: {args.sessions} sessions (live)"
            for run in range(args.runs):
                t0 = time.monotonic()
                pane = tmux.new_session(f"r{run}", f"exec {SUPERV} top")
                while time.monotonic() - t0 < 10:
                    screen = tmux.capture(pane)
                    # The header counts every row, the bottom line is the last drawn.
                    rows = screen.count(" generic ")
                    if full in screen and "q quit" in screen and rows >= min(args.sessions, 21):
                        break
                    time.sleep(0.002)
                starts.append(time.monotonic() - t0)
                if run < args.runs - 1:
                    tmux.keys(pane, "q")
            pid = overview_pid(tmux, pane)
            time.sleep(3)  # every shown time is past a minute boundary... or ticking each second
            before, t0 = cpu_seconds(pid), time.monotonic()
            samples = []
            while time.monotonic() - t0 < args.idle:
                time.sleep(1)
                samples.append(round((cpu_seconds(pid) - before) * 1000))
            print("cumulative idle CPU ms, each second:", samples)
            idle_cpu, idle_wall = cpu_seconds(pid) - before, time.monotonic() - t0
            out = env.root / "draw.txt"
            tmux.new_session("draw", f"exec {sys.executable} -m bench.overview --draw-only {out}")
            deadline = time.monotonic() + 30
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            draw = out.read_text().strip() if out.exists() else "no answer"
        finally:
            tmux.kill_server()
    print(f"sessions: {args.sessions}")
    print(f"start-up to first full frame (incl. tmux spawn): median {statistics.median(starts)*1000:.0f} ms, "
          f"max {max(starts)*1000:.0f} ms over {len(starts)} runs")
    print(f"redraw of the whole list (100 rows, 80x24), in-process: {draw}")
    print(f"idle CPU: {idle_cpu*1000:.0f} ms over {idle_wall:.1f} s")


if __name__ == "__main__":
    main()
