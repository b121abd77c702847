"""The screen model: parsing, the alternate screen, and render() round trips.

The round trips are the contract attach relies on: a client painted with ``render()`` and
then fed the rest of the stream must end up exactly where a terminal that saw the whole
stream is.  They are checked two ways: model to model (every cell, attribute, mode and the
hidden state such as the pending wrap and the saved cursor), and end to end through tmux as
the real terminal, with a real curses program in a real PTY.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import shutil
import struct
import subprocess
import sys
import termios
import textwrap
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_worker.screen import BLANK, Cell, ScreenModel

# -- helpers ------------------------------------------------------------------------------


def grid(model: ScreenModel, buffer: Any = None) -> tuple[tuple[Cell, ...], ...]:
    s = model._screen
    buffer = s.buffer if buffer is None else buffer
    return tuple(tuple(buffer.get(y, {}).get(x, BLANK) for x in range(s.columns)) for y in range(s.lines))


def saved(slot: Any) -> Any:
    return (slot.x, slot.y, slot.attrs, slot.g0 is not None, slot.g1 is not None, slot.charset,
            slot.origin)  # fmt: skip


def state(model: ScreenModel) -> dict[str, Any]:
    """Everything the next bytes of a stream could depend on, and everything shown."""
    s = model._screen
    return {
        "cells": grid(model),
        "main": grid(model, s.main.buffer) if s.main else None,
        "main_saved": saved(s.main.saved) if s.main else None,
        "cursor": (s.cursor.x, s.cursor.y, s.cursor.attrs, s.cursor.hidden),
        "saved": saved(s.saved),
        "modes": model.modes(),
        "mode_set": frozenset(s.mode),
        "margins": s.margins,
        "charsets": (s.g0_charset is not None, s.g1_charset is not None, s.charset),
        "cursor_style": s.cursor_style,
        "title": s.title,
        "tabs": sorted(x for x in s.tabstops if x < s.columns),
    }


def model_of(data: bytes | str, rows: int = 24, cols: int = 80) -> ScreenModel:
    m = ScreenModel(rows, cols)
    m.feed(data.encode() if isinstance(data, str) else data)
    return m


def assert_round_trip(a: ScreenModel, rest: bytes = b"") -> None:
    b = ScreenModel(a.rows, a.cols)
    b.feed(b"garbage on the client's screen\r\n\x1b[1;33mand a pen\x1b[?1h\x1b=")
    b.feed(a.render())
    assert state(b) == state(a)
    if rest:
        a.feed(rest)
        b.feed(rest)
        assert state(b) == state(a)


# -- text() and cursor() -------------------------------------------------------------------


def test_text_strips_trailing_spaces_and_empty_lines() -> None:
    m = model_of("hello   \r\n\r\n  indented  \r\n\x1b[41m   \x1b[m\r\n\r\n", rows=8, cols=20)
    assert m.text() == "hello\n\n  indented"
    assert m.cursor() == (5, 0)
    assert model_of("").text() == ""


def test_cursor_reports_positions_like_dsr() -> None:
    m = model_of("\x1b[5;10Hx", rows=10, cols=20)
    assert m.cursor() == (4, 10)
    m.feed(b"\x1b[1;1H" + b"y" * 20)  # at the end of the row, waiting to wrap
    assert m.cursor() == (0, 19)
    m.feed(b"z")
    assert m.cursor() == (1, 1)
    assert m.text().splitlines()[:2] == ["y" * 20, "z"]


def test_feed_handles_utf8_and_sequences_split_anywhere() -> None:
    stream = "漢字 é 😀 \x1b[1;38;2;10;20;30mbold\x1b[0m \x1b]2;title\x07 ok\r\n".encode()
    whole = model_of(stream)
    for cut in range(1, len(stream)):
        m = ScreenModel(24, 80)
        m.feed(stream[:cut])
        m.feed(stream[cut:])
        assert state(m) == state(whole), cut
    assert whole.text() == "漢字 é 😀 bold  ok"
    assert whole.title == "title"


@given(st.binary(max_size=400), st.integers(1, 30), st.integers(1, 30))
def test_garbage_never_raises(data: bytes, rows: int, cols: int) -> None:
    m = ScreenModel(rows, cols)
    m.feed(data)
    m.feed(b"\x1b[" + data[:20] + b"\x1b]" + data[20:40])
    m.text()
    assert 0 <= m.cursor()[0] < rows and 0 <= m.cursor()[1] < cols
    assert_round_trip(m)


# -- what pyte gets wrong and the model must not -------------------------------------------


def test_strings_and_unknown_sequences_are_not_printed() -> None:
    m = model_of(
        "a\x1bP+q544e\x1b\\b\x1b_Gf=100;AAAA\x1b\\c\x1b[=1;1ud\x1b[!pe\x1b[>4;2mf\x1b[?u"
        "\x1b]8;;http://x\x1b\\g\x1b]8;;\x1b\\h"
    )
    assert m.text() == "abcdefgh"
    assert m._screen.cursor.attrs == BLANK  # CSI > 4;2 m is modifyOtherKeys, not SGR


def test_long_dcs_split_across_feeds_is_skipped() -> None:
    m = ScreenModel(5, 20)
    m.feed(b"x\x1bPq" + b"#0;2;0;0;0" * 10_000)
    m.feed(b"#1" * 50_000 + b"\x1b")
    m.feed(b"\\y")
    assert m.text() == "xy"


def test_sgr_attributes_and_colours_are_lossless() -> None:
    m = model_of(
        "\x1b[1;2;3;4;5;7;8;9;31;104mA\x1b[0;38;5;1;48;5;232mB\x1b[38;2;205;0;0mC"
        "\x1b[38:2::1:2:3;4:0mD\x1b[22;23;24;25;27;28;29;39;49mE\x1b[4:3;58:5:9mF"
    )
    cells = grid(m)[0]
    assert cells[0] == Cell("A", "red", "brightblue", True, True, True, True, True, True, True,
                            True)  # fmt: skip
    assert cells[1] == Cell("B", fg="1", bg="232")
    assert cells[2] == Cell("C", fg="#cd0000", bg="232")
    assert cells[3] == Cell("D", fg="#010203", bg="232")
    assert cells[4] == Cell("E")
    assert cells[5] == Cell("F", underscore=True)
    assert_round_trip(m)


def test_wide_and_zero_width_characters_keep_alignment() -> None:
    m = model_of("abcd漢\r\n❤️ ok 👩\u200d💻 e\u0301!", rows=6, cols=5)
    # The wide character does not fit in the last column: it wraps, as in xterm and tmux;
    # VS16 and ZWJ join the character before them instead of ending the text run.
    assert m.text() == "abcd\n漢\n❤️ ok\n👩\u200d💻\né!"
    assert_round_trip(m)
    m = model_of("❤️ ok 👩\u200d💻 e\u0301!")
    assert m.text() == "❤️ ok 👩\u200d💻 é!"
    m.feed(b"\r\x1b[2Cx")  # overwrite the right half of a wide character
    assert_round_trip(m, b"more")


def test_dec_line_drawing_and_rep() -> None:
    m = model_of("\x1b(0lq\x1b[5bk\x1b(B x\x1b[3b", rows=2, cols=20)
    assert m.text() == "┌──────┐ xxxx"
    assert_round_trip(m, b"\x1b(0q\x0e")


def test_erase_uses_background_only() -> None:
    m = model_of("\x1b[1;4;44m\x1b[2J\x1b[m", rows=2, cols=3)
    assert set(grid(m)[0]) == {Cell(" ", bg="blue")}
    m.feed(b"\x1b[1;3H\x1b[42;7m\x1b[K\x1b[L")
    assert grid(m)[0] == (Cell(" ", bg="green"),) * 3  # the inserted line
    assert grid(m)[1] == (Cell(" ", bg="blue"),) * 2 + (Cell(" ", bg="green"),)
    assert_round_trip(m, b"xyz")


# -- the alternate screen ------------------------------------------------------------------


def test_vim_like_alternate_screen_restores_the_shell() -> None:
    shell = "$ ls\r\nfile1  file2\r\n$ vim notes\r\n"
    m = model_of(shell, rows=6, cols=30)
    before = state(m)
    m.feed(b"\x1b[?1049h\x1b[22;0;0t\x1b[?1h\x1b=\x1b[H\x1b[2J\x1b[1;1H~\r\n~\x1b[6;1H\x1b[7m-- INSERT --")
    m.feed(b"\x1b[?25l\x1b[1;5r\x1b[2;1H\x1b[1;34mcolour")
    assert m.modes().alt_screen and m.modes().app_cursor_keys and m.modes().app_keypad
    assert "-- INSERT --" in m.text()
    # On leaving (vim's t_te), the client matches too.
    assert_round_trip(m, b"\x1b[r\x1b[?1l\x1b>\x1b[?25h\x1b[m\x1b[?1049l\x1b[23;0;0t")
    after = state(m)
    assert after["cells"] == before["cells"]
    assert after["cursor"] == before["cursor"]
    assert m.text() == "$ ls\nfile1  file2\n$ vim notes"
    assert not m.modes().alt_screen


def test_47_and_1047_switch_without_restoring_the_cursor() -> None:
    m = model_of("main\r\n", rows=4, cols=10)
    m.feed(b"\x1b[?1047halt\x1b[3;3H")
    assert m.text() == "\nalt"
    m.feed(b"\x1b[?1047l")
    assert m.text() == "main" and m.cursor() == (2, 2)


def test_render_in_alt_screen_paints_the_main_screen_underneath() -> None:
    m = model_of("shell line\r\n\x1b7\x1b[?1049h\x1b[2;2Hin alt", rows=4, cols=20)
    b = ScreenModel(4, 20)
    b.feed(m.render())
    assert b.text() == "\n in alt"
    b.feed(b"\x1b[?1049l")
    assert b.text() == "shell line" and b.cursor() == (1, 0)


def test_modes_are_tracked_and_replayed() -> None:
    m = model_of("\x1b[?1002h\x1b[?1006h\x1b[?2004h\x1b[?1004h\x1b[4h\x1b[3 q\x1b[?7l")
    modes = m.modes()
    assert modes.mouse_tracking == 1002 and modes.mouse_encoding == 1006
    assert modes.bracketed_paste and modes.focus_events and modes.insert and not modes.autowrap
    assert_round_trip(m, b"abc\x1b[?1000l")
    assert m.modes().mouse_tracking is None


def test_pending_wrap_survives_render() -> None:
    m = model_of("\x1b[2;1H" + "x" * 10, rows=3, cols=10)
    assert m._screen.cursor.x == 10
    assert_round_trip(m, b"y")
    assert m.text() == "\nxxxxxxxxxx\ny"


def test_history_is_bounded_and_resize_keeps_the_cursor_line() -> None:
    m = ScreenModel(3, 10, history=5)
    m.feed(b"".join(b"line %d\r\n" % i for i in range(20)) + b"$ ")
    assert m.scrollback() == [f"line {i}" for i in range(13, 18)]
    m.resize(2, 6)
    assert m.text() == "line 1\n$" and m.cursor() == (1, 2)
    m.resize(5, 12)
    assert_round_trip(m, b"more\r\n")
    assert ScreenModel(3, 10).scrollback() == []


# -- property: render() then the rest of the stream == the whole stream --------------------

_FIXED = [
    "\r", "\n", "\b", "\t", "\x1b7", "\x1b8", "\x1bM", "\x1bD", "\x1bE", "\x1b(0", "\x1b(B",
    "\x1b)0", "\x0e", "\x0f", "\x1b=", "\x1b>", "\x1b[?1049h", "\x1b[?1049l", "\x1b[?1047h",
    "\x1b[?47l", "\x1b[?25l", "\x1b[?25h", "\x1b[?7l", "\x1b[?7h", "\x1b[?1h", "\x1b[?1l",
    "\x1b[?2004h", "\x1b[?1000h", "\x1b[?1002h", "\x1b[?1006h", "\x1b[?1000l", "\x1b[4h",
    "\x1b[4l", "\x1b[?6h", "\x1b[?6l", "\x1b[r", "\x1b[m", "\x1b[2 q", "\x1b[J", "\x1b[1J",
    "\x1b[2J", "\x1b[K", "\x1b[1K", "\x1b[2K", "\x1b[3J", "\x1b[?5h", "\x1b[?5l", "\x1b[20h",
    "\x1b[20l", "\x1b[!p", "\x1bc", "\x1b]2;t\x07",
]  # fmt: skip
_SGR = [
    "0", "1", "2", "3", "4", "5", "7", "8", "9", "22", "24", "27", "31", "42", "39", "49",
    "91", "104", "38;5;196", "48;5;17", "38;2;10;20;30", "48;2;1;2;3", "38:2::9:8:7", "4:3",
]  # fmt: skip
_TEXT = [*"abcXYZ 0", "漢", "字", "é", "\u0301", "😀", "\u200d", "\ufe0f", "─"]

_token = st.one_of(
    st.text(alphabet=st.sampled_from(_TEXT), min_size=1, max_size=14),
    st.sampled_from(_FIXED),
    st.builds("\x1b[{};{}H".format, st.integers(0, 9), st.integers(0, 14)),
    st.builds("\x1b[{}{}".format, st.integers(0, 4), st.sampled_from(list("ABCDEFGLMPXST@bZIdae`"))),
    st.builds("\x1b[{};{}r".format, st.integers(0, 8), st.integers(0, 8)),
    st.lists(st.sampled_from(_SGR), max_size=4).map(lambda xs: "\x1b[" + ";".join(xs) + "m"),
)
_stream = st.lists(_token, max_size=50).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prefix=_stream, suffix=_stream, size=st.sampled_from([(6, 10), (4, 7), (8, 16), (1, 3)]))
def test_render_round_trip_property(prefix: str, suffix: str, size: tuple[int, int]) -> None:
    a = ScreenModel(*size)
    a.feed(prefix.encode())
    assert_round_trip(a, suffix.encode())


def test_round_trip_of_a_mixed_sequence() -> None:
    stream = (
        "\x1b[1;31mred bold\x1b[0m plain \x1b[38;5;208morange\x1b[m\r\n"
        "\x1b[3;20r\x1b[20;1H" + "".join(f"scrolling line {i}\r\n" for i in range(30))
        + "\x1b[r\x1b[5;5H\x1b[2K\x1b[44m  blue  \x1b[m\x1b[1J"
        "\x1b[?1049h\x1b[H\x1b[2J漢字 wide 😀 \x1b[7mreverse\x1b[27m\x1b[9mstrike"
        "\x1b[10;40H\x1b[3mitalic\x1b[4munder\x1b[?25l\x1b7\x1b[1;1H"
    )  # fmt: skip
    a = model_of(stream)
    assert a.modes().alt_screen and not a.modes().cursor_visible
    assert_round_trip(a, b"\x1b8more\x1b[?1049l\x1b[?25h tail")
    assert "tail" in a.text()


# -- end to end: a real curses program in a real PTY, and tmux as the real terminal -------

CURSES_APP = r"""
import curses, locale, sys
locale.setlocale(locale.LC_ALL, "")

def marker(name):
    sys.stdout.write("\x1b]2;" + name + "\x07")
    sys.stdout.flush()

def main(scr):
    curses.start_color()
    curses.use_default_colors()
    curses.init_pair(1, curses.COLOR_RED, -1)
    curses.init_pair(2, 196 % curses.COLORS, 21 % curses.COLORS)
    curses.mousemask(curses.ALL_MOUSE_EVENTS | curses.REPORT_MOUSE_POSITION)
    scr.keypad(True)
    scr.box()
    scr.addstr(1, 2, "superv screen test", curses.A_BOLD)
    scr.addstr(2, 2, "red underlined", curses.color_pair(1) | curses.A_UNDERLINE)
    scr.addstr(3, 2, "colour pair 2 reversed", curses.color_pair(2) | curses.A_REVERSE)
    scr.addstr(4, 2, "漢字テスト wide", curses.A_DIM)
    scr.addstr(5, 2, "italic", curses.A_ITALIC)
    scr.hline(6, 1, curses.ACS_HLINE, 40)
    scr.setscrreg(8, 20)
    scr.scrollok(True)
    scr.idlok(True)
    for i in range(30):
        scr.addstr(20, 2, "scrolled line %d" % i)
        scr.scroll(1)
        scr.refresh()
    scr.move(12, 30)
    scr.refresh()
    marker("READY1")
    scr.getch()
    scr.addstr(7, 2, "after attach", curses.color_pair(2) | curses.A_BOLD)
    for i in range(5):
        scr.addstr(20, 2, "after %d" % i)
        scr.scroll(1)
    scr.refresh()
    marker("READY2")
    scr.getch()

curses.wrapper(main)
print("bye from curses, \x1b[32mgreen\x1b[0m")
"""

PLAYER = r"""
import os, signal, sys, tty
tty.setraw(1)  # pass the bytes through untouched: no ONLCR on the pane's tty
data = open(sys.argv[1], "rb").read()
while data:
    data = data[os.write(1, data):]
signal.pause()
"""

FLAGS = (
    "#{pane_title}|#{cursor_x},#{cursor_y},#{cursor_flag},#{alternate_on},"
    "#{keypad_cursor_flag},#{keypad_flag},#{mouse_any_flag},#{mouse_sgr_flag},"
    "#{mouse_standard_flag},#{mouse_button_flag},#{mouse_all_flag},#{insert_flag},"
    "#{wrap_flag},#{origin_flag},#{scroll_region_upper},#{scroll_region_lower},"
    "#{pane_width}x#{pane_height}"
)


class Tmux:
    """One tmux server on its own socket; each ``show`` is a pane that prints bytes."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.socket = f"svscreen-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.env = {k: v for k, v in os.environ.items() if k not in ("TMUX", "TMUX_PANE")}
        self.env["TERM"] = "xterm-256color"
        self.player = tmp / "player.py"
        self.player.write_text(PLAYER)

    def run(self, *args: str) -> str:
        proc = subprocess.run(
            ["tmux", "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True, text=True, env=self.env, timeout=10, check=True,
        )  # fmt: skip
        return proc.stdout

    def show(self, name: str, data: bytes) -> None:
        """A pane of 80x24 that is shown ``data`` and then the sentinel title ``name``."""
        path = self.tmp / f"{name}.bin"
        path.write_bytes(data + b"\x1b]2;" + name.encode() + b"\x07")
        cmd = f"{sys.executable} {self.player} {path}"
        self.run("new-session", "-d", "-s", name, "-x", "80", "-y", "24", cmd)

    def wait(self, name: str, timeout: float = 10.0) -> None:
        """Until the pane has processed every byte: the sentinel title comes last."""
        deadline = time.monotonic() + timeout
        while self.run("display", "-p", "-t", name, "#{pane_title}").strip() != name:
            assert time.monotonic() < deadline, f"tmux pane {name} never finished"
            time.sleep(0.02)

    def screen(self, name: str) -> TmuxScreen:
        """What the pane shows, read back through ``capture-pane -e``.

        tmux keeps DEC line-drawing cells as ASCII letters with a charset flag and shows
        them as SO/SI runs, so the capture is read back through a ScreenModel with G1 set
        to line drawing: a raw stream's ``ESC ( 0 q`` and render()'s ``─`` compare equal.
        """
        styled = self.run("capture-pane", "-p", "-e", "-t", name)
        view = ScreenModel(24, 80)
        view.feed(b"\x1b)0" + "\r\n".join(styled.rstrip("\n").split("\n")).encode())
        flags = self.run("display", "-p", "-t", name, FLAGS).strip().split("|", 1)[1]
        x, y, rest = flags.split(",", 2)
        return TmuxScreen(view.text(), grid(view), (int(y), int(x)), rest)


@attrs.frozen
class TmuxScreen:
    text: str
    cells: tuple[tuple[Cell, ...], ...] = attrs.field(repr=False)
    cursor: tuple[int, int]
    flags: str


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    server = Tmux(tmp_path)
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.SubprocessError):
            server.run("kill-server")
        tmpdir = os.environ.get("TMUX_TMPDIR", "/tmp")
        with contextlib.suppress(OSError):  # tmux leaves its socket file behind
            os.unlink(f"{tmpdir}/tmux-{os.getuid()}/{server.socket}")


def run_curses_app(tmp: Path) -> tuple[bytes, int]:
    """Run the curses app in a real 80x24 PTY; press a key after READY1 and after READY2.

    Returns everything it printed, and the offset just after the READY1 marker.
    """
    script = tmp / "app.py"
    script.write_text(textwrap.dedent(CURSES_APP))
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = dict(os.environ, TERM="xterm-256color", LANG="C.UTF-8", LC_ALL="C.UTF-8")
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdin=slave, stdout=slave, stderr=slave, env=env,
        start_new_session=True, close_fds=True,
    )  # fmt: skip
    os.close(slave)
    out = bytearray()
    pressed: set[bytes] = set()
    deadline = time.monotonic() + 20
    try:
        while True:
            assert time.monotonic() < deadline, f"curses app stuck; output: {bytes(out)[-300:]!r}"
            ready, _, _ = select.select([master], [], [], 1.0)
            if not ready:
                continue
            try:
                chunk = os.read(master, 65536)
            except OSError as exc:  # EIO: the app exited and its output is drained
                if exc.errno != errno.EIO:
                    raise
                break
            if not chunk:
                break
            out += chunk
            for marker in (b"READY1", b"READY2"):
                if marker in out and marker not in pressed:
                    pressed.add(marker)
                    os.write(master, b"x")
        assert proc.wait(timeout=10) == 0
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    data = bytes(out)
    return data, data.index(b"READY1\x07") + len(b"READY1\x07")


def test_curses_app_through_tmux(tmux: Tmux, tmp_path: Path) -> None:
    stream, middle = run_curses_app(tmp_path)
    # What makes it a good test: alternate screen, mouse, keypad, DEC line drawing, csr.
    for sequence in (b"\x1b[?1049h", b"\x1b[?1006;1000h", b"\x1b[?1h\x1b=", b"\x1b(0", b"9;21r"):
        assert sequence in stream

    during = model_of(stream[:middle])
    assert during.modes().alt_screen and during.modes().app_cursor_keys
    assert "superv screen test" in during.text() and "漢字テスト wide" in during.text()
    assert "┌" in during.text()  # ACS line drawing became box characters
    final = model_of(stream)
    assert final.text().rstrip().endswith("bye from curses, green")

    tmux.show("raw_during", stream[:middle])
    tmux.show("render_during", during.render())
    tmux.show("raw", stream)
    tmux.show("continued", during.render() + stream[middle:])
    tmux.show("render_final", final.render())
    for name in ("raw_during", "render_during", "raw", "continued", "render_final"):
        tmux.wait(name)

    # The model agrees with tmux on the raw stream, and render() reproduces it exactly:
    # text, attributes, cursor, alternate screen, keypad and mouse modes, scroll region.
    raw_during = tmux.screen("raw_during")
    assert raw_during.text == during.text()
    assert raw_during.cursor == during.cursor()
    assert tmux.screen("render_during") == raw_during

    raw = tmux.screen("raw")
    assert raw.text == final.text()
    assert tmux.screen("continued") == raw
    assert tmux.screen("render_final") == raw
