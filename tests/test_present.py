"""The present first (issue 12): a client on a slow link sees the session as it is now.

Every client here is a real slow reader: ``superv attach`` in tmux, or a protocol client,
connected through :class:`~slow_socket.SlowSocket` (the worker's socket read at 200 kB/s),
so the worker meets a socket that fills and stays full.  Without the feed policy the
client is sent every byte of a 4 MB flood, 20 s at that rate.
"""

from __future__ import annotations

import re
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SupervEnv, wait_until
from slow_socket import SlowSocket
from tmux_helpers import Tmux
from worker_helpers import PATTERN_FN, cooked, pattern, session_socket

from agent_worker import protocol as p
from agent_worker.conversation import (
    NEED_DATA,
    ClientConversation,
    Closed,
    Exited,
    Failed,
    Skipped,
    Violation,
)
from agent_worker.screen import ScreenModel

RATE = 200_000.0  # bytes/s from the worker to the client
FLOOD_LINES = 40_000  # 4 MB of numbered 100-byte lines

# Prints 'ready', then on 'go' a flood and a marker, then echoes each line it reads until
# 'finish' (keys typed during the flood are read after it), each time with a prompt on the
# bottom row, where the client's status line goes; then 'finished' and idles.  Its
# terminal does not echo: the echo of keys typed during the flood would land among the
# flood's lines wherever the line discipline got them (under load, inside the flood).
FLOODER = PATTERN_FN + f"""
import sys, termios, time
modes = termios.tcgetattr(0)
modes[3] &= ~termios.ECHO
termios.tcsetattr(0, termios.TCSANOW, modes)
out = sys.stdout.buffer
out.write(b'ready\\n'); out.flush()
sys.stdin.readline()
out.write(pattern({FLOOD_LINES})); out.write(b'MARK-END\\nagent> '); out.flush()
for line in sys.stdin:
    out.write(b'got:' + line.encode() + b'agent> '); out.flush()
    if line.strip() == 'finish':
        break
out.write(b'finished\\n'); out.flush()
time.sleep(300)
"""


def log_bytes(senv: SupervEnv, name: str) -> bytes:
    return (senv.session_dir(name) / "output.log").read_bytes()


@pytest.fixture
def flooder(superv_env: SupervEnv) -> Iterator[str]:
    path = superv_env.root / "flooder.py"
    path.write_text(FLOODER)
    superv_env.superv("start", "flood", "--", sys.executable, str(path), check=True)
    wait_until(lambda: b"ready" in log_bytes(superv_env, "flood"), timeout=20,
               message="the flooder never said ready")
    try:
        yield "flood"
    finally:
        superv_env.superv("kill", "flood")


@pytest.fixture
def slow(superv_env: SupervEnv, flooder: str) -> Iterator[tuple[SlowSocket, Path]]:
    """The flooder's socket behind a 200 kB/s link, in a runtime directory of its own."""
    runtime = superv_env.root / "slow-run"
    runtime.mkdir(mode=0o700)
    listen = runtime / "sessions" / f"{flooder}.sock"
    with SlowSocket(listen, session_socket(superv_env, flooder), RATE) as proxy:
        yield proxy, runtime


@pytest.fixture
def term(superv_env: SupervEnv, slow: tuple[SlowSocket, Path]) -> Iterator[Tmux]:
    env = dict(superv_env.env, SUPERV_RUNTIME_DIR=str(slow[1]))
    tmux = Tmux(env, superv_env.root)
    try:
        yield tmux
    finally:
        tmux.kill_server()


def peek_lines(senv: SupervEnv, name: str) -> list[str]:
    out = senv.superv("peek", name, check=True).stdout
    return [line.rstrip() for line in out.rstrip("\n").split("\n")]


def shown_lines(term: Tmux, pane: str) -> list[str]:
    lines = term.lines(pane)
    while lines and not lines[-1]:
        lines.pop()
    return lines


def test_a_slow_attach_skips_to_the_present_and_keeps_the_input(
    superv_env: SupervEnv, term: Tmux, slow: tuple[SlowSocket, Path]
) -> None:
    pane = term.new_session("main")
    term.type(pane, "$SUPERV attach flood")
    term.wait_for(pane, "ready")
    began = time.monotonic()
    term.type(pane, "go")
    term.type(pane, "typed-during")  # during the flood and the skip: goes to the agent
    # The note about the skip (said once, for a moment, at the first skip), then the
    # marker and the echo of the keys, long before the 20 s that sending every byte at
    # 200 kB/s takes.
    screen = term.wait_for(pane, "superv logs flood", timeout=8)
    assert re.search(r"skipped [\d.]+ [MkB]", screen), screen
    term.wait_for(pane, lambda s: "got:typed-during" in s and "MARK-END" in s, timeout=8)
    assert time.monotonic() - began < 8
    term.wait_for(pane, lambda s: "skipped" not in s, timeout=10)  # said for a moment
    # What the status line covered is back (the prompt on the bottom row): the screen is
    # the session's.
    wait_until(lambda: shown_lines(term, pane) == peek_lines(superv_env, "flood"), timeout=5,
               message="the attached screen never matched peek after the skip")
    term.type(pane, "finish")
    term.wait_for(pane, "finished")
    wait_until(lambda: shown_lines(term, pane) == peek_lines(superv_env, "flood"), timeout=10,
               message="the attached screen never matched peek")
    assert slow[0].forwarded < 2_000_000, "most of the flood crossed the slow link"

    # The log is still byte-exact: every byte of the flood, once, in order.
    log = log_bytes(superv_env, "flood")
    assert cooked(pattern(FLOOD_LINES) + b"MARK-END\n") in log


def slow_client(path: Path, hello: p.Hello, until: int, timeout: float
                ) -> tuple[ClientConversation, list[object]]:
    """A protocol client that reads and acks through the slow link until it is at log
    offset ``until``; every event it got.  It starts where ``hello`` asks (a reconnect's
    conversation knows its offset, as remote attach's does)."""
    position = hello.value if hello.start == p.Start.OFFSET else None
    talk = ClientConversation(hello, position)
    events: list[object] = []
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(talk.initiate())
        while (talk.position or 0) < until:
            event = talk.next_event()
            if event is NEED_DATA:
                sock.sendall(talk.ack())
                talk.receive_data(sock.recv(65536))
                continue
            events.append(event)
            if isinstance(event, Exited | Closed | Failed | Violation):
                raise AssertionError(f"stream ended early: {event!r}")
        sock.sendall(talk.send(p.Detach()))
    return talk, events


def test_exact_attach_gets_every_byte_once_in_order_through_a_slow_link(
    superv_env: SupervEnv, slow: tuple[SlowSocket, Path]
) -> None:
    _, runtime = slow
    path = runtime / "sessions" / "flood.sock"
    start = len(log_bytes(superv_env, "flood"))
    superv_env.superv("send", "--enter", "flood", "go", check=True)
    wait_until(lambda: b"MARK-END" in log_bytes(superv_env, "flood"), timeout=30)
    # What --exact sends: acks (so the worker bounds what is in flight), never a skip.
    hello = p.Hello(p.Start.OFFSET, start, read_only=True, flags=p.FEED_ACKS)
    _, events = slow_client(path, hello, len(log_bytes(superv_env, "flood")), timeout=60)
    assert not any(isinstance(e, Skipped | p.Screen) for e in events)
    data = b"".join(e.data for e in events if isinstance(e, p.Output))
    log = log_bytes(superv_env, "flood")
    assert data == log[start:start + len(data)]
    assert cooked(pattern(FLOOD_LINES) + b"MARK-END\n") in data


def test_a_client_far_behind_on_reconnect_gets_the_current_screen(
    superv_env: SupervEnv, slow: tuple[SlowSocket, Path]
) -> None:
    """What an outage leaves: a reconnect at an old offset, megabytes behind."""
    _, runtime = slow
    path = runtime / "sessions" / "flood.sock"
    superv_env.superv("send", "--enter", "flood", "go", check=True)
    wait_until(lambda: b"MARK-END" in log_bytes(superv_env, "flood"), timeout=30)
    superv_env.superv("send", "--enter", "flood", "after-outage", check=True)
    wait_until(lambda: b"got:after-outage" in log_bytes(superv_env, "flood"), timeout=10)
    hello = p.Hello(p.Start.OFFSET, 100, 24, 80, read_only=True,
                    flags=p.FEED_ACKS | p.FEED_SKIP)
    began = time.monotonic()
    talk, events = slow_client(path, hello, len(log_bytes(superv_env, "flood")), timeout=30)
    assert time.monotonic() - began < 3
    skips = [e for e in events if isinstance(e, Skipped)]
    assert skips and skips[0].skipped > 3_000_000
    model = ScreenModel(24, 80)
    for event in events:
        if isinstance(event, p.Output | p.Screen | Skipped):
            model.feed(event.data)
    assert talk.position == len(log_bytes(superv_env, "flood"))
    assert model.text().rstrip() == "\n".join(peek_lines(superv_env, "flood")).rstrip()
