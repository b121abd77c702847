"""What a user on a slow or broken link sees: superv, ``ssh -t box tmux attach`` and mosh.

A real OpenSSH ``sshd`` on 127.0.0.1 plays the box, with its own ``SUPERV_HOME`` and
``PATH`` given to every ssh session by ``SetEnv``.  Between it and the clients is a
:class:`bench.tcp_proxy.Link`: a token bucket at ``rate`` bytes/s in each direction and
50 ms one way (100 ms round trip), which can be cut and restored; mosh's UDP goes through
the same link.  Each client runs in a window of a "laptop" tmux server (120x40, no status
bar), so "on screen" means what ``tmux capture-pane`` shows there.  The box's session is an
interactive bash in each tool (prompt ``SVPROMPT>``), and the workloads are typed into it:

(a) **burst**: a program prints a 30 MB burst of numbered lines, then ``MARKER <time>``:
    the time from the marker being printed to it being on screen, and the payload bytes
    the link carried server to client meanwhile;
(b) **Ctrl-C**: ``yes`` runs for a few seconds once its output is on screen; then Ctrl-C is
    typed: the time until the prompt is the last line on screen; the median of ``--trials``
    runs (5 in a full run), since one run's figure (~0.15 s) moves by tens of milliseconds
    with the link's and the machine's timing, as much as the tools differ;
(c) **outage**: a TUI redraws the whole screen 20 times a second (each row carries the
    frame number, the top row its time); the link is cut for ``outage`` seconds and
    restored: the time from the restore until one whole frame drawn after the restore is
    on screen (rows 1 to 38: the bottom rows are where clients draw a status line).

Every wait has a cap (``--cap``); a figure that did not arrive within it is shown as
"> cap" and the client is restarted for the next scenario, as a user would give up and
attach again.  Quick mode (part of the suite) checks that each tool gets there at all,
at 1 MB/s with small sizes and a paced runaway; it says nothing about speed.

``python -m bench --only slowlink`` runs it with the defaults (60 s outage);
``python -m bench.slowlink --outage 20 --cap 120`` runs it alone with other lengths.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from bench.harness import (
    COLS,
    REPO,
    ROWS,
    RUN_TAG,
    BenchError,
    Config,
    Result,
    fmt_bytes,
    lines_file,
    log,
    scratch_dir,
    sweep,
    tagged_env,
)
from bench.hosts import Host, Superv, Tmux
from bench.reconnect import SSHD, Sshd
from bench.tcp_proxy import Link

DELAY = 0.05  # one way
ALIAS = "slowbox"  # the box through the link ("box" is the sshd's own port)
PROMPT = "SVPROMPT>"
POLL = 0.02  # capture-pane every 20 ms: the figures' resolution
MARKER = re.compile(r"MARKER (\d+\.\d+)")
FRAME_TOP = re.compile(r"FRAME (\d+) T=(\d+\.\d+)")
FRAME_ROW = re.compile(r"^F(\d+) ")
# Runaway output: `yes` as fast as the PTY takes it.  Quick mode, which checks only that
# Ctrl-C gets the prompt back, prints at most ~15 kB/s: a backlog that does not depend on
# the machine's load and crosses 1 MB/s at once.
RUNAWAY = "yes RUNAWAY-OUTPUT"
RUNAWAY_QUICK = (
    "python3 -c \"import time; [print('RUNAWAY-OUTPUT', flush=True) or time.sleep(0.001)"
    " for _ in iter(int, 1)]\""
)
CHECKED_ROWS = ROWS - 2  # the rows a frame must fill: not the bottom two (status lines)

# Prints a file in 1 MB writes, then the marker with the time it was printed.
BURST = """\
import os, sys, time
with open(sys.argv[1], "rb") as f:
    while chunk := f.read(1 << 20):
        view = memoryview(chunk)
        while view:
            view = view[os.write(1, view):]
os.write(1, b"MARKER %.6f\\n" % time.time())
"""

# A full-screen TUI redrawing every row 20 times a second until Ctrl-C.
TUI = f"""\
import os, signal, sys, time
rows, cols = {ROWS}, {COLS}
# On Ctrl-C: back to the main screen, cursor shown, screen cleared.  A terminal without an
# alternate screen (mosh's) would otherwise keep the last frame and draw the prompt
# wherever it restores the cursor, not on the last line.
signal.signal(signal.SIGINT, lambda *_: (os.write(1, b"\\x1b[?1049l\\x1b[?25h\\x1b[2J\\x1b[H"), os._exit(0)))
os.write(1, b"\\x1b[?1049h\\x1b[?25l")
pattern = bytes(range(33, 127)) * 4
n = 0
while True:
    n += 1
    top = b"FRAME %d T=%.6f" % (n, time.time())
    body = [b"F%07d r%02d " % (n, r) + pattern[(n + r) % 94:][: cols - 20] for r in range(1, rows - 1)]
    screen = [top.ljust(cols - 1)] + [row.ljust(cols - 1) for row in body] + [b" " * (cols - 1)]
    os.write(1, b"\\x1b[H" + b"\\r\\n".join(screen))
    time.sleep(0.05)
"""


@dataclass
class Params:
    rates: list[float]
    burst: int  # bytes
    runaway: float  # seconds of runaway output on screen before Ctrl-C
    outage: float  # seconds
    live: float  # seconds the TUI runs on screen before the cut
    cap: float  # longest wait for any one figure
    quick: bool
    trials: int = 1  # Ctrl-C runs, of which the median is the figure


def params_for(cfg: Config) -> Params:
    if cfg.quick:
        # Two Ctrl-C runs: the second starts from a cleared screen, as in a full run.
        return Params(
            rates=[1e6], burst=1_000_000, runaway=0.1, outage=1.0, live=0.3, cap=20.0, quick=True, trials=2
        )
    return Params(
        rates=[1e6, 2e5], burst=30_000_000, runaway=3.0, outage=60.0, live=1.0, cap=180.0, quick=False,
        trials=5,
    )


# ------------------------------------------------------------------------- the laptop


class Laptop:
    """A tmux server playing the user's terminal: one 120x40 window per client."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.sock = root / "laptop.sock"
        self.env = env
        self.tmux("new-session", "-d", "-s", "laptop", "-x", str(COLS), "-y", str(ROWS), "sleep", "1000000")
        self.tmux("set-option", "-g", "status", "off")
        # Keep a client's last words on screen if it exits: they explain a failure.
        self.tmux("set-option", "-g", "remain-on-exit", "on")

    def tmux(self, *args: str) -> str:
        proc = subprocess.run(
            ["tmux", "-S", str(self.sock), "-f", "/dev/null", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise BenchError(f"laptop tmux {args[0]}: {proc.stderr.strip()}")
        return proc.stdout

    def open(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        extra = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
        self.tmux("new-window", "-d", "-t", "laptop:", "-n", name, *extra, "--", *argv)

    def close_window(self, name: str) -> None:
        with contextlib.suppress(BenchError):
            self.tmux("kill-window", "-t", f"laptop:{name}")

    def screen(self, name: str) -> list[str]:
        return self.tmux("capture-pane", "-p", "-t", f"laptop:{name}").split("\n")[:ROWS]

    def keys(self, name: str, *keys: str, literal: bool = False) -> None:
        self.tmux("send-keys", "-t", f"laptop:{name}", *(["-l"] if literal else []), *keys)

    def type_line(self, name: str, text: str) -> None:
        self.keys(name, text, literal=True)
        self.keys(name, "Enter")

    def wait(self, name: str, check: Callable[[list[str]], object], cap: float) -> object:
        """Poll the window until ``check(screen)`` is true; its value, or None at the cap."""
        deadline = time.monotonic() + cap
        while True:
            screen = self.screen(name)
            if value := check(screen):
                return value
            if time.monotonic() > deadline:
                return None
            time.sleep(POLL)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            subprocess.run(
                ["tmux", "-S", str(self.sock), "kill-server"], env=self.env, capture_output=True, timeout=10
            )


def prompt_is_last(screen: list[str]) -> bool:
    filled = [row.rstrip() for row in screen if row.strip()]
    # endswith: mosh keeps no alternate screen, so a TUI's last row may precede the prompt.
    return bool(filled) and filled[-1].endswith(PROMPT)


def current_frame(after: float) -> Callable[[list[str]], bool]:
    """A check: one whole frame drawn at or after ``after`` (unix time) is on screen."""

    def check(screen: list[str]) -> bool:
        top = FRAME_TOP.search(screen[0]) if screen else None
        if not top or float(top.group(2)) < after:
            return False
        rows = [FRAME_ROW.match(row) for row in screen[1:CHECKED_ROWS]]
        return all(m and int(m.group(1)) == int(top.group(1)) for m in rows)

    return check


# -------------------------------------------------------------------------- the tools


class Tool:
    """One client kind over the link: how its box session starts and its client runs."""

    name = "?"
    label = ""

    def __init__(self, box: Box, laptop: Laptop) -> None:
        self.box = box
        self.laptop = laptop
        self.window = ""
        self.attempt = 0

    def start_session(self) -> None:
        raise NotImplementedError

    def client(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def attach(self) -> None:
        """Open the client in a new laptop window; return once the prompt is on screen."""
        self.attempt += 1
        self.window = f"{self.name}{self.attempt}"
        argv, env = self.client()
        self.laptop.open(self.window, argv, env)
        if not self.laptop.wait(self.window, lambda s: any(PROMPT in row for row in s), 60):
            history = self.laptop.tmux("capture-pane", "-p", "-S", "-", "-t", f"laptop:{self.window}")
            sshd_log = (self.box.root / "sshd.log").read_text(errors="replace")
            raise BenchError(
                f"{self.name}: no prompt 60 s after attaching; the client's terminal: "
                f"{' | '.join(r.strip() for r in history.splitlines() if r.strip())[-400:]}; "
                f"sshd: {sshd_log.strip()[-300:]}"
            )

    def reattach(self) -> None:
        self.laptop.close_window(self.window)
        self.attach()
        self.laptop.keys(self.window, "Enter")  # a fresh prompt at the bottom
        self.laptop.wait(self.window, prompt_is_last, 30)

    def tail(self) -> str:
        return " | ".join(row.rstrip() for row in self.laptop.screen(self.window) if row.strip())[-300:]


def session_shell() -> list[str]:
    return ["env", f"PS1={PROMPT} ", "bash", "--norc", "--noprofile", "-i"]


class SupervTool(Tool):
    name = "superv"
    label = "superv attach slowbox:NAME"

    def start_session(self) -> None:
        self.box.superv.start("slow", session_shell())

    def client(self) -> tuple[list[str], dict[str, str]]:
        env = {"SUPERV_SSH_CONFIG": str(self.box.config), "SUPERV_KNOWN_HOSTS": str(self.box.known_hosts)}
        return [*self.box.superv.superv(), "attach", f"{ALIAS}:slow"], env


class TmuxTool(Tool):
    name = "tmux"
    label = "ssh -t slowbox tmux attach"

    def start_session(self) -> None:
        self.box.tmux.start("slow", session_shell())
        # No status bar: the session gets the whole 120x40, as with the other tools.
        self.box.tmux.run([*self.box.tmux.tmux(), "set-option", "-g", "status", "off"])

    def client(self) -> tuple[list[str], dict[str, str]]:
        remote = shlex.join([*self.box.tmux.attach_argv("slow")])
        return ["ssh", "-F", str(self.box.config), "-t", ALIAS, remote], {}


class MoshTool(Tool):
    """mosh as its wrapper script runs it: ``mosh-server`` over ssh, then ``mosh-client``.

    Done by hand (as the ``mosh`` script does) so that the client's UDP goes to the
    link's UDP port rather than straight to the server's.
    """

    name = "mosh"
    label = "mosh (mosh-server over ssh, UDP)"
    connect: tuple[int, str] = (0, "")

    def start_session(self) -> None:
        server = ["mosh-server", "new", "-i", "127.0.0.1", "-c", "256", "-l", "LANG=C.UTF-8", "--"]
        proc = subprocess.run(
            ["ssh", "-F", str(self.box.config), ALIAS, shlex.join([*server, *session_shell()])],
            env=self.box.env,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        found = re.search(r"MOSH CONNECT (\d+) (\S+)", proc.stdout)
        if not found:
            raise BenchError(f"mosh-server did not start: {proc.stdout[-200:]} {proc.stderr[-200:]}")
        port = self.box.link.udp(("127.0.0.1", int(found.group(1))))
        self.connect = (port, found.group(2))

    def reattach(self) -> None:
        # A mosh-server talks to the one client that has its session's state: a new
        # client needs a new server, as with the mosh command.
        self.laptop.close_window(self.window)
        self.start_session()
        self.attach()

    def client(self) -> tuple[list[str], dict[str, str]]:
        port, key = self.connect
        return ["mosh-client", "127.0.0.1", str(port)], {"MOSH_KEY": key, "LANG": "C.UTF-8"}


TOOLS: list[type[Tool]] = [SupervTool, TmuxTool, MoshTool]


# ---------------------------------------------------------------------------- the box


class Box:
    """The loopback sshd, the link in front of it, and the client files that go through it."""

    def __init__(self, root: Path, superv: Superv, tmux: Tmux, link: Link) -> None:
        self.superv, self.tmux, self.link = superv, tmux, link
        self.env = superv.env
        self.root = root
        session_env = {
            "PATH": self.session_path(),
            "SUPERV_HOME": str(superv.home),
            "SUPERV_RUNTIME_DIR": str(superv.dir / "run"),
            "PYTHONPATH": str(REPO),
            "LANG": "C.UTF-8",
            "BENCH_RUN": RUN_TAG,
            "BENCH_TAG": superv.tag,
        }
        self.sshd = Sshd(root, superv.env, session_env)
        # What the laptop's ~/.ssh holds for the box reached through the link.
        self.sshd.add_alias(ALIAS, link.tcp(("127.0.0.1", self.sshd.port)))
        self.config, self.known_hosts = root / "ssh_config", root / "known_hosts"

    @staticmethod
    def session_path() -> str:
        """The box's and the laptop's PATH: this checkout's ``superv`` first."""
        return f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin"

    def root_file(self, name: str, text: str) -> Path:
        """A script the session runs, written once (the box and the laptop share a disk)."""
        path = self.root / name
        if not path.exists():
            path.write_text(text)
        return path

    def close(self) -> None:
        self.sshd.close()


# ------------------------------------------------------------------------ the scenarios


@dataclass
class Figure:
    value: float | None  # None: not there within the cap
    detail: str = ""
    verified: str = ""
    bytes_down: int | None = None


def burst(tool: Tool, p: Params, data: Path) -> Figure:
    laptop, link = tool.laptop, tool.box.link
    script = tool.box.root_file("burst.py", BURST)
    before = link.counts()
    laptop.type_line(tool.window, f"python3 {script} {data}")
    seen = laptop.wait(tool.window, lambda s: MARKER.search("\n".join(s)), p.cap)
    if not seen:
        return Figure(None, verified=f"marker not on screen within {p.cap:g} s")
    latency = time.time() - float(seen.group(1))  # type: ignore[union-attr]
    after = link.counts()
    down, up = after[0] - before[0], after[1] - before[1]
    laptop.wait(tool.window, prompt_is_last, p.cap)
    return Figure(
        latency,
        detail=f"{fmt_bytes(down)} down, {fmt_bytes(up)} up",
        verified="marker on screen",
        bytes_down=down,
    )


def ctrl_c(tool: Tool, p: Params) -> Figure:
    """The median of ``p.trials`` runs; a run over the cap ends the scenario."""
    times = []
    for trial in range(p.trials):
        if trial:  # the last run's output must not count as this one's
            tool.laptop.type_line(tool.window, "clear")
            if not tool.laptop.wait(tool.window, cleared, p.cap):
                return Figure(None, verified=f"screen not cleared within {p.cap:g} s")
        one = ctrl_c_once(tool, p)
        if one.value is None:
            return one
        times.append(one.value)
    if len(times) == 1:
        return Figure(times[0], verified="prompt last on screen")
    return Figure(
        statistics.median(times),
        detail=f"median of {len(times)}, {min(times):.2f} to {max(times):.2f} s",
        verified=f"prompt last on screen, {len(times)} of {len(times)} runs",
    )


def runaway_rows(screen: list[str]) -> int:
    return sum(r.rstrip() == "RUNAWAY-OUTPUT" for r in screen)


def cleared(screen: list[str]) -> bool:
    return prompt_is_last(screen) and not runaway_rows(screen)


def ctrl_c_once(tool: Tool, p: Params) -> Figure:
    laptop = tool.laptop
    laptop.type_line(tool.window, RUNAWAY_QUICK if p.quick else RUNAWAY)
    running = lambda s: runaway_rows(s) > 5  # noqa: E731
    if not laptop.wait(tool.window, running, p.cap):
        return Figure(None, verified=f"runaway output not on screen within {p.cap:g} s")
    time.sleep(p.runaway)  # the user watches it run away for a moment
    t0 = time.monotonic()
    laptop.keys(tool.window, "C-c")
    if not laptop.wait(tool.window, prompt_is_last, p.cap):
        return Figure(None, verified=f"prompt not back within {p.cap:g} s")
    return Figure(time.monotonic() - t0, verified="prompt last on screen")


def outage(tool: Tool, p: Params) -> Figure:
    laptop, link = tool.laptop, tool.box.link
    script = tool.box.root_file("tui.py", TUI)
    laptop.type_line(tool.window, f"python3 {script}")
    if not laptop.wait(tool.window, current_frame(time.time()), 30):
        return Figure(None, verified=f"the TUI not on screen within 30 s: {tool.tail()}")
    time.sleep(p.live)  # the TUI is live on screen for a while
    link.cut()
    try:
        time.sleep(p.outage)
    finally:
        link.restore()
    t0, back_at = time.monotonic(), time.time()
    found = laptop.wait(tool.window, current_frame(back_at), p.cap)
    value = time.monotonic() - t0 if found else None
    seen = tool.tail()
    laptop.keys(tool.window, "C-c")  # end the TUI
    if not laptop.wait(tool.window, prompt_is_last, min(p.cap, 60)):
        log(f"{tool.name}: no prompt after the TUI: {tool.tail()}")
    if value is None:
        return Figure(None, verified=f"no current frame within {p.cap:g} s; on screen: {seen[-200:]}")
    return Figure(value, verified="a whole new frame on screen")


# -------------------------------------------------------------------------------- run


def rate_name(rate: float) -> str:
    return f"{rate / 1e6:g} MB/s" if rate >= 1e6 else f"{rate / 1e3:g} kB/s"


def unavailable() -> str | None:
    for binary in ("tmux", "ssh", "ssh-keygen", "mosh-server", "mosh-client"):
        if not shutil.which(binary):
            return f"{binary} is not installed (run bench/setup as root)"
    if not Path(SSHD).exists():
        return f"{SSHD} is not installed"
    return Superv.unavailable()


def measure(cfg: Config, p: Params, tool_types: list[type[Tool]]) -> list[Result]:
    results: list[Result] = []
    data, _ = lines_file(cfg, p.burst)
    for rate in p.rates:
        where = f"{rate_name(rate)}, {DELAY * 2000:.0f} ms RTT"
        names = {
            "burst": f"slowlink {where}: {fmt_bytes(p.burst)} burst → marker",
            "bytes": f"slowlink {where}: bytes down for the burst",
            "ctrl_c": f"slowlink {where}: Ctrl-C on runaway → prompt",
            "outage": f"slowlink {where}: {p.outage:g} s outage, 20/s TUI → screen",
        }
        for tool_type in tool_types:
            log(f"slowlink {where}: {tool_type.label}")
            try:
                rows = one_tool(cfg, p, rate, tool_type, data)
            except (BenchError, OSError, subprocess.SubprocessError) as exc:
                results.append(
                    Result(f"slowlink {where}", tool_type.name, None, "s", ok=False, note=str(exc)[:400])
                )
                continue
            for key, figure in rows.items():
                results.append(to_result(names[key], tool_type, figure, p))
    return results


def one_tool(cfg: Config, p: Params, rate: float, tool_type: type[Tool], data: Path) -> dict[str, Figure]:
    """One tool's three scenarios on a fresh box and link: {row key: figure}."""
    with contextlib.ExitStack() as stack:
        superv = stack.enter_context(Superv(cfg.scratch))
        tmux = stack.enter_context(Tmux(cfg.scratch))
        link = stack.enter_context(Link(rate=rate, delay=DELAY))
        root = superv.dir / "ssh"
        root.mkdir()
        box = Box(root, superv, tmux, link)
        stack.callback(box.close)
        laptop = Laptop(superv.dir, tagged_env(superv.tag, {"PATH": box.session_path()}))
        stack.callback(laptop.close)
        tool = tool_type(box, laptop)
        tool.start_session()
        tool.attach()
        figures: dict[str, Figure] = {}
        b = burst(tool, p, data)
        figures["burst"] = b
        megabytes = None if b.bytes_down is None else b.bytes_down / 1e6
        figures["bytes"] = Figure(megabytes, verified=b.verified, detail=b.detail)
        if b.value is None:
            tool.reattach()
        figures["ctrl_c"] = c = ctrl_c(tool, p)
        if c.value is None:
            tool.reattach()
        figures["outage"] = outage(tool, p)
        return figures


def to_result(workload: str, tool_type: type[Tool], f: Figure, p: Params) -> Result:
    unit = "MB" if "bytes" in workload else "s"
    result = Result(workload, tool_type.name, f.value, unit, detail=f.detail, verified=f.verified)
    if f.value is None:
        # Over the cap is a figure in a full run ("slower than N s"); in quick mode, where
        # every tool must get there, it is a failure.
        result.ok = not p.quick
        result.verified, result.note = "", f"> {p.cap:g} s (cap): {f.verified}"
    return result


def run(cfg: Config, hosts: list[type[Host]], p: Params | None = None,
        tools: list[str] | None = None) -> list[Result]:
    p = p or params_for(cfg)
    if why := unavailable():
        return [Result("slowlink", "superv", None, "s", skipped=True, note=why)]
    tool_types = [t for t in TOOLS if t is MoshTool or t.name in {h.name for h in hosts}]
    if tools:
        tool_types = [t for t in tool_types if t.name in tools]
    return measure(cfg, p, tool_types)


def main(argv: list[str] | None = None) -> int:
    from bench.__main__ import add_ratios, table

    parser = argparse.ArgumentParser(prog="python -m bench.slowlink", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, correctness only")
    parser.add_argument("--outage", type=float, help="seconds the link is cut (default 60)")
    parser.add_argument("--cap", type=float, help="longest wait for one figure (default 180 s)")
    parser.add_argument("--runaway", type=float, help="seconds of runaway output before Ctrl-C (default 3)")
    parser.add_argument("--rates", type=float, nargs="+", help="bytes/s (default 1e6 2e5)")
    parser.add_argument("--trials", type=int, help="Ctrl-C runs per tool, the median taken (default 5)")
    parser.add_argument("--tools", nargs="+", choices=[t.name for t in TOOLS],
                        help="only these tools (default: all three), to iterate faster")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    # SIGTERM unwinds, so the sweep below stops everything the run started.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(1))
    began = time.monotonic()
    try:
        with scratch_dir() as scratch:
            p = params_for(Config(quick=args.quick, scratch=scratch))
            for name in ("outage", "cap", "runaway", "rates", "trials"):
                if getattr(args, name) is not None:
                    setattr(p, name, getattr(args, name))
            results = run(Config(quick=args.quick, scratch=scratch), [Superv, Tmux], p, args.tools)
    finally:
        sweep("BENCH_RUN", RUN_TAG)
    add_ratios(results)
    print(f"\nslowlink ({time.monotonic() - began:.0f}s; {p})\n")
    print(table(results))
    if args.json:
        rows = [asdict(r) for r in results]
        args.json.write_text(json.dumps({"params": asdict(p), "results": rows}, indent=1))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
