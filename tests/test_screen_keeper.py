"""The worker's screen model fails and comes back; no client input breaks it for good."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from conftest import SupervEnv, wait_until
from test_worker import FAST, agent
from worker_helpers import connect, log_bytes, log_size, start_worker, stop_worker

from agent_worker import protocol as p
from agent_worker.log import OutputLog
from agent_worker.screen import ScreenModel
from agent_worker.screen.keeper import BACKLOG, RESTART_WINDOW, ScreenKeeper
from agent_worker.screen_size import MAX_COLS, MAX_ROWS


class BuggyModel(ScreenModel):
    """A real model with a planted bug: it raises on output that contains ``BUG``."""

    def feed(self, data: bytes) -> None:
        if b"BUG" in data:
            raise RuntimeError("planted bug")
        super().feed(data)


class BuggyKeeper(ScreenKeeper):
    def new_model(self) -> ScreenModel:
        return BuggyModel(self.rows, self.cols)


def test_a_failed_model_is_rebuilt_from_recent_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = OutputLog(tmp_path)
    keeper = BuggyKeeper(out.reader, 0, 5, 40)
    out.append(b"\x1b[2J\x1b[Hfirst screen\r\n")
    assert keeper.step(out.end, 4096)
    out.append(b"a BUG here\r\n")
    assert keeper.step(out.end, 4096)  # the failure is logged, the model dropped
    assert keeper.failed
    logged = capsys.readouterr()
    assert "screen_model_failed" in logged.out + logged.err and "planted bug" in logged.out + logged.err
    assert keeper.step(out.end, 4096) and keeper.failed  # no retry in the background
    assert keeper.render(out.end) is None  # the rebuild meets the same bug: no screen
    # Once the bug has scrolled out of the recent output, the next request rebuilds it.
    out.append(b"".join(b"line %05d\r\n" % i for i in range(RESTART_WINDOW // 10)))
    out.append(b"\x1b[2J\x1b[Hthe screen now")
    model = keeper.screen(out.end)
    assert model is not None and not keeper.failed
    assert model.text() == "the screen now"
    assert keeper.render(out.end) is not None
    out.close()


def test_a_model_far_behind_restarts_from_recent_output_rather_than_parse_it_all(
    tmp_path: Path,
) -> None:
    """A paint blocks the worker while the model catches up: after a flood, a model 362 kB
    behind took 0.82 s to paint, and the Ctrl-C that would end the flood waited unread."""
    out = OutputLog(tmp_path)
    keeper = ScreenKeeper(out.reader, 0, 5, 40)
    out.append(b"\x1b[2J\x1b[Hfirst screen\r\n")
    assert keeper.render(out.end) is not None and keeper.exact
    out.append(b"".join(b"flood %06d\r\n" % i for i in range(300_000 // 13)))
    assert out.end - keeper.offset < 512 * 1024  # less than the old threshold
    assert keeper.render(out.end) is not None
    assert not keeper.exact  # restarted from the recent lines, not fed all 300 kB
    assert out.end - keeper.offset == 0 and BACKLOG <= 2 * RESTART_WINDOW
    out.close()


def test_model_sizes_are_clamped() -> None:
    model = ScreenModel(20000, 20000)
    assert (model.rows, model.cols) == (MAX_ROWS, MAX_COLS)
    model.feed(b"\x1b[20000;20000Hx")
    assert model.cursor() == (MAX_ROWS - 1, MAX_COLS - 1)
    model.resize(0, -5)
    assert (model.rows, model.cols) == (1, 1)
    assert model.render()


def test_a_huge_hello_does_not_break_the_screen(superv_env: SupervEnv) -> None:
    """Issue 14.3: a read-write hello of 20000x20000 before the model exists broke it for
    good; every later attach got no screen."""
    senv = superv_env
    code = """
    sys.stdin.readline()
    out.write(b"\\x1b[2J\\x1b[Hafter the huge hello\\r\\n"); out.flush()
    sys.stdin.read()
    """
    proc, ready = start_worker(senv, "huge", agent(code, echo=False), extra_env=FAST)
    assert ready["ok"]
    try:
        # Refused at the edge now (agent_worker.conversation), with a clear error...
        with pytest.raises(ConnectionRefusedError, match="20000x20000 is out of range"):
            connect(senv, "huge", p.Start.OFFSET, 0, rows=20000, cols=20000)
        peek = senv.superv("peek", "huge", timeout=10)  # before any output: it tracebacked
        assert peek.returncode == 0 and peek.stdout == "\n", (peek.stdout, peek.stderr)
        # ...and the screen it would have broken is there for every later client.
        conn, _ = connect(senv, "huge", p.Start.OFFSET, 0)
        conn.send(p.Input(b"go\n"))
        wait_until(lambda: b"after the huge hello" in log_bytes(senv, "huge"), message="output")
        conn.send(p.Detach())
        conn.close()
        for read_only in (True, False, True):
            conn, _ = connect(senv, "huge", p.Start.SCREEN, read_only=read_only, timeout=10)
            msg = conn.receive()
            conn.close()
            assert isinstance(msg, p.Screen), msg
            assert msg.offset == log_size(senv, "huge")
            assert b"after the huge hello" in msg.data
        peek = senv.superv("peek", "huge", timeout=10)  # it hung for over 10 s
        assert peek.returncode == 0 and "after the huge hello" in peek.stdout, peek.stderr
    finally:
        stop_worker(proc)


def test_recent_start_finds_anchors_in_any_form(tmp_path: Path) -> None:
    from agent_worker.screen_from_log import WINDOW, recent_start

    filler = b"".join(b"line %05d\r\n" % i for i in range(WINDOW // 10))
    for n, (anchor, exact) in enumerate((
        (b"\x1b[?1049;25h", True),
        (b"\x1b[1;1H\x1b[J", True),
        (b"\x1b[2J", True),
        (b"\x1bc", True),
        (b"\x1b[5;1H\x1b[J", False),  # clears below row 5 only
        (b"\x1b[?2J", False),
    )):
        (tmp_path / str(n)).mkdir()
        out = OutputLog(tmp_path / str(n))
        out.append(filler + anchor + b"screen")
        start, found = recent_start(out.reader, out.end)
        assert found is exact, anchor
        assert 0 < start <= out.end - WINDOW + 12  # the first line start in the window
        out.close()


@pytest.mark.parametrize("tail", [
    b"last, unfinished",
    b"^C\r\n\x1b[?2004hSVPROMPT> ",  # a shell's prompt after a Ctrl-C
    b"\x1b[1mbold\r\nmore\r\n\x1b[3Aover\x1b[0m\r\n",  # up into the flood's rows
    b"\x1b[3;5r\x1b[5H" + b"in the region\r\n" * 9,  # a scroll region
    b"\x1b[2J\x1b[Hclean",  # an anchor: exact
], ids=["plain", "prompt", "cursor-up", "scroll-region", "anchor"])
@pytest.mark.parametrize("widths", [(0, 3, 9), (0, 3, 79, 80, 81, 200)], ids=["short", "wrapping"])
@pytest.mark.parametrize(("rows", "cols"), [(24, 80), (5, 10)])
def test_a_flood_of_plain_lines_is_rebuilt_from_its_last_lines_to_the_same_screen(
        tmp_path: Path, rows: int, cols: int, widths: tuple[int, ...], tail: bytes) -> None:
    """A paint after ``yes`` or ``cat`` parses about a screenful, not the whole window,
    and the screen is the same, whatever follows the flood: long lines that wrap, tabs,
    backspaces, escapes that move the cursor up into the flood's rows."""
    from agent_worker.screen_from_log import WINDOW, recent_start

    rng = random.Random(rows)
    lines = [b"%d" % i + b"x" * rng.choice(widths) + rng.choice((b"", b"\tt", b"ab\bc"))
             for i in range(WINDOW // 4)]
    out = OutputLog(tmp_path)
    out.append(b"\x1b[31mcolour before the window\r\n" + b"\r\n".join(lines) + b"\r\n" + tail)
    whole, whole_exact = recent_start(out.reader, out.end)
    start, exact = recent_start(out.reader, out.end, rows=rows)
    assert exact is whole_exact is tail.startswith(b"\x1b[2J")
    assert out.end - start < len(tail) + (rows + 2) * 220  # about a screenful
    screens = []
    for begin in (whole, start):
        model = ScreenModel(rows, cols)
        model.feed(out.reader.read(begin, out.end - begin))
        screens.append((model.render(), model.cursor()))
    assert screens[0] == screens[1]
    out.close()
