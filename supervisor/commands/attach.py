"""``superv attach [-r] [--tail N|--from-start] [USER@]HOST:NAME | NAME``

Local attach talks to the session's worker directly (plain sockets and ``selectors``, so
it starts fast and works while the supervisor is down).  ``HOST:NAME`` goes over SSH
(:mod:`supervisor.remote_attach`); ``--stdio`` is the far end of that: a byte bridge
between the SSH channel and the worker's socket.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import signal
import socket
import sys
import time

from agent_worker import protocol as p
from agent_worker import settings
from agent_worker.client import RECV_SIZE, ConnectionClosed, SessionClient
from agent_worker.conversation import (
    Closed,
    Exited,
    Failed,
    Notice,
    Refused,
    Skipped,
    Violation,
)
from supervisor import status_line, terminal
from supervisor.errors import CliError
from supervisor.notify import attach_notices, message
from supervisor.notify.attach_notices import Notices
from supervisor.present import skip_words
from supervisor.sessions import NotRunning, checked_name, open_worker
from supervisor.status_line import Kind, StatusLine


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("attach", help="attach this terminal to a session")
    parser.add_argument("-r", "--read-only", action="store_true", help="watch without typing")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--tail", type=int, metavar="N", help="replay the last N lines first")
    where.add_argument("--from-start", action="store_true", help="replay everything it printed")
    parser.add_argument("--exact", action="store_true",
                        help="every byte, in order, even far behind (never skip to the screen)")
    default_key = settings.current().detach_key
    parser.add_argument("--detach-key", default=default_key,
                        help="key that detaches (default ^\\, or $SUPERV_DETACH_KEY)")
    parser.add_argument("--remote-command", metavar="CMD",
                        help="how to run superv on the remote box (HOST:NAME form)")
    parser.add_argument("--stdio", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("target", metavar="[USER@]HOST:NAME | NAME")
    return parser


def start_mode(args: argparse.Namespace) -> tuple[p.Start, int]:
    if args.tail is not None:
        if not 0 <= args.tail < 1 << 63:  # the hello carries it in 64 bits
            raise CliError("--tail takes a number of lines, 0 to 2**63-1", 2)
        return p.Start.TAIL, args.tail
    if args.from_start:
        return p.Start.OFFSET, 0
    return p.Start.SCREEN, 0


def feed_flags(start: p.Start, exact: bool) -> int:
    """The hello's feed flags: every attach acks what it has shown; only one that asked
    for the present (no replay, no --exact) may be skipped to the screen when behind."""
    if start == p.Start.SCREEN and not exact:
        return p.FEED_ACKS | p.FEED_SKIP
    return p.FEED_ACKS


def run(args: argparse.Namespace) -> int:
    try:
        detach_key = terminal.parse_key(args.detach_key)
    except ValueError as exc:
        raise CliError(str(exc), 2) from None
    start, value = start_mode(args)
    if args.stdio:
        from supervisor.stdio_bridge import run_bridge

        return run_bridge(checked_name(args.target))
    if ":" in args.target:
        from supervisor.remote_attach import run_remote_attach

        return run_remote_attach(
            args.target, read_only=args.read_only, start=start, value=value,
            detach_key=detach_key, remote_command=args.remote_command,
            flags=feed_flags(start, args.exact), exact=args.exact,
        )
    return attach_local(checked_name(args.target), read_only=args.read_only, start=start,
                        value=value, detach_key=detach_key, flags=feed_flags(start, args.exact),
                        exact=args.exact)


SUSPENDED = "suspended"  # an attach's outcome when SIGTSTP stopped it (job control)


def attach_local(
    name: str,
    *,
    read_only: bool = False,
    start: p.Start = p.Start.SCREEN,
    value: int = 0,
    detach_key: bytes = b"\x1c",
    flags: int = p.FEED_ACKS | p.FEED_SKIP,
    exact: bool = False,
) -> int:
    """Attach this terminal until a detach or the end.  SIGTSTP (a shell's job control)
    gives the terminal back, as a detach does, and stops; ``fg`` attaches again, to the
    screen as it is then.  (A worker that holds the terminal reads its keys: stopped
    without this, the client left it reading them away from the shell.)"""
    while True:
        status = _attach_once(name, read_only=read_only, start=start, value=value,
                              detach_key=detach_key, flags=flags, exact=exact)
        if status is not None:
            return status
        os.kill(os.getpid(), signal.SIGSTOP)  # the shell's terminal until fg
        start, value = p.Start.SCREEN, 0


def _attach_once(
    name: str,
    *,
    read_only: bool,
    start: p.Start,
    value: int,
    detach_key: bytes,
    flags: int,
    exact: bool,
) -> int | None:
    """One attach; its exit status, or None when SIGTSTP ended it (see attach_local)."""
    if (refused := terminal.typing_refused(name, read_only)) is not None:
        raise CliError(refused, 2)
    rows, cols = terminal.window_size(0)
    hand_over = _one_terminal()
    if hand_over:
        flags |= p.FEED_TERMINAL  # a worker that can take it says so in its Welcome
    hello = p.Hello(start, value, rows, cols, read_only, flags=flags)
    try:
        conn, welcome = open_worker(name, hello)
    except NotRunning:
        return show_ended(name, hello)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    previous = {}

    def on_signal(signum: int, _frame: object) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(wake_w, bytes([signum]))

    for signum in (signal.SIGWINCH, signal.SIGHUP, signal.SIGTERM, signal.SIGTSTP):
        previous[signum] = signal.signal(signum, on_signal)
    out = sys.stdout.fileno()
    outcome = f"[detached from {name}]"
    status = 0
    alt = terminal.ShownModes()
    # notify: every session's notices on our status line (none in an exact stream)
    notices = None if exact else _follow_notices(out)
    handed = False  # the worker took our terminal: it writes and resets it, not us

    def repaint() -> bool:  # the status line went: the worker paints the row it covered
        if not status_line.can_repaint(conn.conversation):
            return False  # this attach replays the stream: a screen would skip it
        conn.send(p.Repaint())
        return True

    def write(data: bytes) -> None:  # the terminal's one writer: the worker while it has it
        if handed:
            conn.send(p.Show(data))
        else:
            terminal.write_all(out, data)

    line = StatusLine(write, lambda: terminal.window_size(0), repaint, exact=exact)
    try:
        with conn, terminal.raw_mode(0):
            handed = conn.conversation.may_hand_terminal and _hand_over(conn, name, detach_key)
            if welcome.held is not None:  # told when it began, to those attached then
                line.show(message.held(name, welcome.held), Kind.NOTICE, time.monotonic())
            if handed:
                outcome = _watch(conn, name, wake_r, read_only, line, notices) or outcome
            else:
                outcome = _pump(conn, name, wake_r, out, detach_key, read_only, alt, line,
                                notices) or outcome
    except (ConnectionClosed, ConnectionResetError):
        outcome = f"[lost connection to {name}: its worker ended]"
        status = 1
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        os.close(wake_r)
        os.close(wake_w)
        if notices is not None:
            notices.close()
        # The worker has let the terminal go (and put its modes back): ours to write again.
        handed_over, handed = handed, False
        with contextlib.suppress(OSError):
            reset = b"" if handed_over else alt.leaving_bytes()
            terminal.write_all(out, line.leaving() + reset)
    if outcome == SUSPENDED:
        return None
    print(outcome, file=sys.stderr)
    return status


def _one_terminal() -> bool:
    """Are stdin and stdout the same terminal (the one a local attach may hand over)?"""
    try:
        return (os.isatty(0) and os.isatty(1)
                and os.fstat(0).st_rdev == os.fstat(1).st_rdev)
    except OSError:
        return False


def _hand_over(conn: SessionClient, name: str, detach_key: bytes) -> bool:
    """Hand our terminal to the worker (its descriptor goes with the Terminal frame);
    True if it took it, False if it serves us over the socket instead."""
    socket.send_fds(conn.sock, [conn.conversation.send(p.Terminal(detach_key))], [0])
    event = conn.next_event()
    if isinstance(event, Notice) and event.event == "terminal":
        return event.fields.get("taken") is True
    if isinstance(event, Failed | Violation):
        raise CliError(f"session {name}: {event.message}")
    raise ConnectionClosed("the worker did not answer the terminal it was handed")


def _watch(conn: SessionClient, name: str, wake: int, read_only: bool, line: StatusLine,
           notices: Notices | None) -> str | None:
    """While the worker serves our terminal: pass on window sizes and status lines (the
    line's bytes go as Show frames: the worker is the terminal's only writer) until it
    gives the terminal back; return the line to print then."""
    sel = selectors.DefaultSelector()
    sel.register(conn.sock, selectors.EVENT_READ, "worker")
    if notices is not None:
        sel.register(notices, selectors.EVENT_READ, "notices")
    sel.register(wake, selectors.EVENT_READ, "signal")
    conn.sock.settimeout(None)
    # What came with the worker's answer to the handover (a refusal of keys typed at once,
    # the session's end) is read already: the socket will not be readable for it again.
    ended, outcome = _heard(conn, name, line)
    while not ended:
        ready, notices = _wait(sel, line, notices)
        for source in ready:
            if source == "signal":
                ending = _on_signals(conn, wake, read_only)
                if ending is not None:
                    _take_back(conn)
                    if ending == signal.SIGTSTP:
                        return SUSPENDED
                    return f"[detached from {name}: signal {ending.name}]"
            else:
                conn.read()
                ended, outcome = _heard(conn, name, line)
                if ended:
                    break  # (a signal ready beside it is not acted on)
    return outcome


def _heard(conn: SessionClient, name: str, line: StatusLine) -> tuple[bool, str | None]:
    """Act on the worker's events received so far, while it serves our terminal: whether
    the attach ended, and the line to print then (None: the usual one)."""
    for event in conn.ready_events():
        if isinstance(event, Exited):
            return True, f"[{name} {event.state}]"
        if isinstance(event, Notice) and event.event == "terminal_released":
            if event.fields.get("reason") == "lost":
                return True, f"[detached from {name}: the terminal went away]"
            return True, None
        if isinstance(event, Refused):  # our keys, read by the worker
            line.show("read-only: input ignored", Kind.INPUT, time.monotonic())
        if isinstance(event, Failed | Violation):
            raise CliError(f"session {name}: {event.message}")
        if isinstance(event, Closed):
            raise ConnectionClosed("worker closed the connection")
    return False, None


def _on_signals(conn: SessionClient, wake: int, read_only: bool) -> signal.Signals | None:
    """Act on the signals that arrived: a new window size goes to the worker; the signal
    that ends the attach (SIGHUP, SIGTERM, SIGTSTP), if one came."""
    for signum in os.read(wake, 64):
        if signum == signal.SIGWINCH and not read_only:
            conn.send(p.Resize(*terminal.window_size(0)))
        elif signum in (signal.SIGHUP, signal.SIGTERM, signal.SIGTSTP):
            return signal.Signals(signum)
    return None


def _wait(sel: selectors.BaseSelector, line: StatusLine,
          notices: Notices | None) -> tuple[list[str], Notices | None]:
    """Wait for the next sources to be ready (the status line's timers kept, the notices
    put on it); the other sources ready, and the notices (None once they are gone)."""
    ready = sel.select(line.due(time.monotonic()))
    line.tick(time.monotonic())
    sources = [key.data for key, _ in ready]
    if "notices" in sources:
        assert notices is not None
        notices = _read_notices(notices, sel, line)
    return [source for source in sources if source != "notices"], notices


def _read_notices(notices: Notices, sel: selectors.BaseSelector,
                  line: StatusLine) -> Notices | None:
    """Put the notices that arrived on the status line; None once the supervisor went
    away (the session goes on without them)."""
    shown = notices.read()
    if shown is None:
        sel.unregister(notices)
        notices.close()
        return None
    for body in shown:
        line.show(attach_notices.words(body), Kind.NOTICE, time.monotonic(),
                  attach_notices.bell(body))
    return notices


def _take_back(conn: SessionClient) -> None:
    """Detach, and wait (briefly) for the worker to put the terminal's modes back and let
    it go: until then it is the terminal's writer, not us."""
    with contextlib.suppress(OSError):
        conn.send(p.Detach())
        conn.sock.settimeout(2.0)
        while conn.sock.recv(RECV_SIZE):
            pass


def _follow_notices(out: int) -> Notices | None:
    if not os.isatty(out):
        return None  # a status line is for a person's terminal
    return Notices.open()


def show_ended(name: str, hello: p.Hello) -> int:
    """Show what an ended session left (its last screen, or the output asked for)."""
    from supervisor.replay import ended_messages

    out = sys.stdout.fileno()
    alt = terminal.ShownModes()
    state = "ended"
    for event in ended_messages(name, hello):
        if isinstance(event, p.Screen | p.Output):
            alt.feed(event.data)
            terminal.write_all(out, event.data)
        elif isinstance(event, Exited):
            state = event.state
    # Not leaving_bytes: the rows below the cursor are part of the last screen shown.
    terminal.write_all(out, alt.reset_bytes() + b"\r\n")
    print(f"[{name} {state}, before this attach: 'superv resume {name}' runs it again]",
          file=sys.stderr)
    return 0


def _pump(
    conn: SessionClient, name: str, wake: int, out: int, detach_key: bytes, read_only: bool,
    alt: terminal.ShownModes, line: StatusLine, notices: Notices | None = None,
) -> str | None:
    """Move bytes until detach or the session's end; return the line to print then."""
    sel = selectors.DefaultSelector()
    sel.register(conn.sock, selectors.EVENT_READ, "worker")
    if notices is not None:
        sel.register(notices, selectors.EVENT_READ, "notices")
    sel.register(wake, selectors.EVENT_READ, "signal")
    if os.isatty(0):
        sel.register(0, selectors.EVENT_READ, "stdin")
    conn.sock.settimeout(None)

    def show_received() -> str | None:
        try:
            for event in conn.ready_events():
                if isinstance(event, p.Output | p.Screen | Skipped):
                    alt.feed(event.data)
                    terminal.write_all(out, event.data)
                if isinstance(event, p.Screen | Skipped) and line.screen_came():
                    pass  # the screen the status line asked for: its skip is not news
                elif isinstance(event, Skipped):
                    line.show(skip_words(name, event.skipped), Kind.SKIP, time.monotonic())
                elif not isinstance(event, p.Output | p.Screen):
                    ended = said(event)
                    if ended:
                        return ended
            return None
        finally:
            ack = conn.conversation.ack()  # what we just showed: the worker may send more
            if ack:
                with contextlib.suppress(OSError):
                    conn.sock.sendall(ack)

    def said(event: object) -> str | None:
        if isinstance(event, Exited):
            return f"[{name} {event.state}]"
        if isinstance(event, Refused):
            line.show("read-only: input ignored", Kind.INPUT, time.monotonic())
        elif isinstance(event, Failed | Violation):
            raise CliError(f"session {name}: {event.message}")
        elif isinstance(event, Closed):
            raise ConnectionClosed("worker closed the connection")
        return None

    # The read that brought the Welcome may have brought the screen too: show it now,
    # the socket will not become readable for it again.
    ended = show_received()
    if ended:
        return ended
    while True:
        ready, notices = _wait(sel, line, notices)
        for source in ready:
            if source == "stdin":
                data = os.read(0, 65536)
                if not data:
                    sel.unregister(0)
                    continue
                cut = data.find(detach_key)
                if cut >= 0:
                    if cut and not read_only:
                        conn.send(p.Input(data[:cut]))
                    conn.send(p.Detach())
                    return None
                if not read_only:
                    conn.send(p.Input(data))
            elif source == "signal":
                ending = _on_signals(conn, wake, read_only)
                if ending == signal.SIGTSTP:
                    conn.send(p.Detach())
                    return SUSPENDED
                if ending is not None:
                    return f"[detached from {name}: signal {ending.name}]"
            else:
                conn.read()
                ended = show_received()
                if ended:
                    return ended
