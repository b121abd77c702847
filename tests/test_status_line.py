"""The attach client's status line (supervisor.status_line): one owner, one message at a
time, and never a byte of it in an ``--exact`` stream.

Real parts: the supervisor's notices of a second session, ``superv attach`` on a real PTY
(its raw bytes are what ``--exact`` promises) or in tmux (what a person sees).
"""

from __future__ import annotations

import contextlib
import os
import pty
import queue
import select
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SupervEnv

from agent_worker.screen import ScreenModel
from supervisor.status_line import Kind, StatusLine


def write_config(senv: SupervEnv, text: str) -> None:
    config_home = senv.root / "config"
    (config_home / "superv").mkdir(parents=True, exist_ok=True)
    (config_home / "superv" / "config.toml").write_text(text)
    senv.env["XDG_CONFIG_HOME"] = str(config_home)


@contextlib.contextmanager
def notices(senv: SupervEnv) -> Iterator[queue.Queue[bytes]]:
    """``superv events --json`` running, its lines in a queue."""
    proc = subprocess.Popen([sys.executable, "-m", "supervisor", "events", "--json"],
                            env=senv.env, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    lines: queue.Queue[bytes] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    try:
        yield lines
    finally:
        proc.kill()
        proc.wait()


def wait_for_notice(lines: queue.Queue[bytes], timeout: float = 20) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
        if b'"notice"' in line:
            return line


def read_until(master: int, shown: bytearray, marker: bytes, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while marker not in shown:
        assert time.monotonic() < deadline, f"no {marker!r} in {bytes(shown)[-500:]!r}"
        if select.select([master], [], [], 0.5)[0]:
            shown += os.read(master, 65536)


@pytest.mark.timeout(90)
def test_exact_attach_shows_no_notice_in_its_stream(superv_env: SupervEnv, tmp_path: Path) -> None:
    """The 60 MB drain bench found 49-67 bytes too many in ``attach --exact``'s stream:
    "vm:tp finished its turn" on the status line (49 bytes) and its clearing (18).  Here
    session b asks for input while a client is attached to a with --exact: nothing but
    a's bytes may reach the client's terminal."""
    senv = superv_env
    go, done = tmp_path / "go", tmp_path / "done"
    write_config(senv, '[notify]\non = ["needs_input"]\nhost = "box"\n')
    senv.superv("start", "a", "--", "sh", "-c",
                f"while [ ! -e {go} ]; do sleep 0.05; done; echo START-A; "
                f"while [ ! -e {done} ]; do sleep 0.05; done; echo END-A; sleep 1000", check=True)
    senv.superv("start", "b", "--", "sh", "-c",
                f"while [ ! -e {go} ]; do sleep 0.05; done; printf 'Go on? \\a'; sleep 1000",
                check=True)
    with notices(senv) as lines:
        shown = attach_exact_and_notice(senv, lines, go, done)
    start = shown.index(b"START-A\r\n") + len(b"START-A\r\n")
    assert shown[start:shown.index(b"END-A")] == b""


def attach_exact_and_notice(senv: SupervEnv, lines: queue.Queue[bytes], go: Path,
                            done: Path) -> bytes:
    """What ``attach --exact a`` wrote to its terminal from before b's notice to after."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "supervisor", "attach", "--exact", "a"],
                            env=senv.env, stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True)
    os.close(slave)
    shown = bytearray()
    try:
        # The screen painted: the client asked for the supervisor's events before it (and
        # b's notice is at least the notifier's settle time after go).
        read_until(master, shown, b"\x1b[", 20)
        go.touch()
        read_until(master, shown, b"START-A\r\n", 20)
        assert b"box:b" in wait_for_notice(lines)
        # The client follows the same stream: the notice reached it by now, and the
        # session's next bytes come after it.
        done.touch()
        read_until(master, shown, b"END-A", 20)
        return bytes(shown)
    finally:
        os.write(master, b"\x1c")
        proc.wait(timeout=10)
        os.close(master)


# ---- the owner itself, as its callers drive it -------------------------------------------


class Screen:
    """What a StatusLine wrote, and the Repaints it asked for."""

    def __init__(self, can_repaint: bool = True) -> None:
        self.written = bytearray()
        self.repaints = 0
        self.can_repaint = can_repaint

    def write(self, data: bytes) -> None:
        self.written += data

    def repaint(self) -> bool:
        if self.can_repaint:
            self.repaints += 1
        return self.can_repaint


def line_of(screen: Screen, exact: bool = False) -> StatusLine:
    return StatusLine(screen.write, lambda: (24, 80), screen.repaint, exact=exact)


def test_one_message_at_a_time_the_more_urgent_wins() -> None:
    screen = Screen()
    status = line_of(screen)
    status.show("box:b needs input", Kind.NOTICE, now=0.0)
    assert b"box:b needs input" in screen.written
    status.show("reconnecting", Kind.LINK, now=1.0)  # stays until cleared
    assert status.text == "reconnecting"
    status.show("box:c needs input", Kind.NOTICE, now=2.0)  # less urgent: not over it
    assert status.text == "reconnecting" and b"box:c" not in screen.written
    status.tick(now=100.0)
    assert status.text == "reconnecting"  # a link message has no time limit
    status.clear(Kind.LINK)
    assert status.text is None and screen.repaints == 1


def test_a_moment_later_the_row_comes_back_by_repaint_or_is_erased() -> None:
    screen = Screen()
    status = line_of(screen)
    status.show("skipped 3 MB", Kind.SKIP, now=0.0)
    assert status.due(now=1.0) == pytest.approx(status.SHOWN_FOR[Kind.SKIP] - 1.0)
    status.tick(now=0.5)
    assert status.text == "skipped 3 MB"
    status.tick(now=60.0)
    assert status.text is None and screen.repaints == 1  # the worker repaints the row
    blind = Screen(can_repaint=False)  # --from-start, or the link is down: no screen
    status = line_of(blind)
    status.show("box:b needs input", Kind.NOTICE, now=0.0)
    status.tick(now=60.0)
    assert blind.repaints == 0 and blind.written.endswith(b"\x1b[24;1H\x1b[0m\x1b[K\x1b8")


def test_a_flood_says_it_skipped_once() -> None:
    """A flood skips the client every round trip or so: said once, not all along (each
    skip line covered the row of the prompt a Ctrl-C brings back, for 3 s more)."""
    screen = Screen()
    status = line_of(screen)
    assert status.show("skipped 3 MB", Kind.SKIP, now=0.0)
    status.tick(now=2.0)
    for t in range(3, 30):  # skipped again each second, for as long as the flood lasts
        assert not status.show("skipped 1 MB", Kind.SKIP, now=float(t))
    assert status.text is None
    assert status.show("skipped 5 MB", Kind.SKIP, now=45.0)  # a flood later: said again


def test_the_next_skips_screen_does_not_wipe_the_note_of_the_first() -> None:
    """A flood skips the client a round trip after its last skip: the second Screen came
    within 20 ms of the note and painted the whole terminal, the bottom row too, while the
    quiet rule kept the second skip from drawing the note (test_present's slow attach:
    skipped to the present, never told, 1 run in 5).  The user's terminal here is a real
    screen model, fed what the client writes in the order the client writes it."""
    shown = ScreenModel(24, 80)  # the user's terminal
    status = StatusLine(shown.feed, lambda: (24, 80), lambda: True)
    session = ScreenModel(24, 80)  # the session, as the worker paints it
    session.feed(b"".join(b"line %d\r\n" % n for n in range(40)) + b"agent> ")

    def skipped(words: str, now: float) -> None:  # what attach does with a Skipped event
        shown.feed(session.render())  # the Screen is written first
        if not status.screen_came():
            status.show(words, Kind.SKIP, now)

    skipped("skipped 2.3 MB to the present", now=0.0)
    assert shown.text().split("\n")[-1].strip() == "skipped 2.3 MB to the present"
    skipped("skipped 1.7 MB to the present", now=0.02)  # not said again, but still shown
    assert shown.text().split("\n")[-1].strip() == "skipped 2.3 MB to the present"
    status.tick(now=2.0)  # its time is up: the row is the session's again (by Repaint)
    shown.feed(session.render())
    assert status.screen_came() and status.text is None
    assert shown.text() == session.text()


def test_exact_writes_nothing_but_the_link_state() -> None:
    screen = Screen()
    status = line_of(screen, exact=True)
    for kind in (Kind.NOTICE, Kind.SKIP, Kind.INPUT):
        status.show("words", kind, now=0.0)
    status.tick(now=60.0)
    assert screen.written == b"" and screen.repaints == 0
    status.show("reconnecting", Kind.LINK, now=0.0)  # the stream is stopped anyway
    assert b"reconnecting" in screen.written
    status.clear(Kind.LINK)
    assert screen.repaints == 0  # a repaint would break --exact: the row is erased
