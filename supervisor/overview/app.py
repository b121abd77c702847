"""The overview's curses loop: one ``ls``, then the events stream; keys; children for actions.

Nothing is polled: the loop sleeps in ``select`` on the terminal, the events socket and a
SIGWINCH pipe, with a timeout only when a shown time is about to change (``next_tick``)
or while the supervisor is away (to reconnect).  A child (``attach``) gets the terminal
whole: curses steps aside (``endwin``) and takes it back when the child exits.
"""

from __future__ import annotations

import contextlib
import curses
import os
import selectors
import signal
import socket
import subprocess
import sys
import time

from supervisor import control
from supervisor.durations import human_duration
from supervisor.errors import CliError
from supervisor.overview.hosts import HostFeed
from supervisor.overview.model import LOCAL, Command, Overview, Row, last_error
from supervisor.overview.stream import EventStream
from supervisor.visible import visible

SUPERV = [sys.executable, "-m", "supervisor"]
RECONNECT_EVERY = 1.0
ALT_SCREEN_CLEARED = b"\x1b[?1049h\x1b[H\x1b[2J"
MAIN_SCREEN_CLEARED = b"\x1b[?1049l\x1b[H\x1b[2J\x1b[?1049h"
# Colour is never alone: the word is always shown too (see model.Row.word).
COLOURS = {"needs_approval": (curses.COLOR_RED, curses.A_BOLD),
           "needs_input": (curses.COLOR_YELLOW, curses.A_BOLD),
           "done": (curses.COLOR_GREEN, curses.A_BOLD),
           "working": (curses.COLOR_CYAN, 0),
           "starting": (curses.COLOR_BLUE, 0),
           "ended": (-1, curses.A_DIM),
           "unknown": (-1, curses.A_DIM)}
KEYS = {curses.KEY_UP: "up", curses.KEY_DOWN: "down", curses.KEY_ENTER: "enter",
        curses.KEY_BACKSPACE: "backspace", "\n": "enter", "\r": "enter", "\x1b": "esc",
        "\x7f": "backspace", "\x08": "backspace"}


def host_name() -> str:
    return socket.gethostname().split(".")[0] or LOCAL


class App:
    def __init__(self, screen: curses.window) -> None:
        self.screen = screen
        self.model = Overview()
        self.selector = selectors.DefaultSelector()
        self.stream: EventStream | None = None
        self.retry_at = 0.0
        self.host = host_name()
        self.attrs: dict[str, int] = {}
        self.feeds = [HostFeed(host, SUPERV) for host in configured_hosts()]
        wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.wake_r = wake_r
        os.set_blocking(self.wake_w, False)

    # ---- set-up -----------------------------------------------------------------------
    def start(self) -> None:
        for feed in self.feeds:
            # First: each host's child (python, asyncssh, the SSH login, the remote superv)
            # takes longer than this box's first frame, which its low priority spares.
            self.model.problems[feed.host] = "connecting..."
            self.connect_feed(feed)
        curses.curs_set(0)
        self.screen.nodelay(True)
        self.screen.keypad(True)
        if curses.has_colors():
            curses.use_default_colors()
            for i, (word, (colour, extra)) in enumerate(COLOURS.items(), start=1):
                curses.init_pair(i, colour, -1)
                self.attrs[word] = curses.color_pair(i) | extra
        self.selector.register(sys.stdin.fileno(), selectors.EVENT_READ, "keys")
        self.selector.register(self.wake_r, selectors.EVENT_READ, "winch")
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGWINCH, lambda *_: None)
        self.connect()

    def connect_feed(self, feed: HostFeed) -> None:
        feed.connect()
        self.selector.register(feed.fileno(), selectors.EVENT_READ, feed)

    def feed_ready(self, feed: HostFeed) -> None:
        """A fleet host's child has something: its sessions, its events."""
        if not feed.live:
            return  # closed earlier in this same select round (its host went away)
        bodies = feed.read()
        if bodies is None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(feed.fileno())
            self.model.unreachable(feed.host, f"unreachable: {feed.ended()}")
            return
        for body in bodies:
            if body.get("event") == "sessions" and isinstance(body.get("sessions"), list):
                feed.listed()
                self.model.load(feed.host, body["sessions"])
            elif self.model.event(feed.host, body):
                feed.relist()

    def connect(self) -> None:
        """Open the events stream, then list: no event is lost between the two."""
        try:
            self.stream = EventStream()
            self.relist()
        except CliError as exc:
            self.disconnected(str(exc))
            return
        self.selector.register(self.stream.sock, selectors.EVENT_READ, "events")
        self.model.connected = True

    def disconnected(self, why: str) -> None:
        if self.stream is not None:
            with contextlib.suppress(KeyError, ValueError):
                self.selector.unregister(self.stream.sock)
            self.stream.close()
            self.stream = None
        self.model.connected = False
        self.model.message = f"supervisor unreachable ({why}); retrying"
        self.retry_at = time.monotonic() + RECONNECT_EVERY

    def relist(self) -> None:
        self.model.load(LOCAL, control.request("ls")["sessions"])

    # ---- the loop ---------------------------------------------------------------------
    def run(self) -> None:
        self.start()
        while True:
            self.draw()
            timeout = self.model.next_tick(time.time())
            retries = [f.retry_at for f in self.feeds if not f.live]
            if self.stream is None:
                retries.append(self.retry_at)
            if retries:
                wait = max(0.0, min(retries) - time.monotonic())
                timeout = wait if timeout is None else min(timeout, wait)
            relist = False
            for key, _ in self.selector.select(timeout):
                if key.data == "keys":
                    for pressed in self.read_keys():
                        command = self.model.key(pressed)
                        if command is not None and self.perform(command):
                            return
                elif key.data == "winch":
                    with contextlib.suppress(OSError):
                        os.read(self.wake_r, 512)
                    size = os.get_terminal_size(sys.stdout.fileno())
                    curses.resizeterm(size.lines, size.columns)
                elif isinstance(key.data, HostFeed):
                    self.feed_ready(key.data)
                elif key.data == "events" and self.stream is not None:
                    events = self.stream.read()
                    if events is None:
                        self.disconnected("the events stream closed")
                        continue
                    for body in events:
                        relist |= self.model.event(LOCAL, body)
            for feed in self.feeds:
                if not feed.live and time.monotonic() >= feed.retry_at:
                    self.connect_feed(feed)
            if self.stream is None and time.monotonic() >= self.retry_at:
                self.connect()
            elif relist:
                self.safe_relist()

    def safe_relist(self) -> None:
        for feed in self.feeds:
            feed.relist()
        try:
            self.relist()
        except CliError as exc:
            self.disconnected(str(exc))

    def read_keys(self) -> list[str]:
        keys: list[str] = []
        while True:
            try:
                key = self.screen.get_wch()
            except curses.error:
                return keys
            if key == curses.KEY_RESIZE:
                continue
            name = KEYS.get(key)
            if name is not None:
                keys.append(name)
            elif isinstance(key, str):
                keys.append(key)

    # ---- actions ----------------------------------------------------------------------
    def perform(self, command: Command) -> bool:
        """Carry out a key's command; True to quit."""
        if command.what == "quit":
            for feed in self.feeds:
                feed.close()
            return True
        if command.what == "attach":
            self.hand_over([*SUPERV, "attach", *command.args])
        elif command.what == "peek":
            done = self.child(["peek", *command.args])
            if done.returncode == 0:
                self.model.preview = done.stdout.splitlines()
                self.model.mode = "preview"
            else:
                self.model.message = last_error(done.stderr) or "peek failed"
        elif command.what == "approve":
            from supervisor import cli

            if command.args[0] not in cli.COMMANDS:
                self.model.message = f"{command.args[0]}: not available yet"
            else:
                self.report(command.args, self.child(list(command.args)))
        elif command.what == "run":
            self.model.message = f"{command.args[0]} {command.args[1]}..."
            self.draw()
            self.report(command.args, self.child(list(command.args)))
        return False

    def child(self, args: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*SUPERV, *args], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=120, check=False)

    def report(self, args: tuple[str, ...], done: subprocess.CompletedProcess[str]) -> None:
        what = f"{args[0]} {args[1]}"
        self.model.message = (f"{what}: done" if done.returncode == 0 else
                              f"{what}: {last_error(done.stderr) or f'exit {done.returncode}'}")
        self.safe_relist()

    def hand_over(self, argv: list[str]) -> None:
        """Give the terminal to a child (attach); the overview resumes when it exits."""
        curses.def_prog_mode()
        curses.endwin()
        # The child draws on the alternate screen too, cleared: when the overview quits,
        # the user's shell screen comes back as it was, without the session's residue.
        os.write(sys.stdout.fileno(), ALT_SCREEN_CLEARED)
        try:
            done = subprocess.run(argv, check=False)
            code = done.returncode
        finally:
            # The child's repaint may have reset the terminal to its main screen (ESC c):
            # clear what it left there, so quitting shows no session residue.
            os.write(sys.stdout.fileno(), MAIN_SCREEN_CLEARED)
            curses.reset_prog_mode()
            self.screen.clear()
        if code not in (0, None):
            self.model.message = f"attach exited {code}"
        # Events may have been dropped while we did not read them: list again.
        self.safe_relist()

    # ---- drawing ----------------------------------------------------------------------
    def draw(self) -> None:
        s = self.screen
        s.erase()
        lines, cols = s.getmaxyx()
        m = self.model
        state = "live" if m.connected else "supervisor unreachable"
        put(s, 0, 0, f"superv top: {len(m.rows)} sessions ({state})", cols, curses.A_BOLD)
        body = max(0, lines - 3)
        if m.mode == "preview":
            row = m.current()
            put(s, 1, 0, f"peek {row.target if row else ''} (any key returns)", cols, curses.A_REVERSE)
            for i, text in enumerate(m.preview[-body:] if len(m.preview) > body else m.preview):
                put(s, 2 + i, 0, text, cols)
        else:
            put(s, 1, 0, header(cols), cols, curses.A_UNDERLINE)
            top = max(0, m.selected - body + 1)
            now = time.time()
            for i, row in enumerate(m.rows[top:top + body]):
                selected = top + i == m.selected
                self.draw_row(2 + i, row, now, cols, selected)
            shown = min(len(m.rows) - top, body)
            for j, (host, why) in enumerate(sorted(m.problems.items())):
                if shown + j < body:
                    put(s, 2 + shown + j, 0, f"{host[:8]:<8} ({why})", cols, curses.A_DIM)
            if not m.rows and not m.problems:
                put(s, 2, 0, "no sessions: n starts one", cols, curses.A_DIM)
        put(s, lines - 1, 0, m.prompt(), cols, curses.A_REVERSE)
        s.refresh()

    def draw_row(self, y: int, row: Row, now: float, cols: int, selected: bool) -> None:
        age = human_duration(now - row.since if row.since is not None else None)
        base = curses.A_REVERSE if selected else 0
        shown = self.host if row.host == LOCAL else row.host
        left = f"{shown[:8]:<8} {row.name[:16]:<16} {row.agent[:7]:<7} "
        put(self.screen, y, 0, left, cols, base)
        put(self.screen, y, len(left), f"{row.word:<14}", cols,
            base | self.attrs.get(row.word, 0))
        put(self.screen, y, len(left) + 14, f" {age:>4} {row.detail()}", cols, base)


def configured_hosts() -> tuple[str, ...]:
    """The config file's hosts; a broken config is doctor's to explain, not a failed overview."""
    from supervisor import config

    try:
        return config.load().hosts
    except config.ConfigError:
        return ()


def header(cols: int) -> str:
    return f"{'HOST':<8} {'NAME':<16} {'AGENT':<7} {'ACTIVITY':<14} {'TIME':>4} ATTENTION / LAST LINE"


def put(screen: curses.window, y: int, x: int, text: str, cols: int, attr: int = 0) -> None:
    """Write what fits (curses raises on the last cell and past the edge)."""
    lines, _ = screen.getmaxyx()
    if y >= lines or x >= cols:
        return
    text = visible(text)[: cols - x]
    with contextlib.suppress(curses.error):
        screen.addstr(y, x, text, attr)


def run() -> int:
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise CliError("superv top needs a terminal (for a list: superv ls)", 2)
    os.environ.setdefault("ESCDELAY", "25")
    curses.wrapper(lambda screen: App(screen).run())
    return 0
