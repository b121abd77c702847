"""The overview's figures: start-up to the first full frame, CPU while idle, redraw time.

    .venv/bin/python -m bench.overview [--sessions 100] [--hosts 2] [--idle 10] [--runs 5]

A throwaway home for this box and, with ``--hosts N``, N more "hosts": each a real sshd on
127.0.0.1 with its own SUPERV_HOME (as tests/sshd.py and the fleet tests run them), named
in the laptop's config file ``hosts`` and ssh config.  The sessions (generic, each prints
one line then ``sleep``s, so nothing changes while we measure) are spread evenly over this
box and the hosts.  ``superv top`` runs in a tmux pane of 80x24, polled by capture-pane
every 2 ms from the exec (tmux's spawn included) until the first frame is whole (the
header, this box's rows that fit and the bottom line), and until every host's rows have
come (the header counts all the sessions); then the CPU time (utime+stime from /proc) of
the overview and of its children (one ``superv events --json --lists HOST:`` per host,
which keeps its SSH connection) over the idle window; then, in another pane, the in-process time
of a whole redraw of 100 rows from three hosts.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# The fleet tests' sshd helpers import each other as top-level modules.
sys.path.insert(1, str(Path(__file__).resolve().parent.parent / "tests"))

from tests.conftest import SupervEnv, isolated_env
from tests.tmux_helpers import SUPERV, Tmux

HOST_NAMES = ("one", "two", "three", "four", "five", "six", "seven", "eight")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def overview_pid(tmux: Tmux, pane: str) -> int:
    return tmux.pane_pid(pane)


def tree_cpu(pid: int) -> dict[int, float]:
    """CPU seconds of ``pid`` and of each live descendant, by pid."""
    found, todo = {}, [pid]
    while todo:
        p = todo.pop()
        with contextlib.suppress(OSError, ValueError, IndexError):
            found[p] = cpu_seconds(p)
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def tree_cpu_since(pid: int, before: dict[int, float]) -> float:
    """CPU the tree used since ``before`` (a child that ended meanwhile is not counted)."""
    return sum(cpu - before.get(p, 0.0) for p, cpu in tree_cpu(pid).items())


@contextlib.contextmanager
def fleet(laptop: SupervEnv, n: int) -> Iterator[tuple[dict[str, str], list[SupervEnv]]]:
    """``n`` sshd "hosts" with their own homes, and the laptop's environment naming them."""
    from ssh_fixtures import session_env
    from sshd import SshServer
    from test_fleet import host_config

    with contextlib.ExitStack() as stack:
        boxes = [stack.enter_context(isolated_env()) for _ in range(n)]
        servers = []
        for box in boxes:
            server = SshServer(box.root / "sshd", session_env(box)).start()
            stack.callback(server.stop)
            servers.append(server)
        names = HOST_NAMES[:n]
        ssh_config = laptop.root / "ssh_config"
        ssh_config.write_text("".join(host_config(s, a) for a, s in zip(names, servers, strict=True)))
        config = laptop.root / "xdg" / "superv" / "config.toml"
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(f"hosts = {list(names)!r}\n".replace("'", '"'))
        home = laptop.root / "laptop"
        home.mkdir(exist_ok=True)
        env = {**laptop.env, "SUPERV_SSH_CONFIG": str(ssh_config),
               "XDG_CONFIG_HOME": str(config.parent.parent), "HOME": str(home)}
        env.pop("SSH_AUTH_SOCK", None)
        yield env, boxes


def draw_only(out: Path) -> None:
    """Time App.draw with 100 rows whose times all change (the worst redraw), in a real
    curses terminal (this runs in a tmux pane)."""
    import curses

    from supervisor.overview.app import App
    from supervisor.overview.model import LOCAL

    def body(screen: curses.window) -> None:
        app = App(screen)
        for h, host in enumerate((LOCAL, "one", "two")):  # 100 rows from three hosts
            app.model.load(host, [{"name": f"s{i:03d}", "agent": "generic", "state": "running",
                                   "activity": ["working", "idle", "needs_input"][i % 3],
                                   "activity_since": time.time() - i, "attention": None,
                                   "last_line": f"step {i}: running the tests",
                                   "command": ["sleep", "1"]} for i in range(h, 100, 3)])
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
    ap.add_argument("--sessions", type=int, default=100, help="in all, spread over the hosts")
    ap.add_argument("--hosts", type=int, default=2, help="sshd hosts besides this box (0-8)")
    ap.add_argument("--idle", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--draw-only", metavar="OUT", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.draw_only:
        draw_only(Path(args.draw_only))
        return
    with isolated_env() as laptop, fleet(laptop, args.hosts) as (env, boxes):
        homes = [laptop, *boxes]
        for i in range(args.sessions):
            homes[i % len(homes)].superv("start", f"s{i:03d}", "--", "sh", "-c",
                                         "echo up; exec sleep 100000", check=True)
        for home in homes:
            home.superv("ls", check=True)  # every supervisor is up and warm
        local = len(range(0, args.sessions, len(homes)))
        firsts, fulls = [], []
        tmux = Tmux(env, laptop.root)
        keep = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items()
                        if k in ("SUPERV_SSH_CONFIG", "XDG_CONFIG_HOME", "HOME"))
        try:
            import tests.tmux_helpers as th
            th.WIDTH, th.HEIGHT = 80, 24
            full = f"superv top: {args.sessions} sessions (live)"
            for run in range(args.runs):
                t0 = time.monotonic()
                pane = tmux.new_session(f"r{run}", f"exec env {keep} {SUPERV} top")
                first = None
                while time.monotonic() - t0 < 30:
                    screen = tmux.capture(pane)
                    # The bottom line is drawn last; a row shows its agent.
                    rows = screen.count(" generic ")
                    whole = "q quit" in screen and "superv top: " in screen
                    if first is None and whole and rows >= min(local, 21):
                        first = time.monotonic() - t0
                    if whole and full in screen and rows >= min(args.sessions, 21):
                        break
                    time.sleep(0.002)
                firsts.append(first if first is not None else float("nan"))
                fulls.append(time.monotonic() - t0)
                if run < args.runs - 1:
                    tmux.keys(pane, "q")
            pid = overview_pid(tmux, pane)
            # Well past start-up: only the hosts' children, idle; the shown times tick
            # each second.
            time.sleep(7)
            before, tree_before, t0 = cpu_seconds(pid), tree_cpu(pid), time.monotonic()
            samples = []
            while time.monotonic() - t0 < args.idle:
                time.sleep(1)
                samples.append(round((cpu_seconds(pid) - before) * 1000))
            print("cumulative idle CPU ms of the overview, each second:", samples)
            idle_cpu, idle_wall = cpu_seconds(pid) - before, time.monotonic() - t0
            tree_used = tree_cpu_since(pid, tree_before)
            out = laptop.root / "draw.txt"
            tmux.new_session("draw", f"exec {sys.executable} -m bench.overview --draw-only {out}")
            deadline = time.monotonic() + 30
            while not out.exists() and time.monotonic() < deadline:
                time.sleep(0.05)
            draw = out.read_text().strip() if out.exists() else "no answer"
        finally:
            tmux.kill_server()
    print(f"sessions: {args.sessions} on {len(homes)} hosts (this box and {args.hosts} over ssh)")
    print(f"start-up to the first whole frame (this box's rows; incl. tmux spawn): median "
          f"{statistics.median(firsts)*1000:.0f} ms, max {max(firsts)*1000:.0f} ms over {len(firsts)} runs")
    print(f"start-up to every host's rows: median {statistics.median(fulls)*1000:.0f} ms, "
          f"max {max(fulls)*1000:.0f} ms")
    print(f"redraw of the whole list (100 rows from 3 hosts, 80x24), in-process: {draw}")
    print(f"idle CPU over {idle_wall:.1f} s: the overview {idle_cpu*1000:.0f} ms, with its "
          f"children (one events stream per host) {tree_used*1000:.0f} ms")


if __name__ == "__main__":
    main()
