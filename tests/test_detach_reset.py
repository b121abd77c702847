"""What detaching puts back in the user's own terminal (supervisor.terminal.ShownModes)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time

from conftest import SupervEnv

from agent_worker.screen import ScreenModel
from supervisor.terminal import RESET_MODES, ShownModes

MODES_ON = b"\x1b[?1004h\x1b[?2004h\x1b[?1000;1006h\x1b[?1049h\x1b[?2031h\x1b[?7l\x1b="


def test_reset_undoes_what_the_stream_set() -> None:
    shown = ShownModes()
    shown.feed(MODES_ON)
    reset = shown.reset_bytes()
    assert reset.startswith(b"\x1b[?1049l") and reset.endswith(RESET_MODES)
    assert b"\x1b[?2031l" in reset and b"\x1b[?7h" in reset  # derived from the stream
    terminal = ScreenModel(24, 80)  # the user's terminal
    terminal.feed(MODES_ON + reset)
    modes = terminal.modes()
    assert not modes.focus_events and not modes.bracketed_paste and not modes.alt_screen
    assert modes.mouse_tracking is None and modes.mouse_encoding is None
    assert modes.autowrap and not modes.app_keypad and modes.cursor_visible


def test_reset_always_turns_focus_reporting_off() -> None:
    shown = ShownModes()
    assert b"\x1b[?1004l" in shown.reset_bytes()  # even when the stream shown never set it
    assert not shown.reset_bytes().startswith(b"\x1b[?1049l")  # never entered: not left


def test_modes_split_across_reads_count() -> None:
    stream = b"text \x1b[1mbold\x1b[0m \x1b[?1049h\x1b]0;title\x07 \x1b[?1049l\x1b[?1049h tail"
    for cut in range(len(stream) + 1):
        shown = ShownModes()
        shown.feed(stream[:cut])
        shown.feed(stream[cut:])
        assert shown.alternate, cut
    shown = ShownModes()
    for byte in stream + b"\x1bc":  # a full reset forgets everything
        shown.feed(bytes([byte]))
    assert not shown.alternate and shown.reset_bytes() == RESET_MODES


def test_detach_turns_off_the_focus_reporting_the_agent_turned_on(superv_env: SupervEnv) -> None:
    """Issue 9.5: after detaching from an agent that set ?1004h, the user's shell kept
    receiving ESC [ I / ESC [ O: the reset had no ?1004l."""
    code = (
        "import sys; out = sys.stdout.buffer; "
        f"out.write({MODES_ON!r} + b'ready\\r\\n'); out.flush(); sys.stdin.read()"
    )
    superv_env.superv("start", "foc", "--", sys.executable, "-c", code, check=True)
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "supervisor", "attach", "foc"],
        env=superv_env.env, stdin=slave, stdout=slave, stderr=slave, start_new_session=True,
    )
    os.close(slave)
    shown = bytearray()
    try:
        deadline = time.monotonic() + 20
        while b"ready" not in shown:
            assert time.monotonic() < deadline, bytes(shown)
            if select.select([master], [], [], 1)[0]:
                shown += os.read(master, 65536)
        os.write(master, b"\x1c")  # the detach key, ^\
        while True:
            assert time.monotonic() < deadline, bytes(shown)
            if not select.select([master], [], [], 1)[0]:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the client ended and closed the terminal
                break
            if not data:
                break
            shown += data
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert b"[detached from foc]" in shown
    terminal = ScreenModel(24, 80)  # the user's terminal, as everything shown left it
    terminal.feed(bytes(shown))
    modes = terminal.modes()
    assert not modes.focus_events, "focus reporting left on after detach"
    assert not modes.bracketed_paste and not modes.alt_screen and modes.mouse_tracking is None
    assert modes.autowrap and not modes.app_keypad
