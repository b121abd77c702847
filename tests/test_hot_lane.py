"""The hot path's native lane (issue 13): built here, the one that serves a live attach,
and what it leaves to Python still done: the log's index, read-only input, the detach key,
a socket client joining.  (Every test of tests/test_terminal_handoff.py runs with and
without it.)

Real parts: a real worker, a local attach on a real PTY, ``cat`` as the agent.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator

import pytest
from attach_helpers import EPOLL_WAITS, PtyAttach, attached, lane_threads, worker_pid
from conftest import SupervEnv, wait_until
from test_cli import EventStream
from worker_helpers import connect, log_bytes, log_size, read_all

from agent_worker import hot_lane
from agent_worker import protocol as p
from agent_worker.activity.tracker import QUIET_AFTER
from agent_worker.hot_path import TELL_LONGEST, TELL_QUIET
from agent_worker.log import LogReader
from agent_worker.snapshot import read_snapshot
from agent_worker.worker import EXIT_DRAIN

pytestmark = pytest.mark.timeout(60)

CAT = ["sh", "-c", "stty raw -echo; exec cat"]


def test_the_native_lane_is_built_here() -> None:
    # scripts/test installs a C compiler and Python's headers before it installs superv;
    # a checkout whose install could not build the lane must not pass as one that did.
    assert hot_lane.built(), "agent_worker._hot_lane is not built: install gcc and python3-dev, " \
                             "then pip install -e . again"


def start_cat(senv: SupervEnv, hot_path: str) -> None:
    """The session ``cat``, its keys and output through the hot path ``hot_path``."""
    senv.env["SUPERV_HOT_PATH"] = hot_path
    senv.superv("start", "cat", "--", *CAT, check=True)


@pytest.fixture
def typing(superv_env: SupervEnv, attaches: list[PtyAttach]) -> Iterator[tuple[PtyAttach, int]]:
    start_cat(superv_env, "native")
    attach = attached(superv_env, "cat")
    attaches.append(attach)
    yield attach, worker_pid(superv_env, "cat")


@pytest.mark.skipif(not EPOLL_WAITS, reason="the syscall numbers of this machine are not listed")
@pytest.mark.parametrize("setting", ["native", "python"])
def test_a_live_attach_is_served_by_the_lane_unless_told_python(
    superv_env: SupervEnv, attaches: list[PtyAttach], setting: str
) -> None:
    start_cat(superv_env, setting)
    attach = attached(superv_env, "cat")
    attaches.append(attach)
    worker = worker_pid(superv_env, "cat")
    in_lane = []
    for key in b"abcdefgh":  # each key echoed, through whichever path serves it
        attach.type(bytes([key]))
        attach.read_until(b"abcdefgh"[: b"abcdefgh".index(key) + 1])
        in_lane.append(lane_threads(worker))
    if setting == "native":
        wait_until(lambda: lane_threads(worker) == 1, timeout=10,
                   message="the worker's hot path waiting in the native lane")
    else:  # looked at after each key's echo, when the native lane would be waiting again
        assert in_lane == [0] * 8


@pytest.mark.skipif(not EPOLL_WAITS, reason="the syscall numbers of this machine are not listed")
def test_the_lane_serves_again_once_trio_has_heard_without_another_key(
    superv_env: SupervEnv, typing: tuple[PtyAttach, int]
) -> None:
    # Hearing of the output, trio takes the hot path's lock and the lane stands aside for
    # it; the loop must go back into the lane then, not wait in Python for the next key.
    attach, worker = typing
    attach.type(b"<key>")
    attach.read_until(b"<key>")
    told_by = time.monotonic() + 2 * TELL_QUIET  # trio has heard of the echo by then
    wait_until(lambda: time.monotonic() > told_by and lane_threads(worker) == 1, timeout=10,
               message="the lane serving again after trio heard of the echo")


def test_the_index_keeps_its_records_while_the_lane_serves(
    superv_env: SupervEnv, typing: tuple[PtyAttach, int]
) -> None:
    # The lane writes them itself (log.py's record, kept in the C source): each names the
    # offset of the batch it came before, and when.
    attach, _ = typing
    directory = superv_env.session_dir("cat")
    before = len(LogReader(directory).index())
    began = time.time()
    for i in range(12):  # 3 s of typing: an index record each second of output
        attach.type(b"%d," % i)
        attach.read_until(b"%d," % i)
        time.sleep(0.25)  # the typist's pace is what this is about
    ended = time.time()
    records = LogReader(directory).index()
    assert len(records) - before >= 2, records
    offsets = [o for o, _ in records]
    assert offsets == sorted(offsets) and len(set(offsets)) == len(offsets), records
    log = (directory / "output.log").read_bytes()
    for offset, at in records[before:]:
        assert began <= at <= ended, (records, began, ended)
        assert log[offset:offset + 1].isdigit(), (offset, log)  # a batch's start: "N,"
        assert log[offset - 1:offset] in (b",", b"."), (offset, log)


def test_a_read_only_attach_through_the_lane_types_nothing(
    superv_env: SupervEnv, typing: tuple[PtyAttach, int], attaches: list[PtyAttach]
) -> None:
    writer, _ = typing
    reader = PtyAttach(superv_env, "cat", "-r")
    attaches.append(reader)
    reader.read_until(b"\x1b[?2026l")  # its screen painted: it is attached
    writer.type(b"<one>")
    reader.read_until(b"<one>")
    reader.type(b"XYZ")
    reader.read_until(b"read-only: input ignored")
    writer.type(b"<two>")
    writer.read_until(b"<two>")
    log = (superv_env.session_dir("cat") / "output.log").read_bytes()
    assert b"XYZ" not in log and log.endswith(b"<two>")


def test_the_detach_key_typed_with_other_keys_detaches_after_typing_them(
    superv_env: SupervEnv, typing: tuple[PtyAttach, int]
) -> None:
    attach, _ = typing
    attach.type(b"last\x1c")  # Ctrl-\ after the word, in one read
    attach.read_until(b"detached")
    assert attach.proc.wait(timeout=10) == 0
    wait_until(lambda: (superv_env.session_dir("cat") / "output.log").read_bytes().endswith(b"last"),
               timeout=10, message="the keys before the detach key typed")


@pytest.mark.parametrize("setting", ["native", "python"])
def test_a_paste_longer_than_a_read_reaches_the_agent_whole(
    superv_env: SupervEnv, attaches: list[PtyAttach], setting: str
) -> None:
    # The terminal is watched edge-triggered (hot_path.EDGE): a read that takes a whole
    # buffer of keys (64 KiB) is followed by another, or the rest would wait for the next
    # key; and a paste the agent cannot take at once queues behind, in order.
    start_cat(superv_env, setting)
    attach = attached(superv_env, "cat", reading=True)
    attaches.append(attach)
    paste = b"".join(b"<%06d>" % i for i in range(40000))  # 320 kB
    view = memoryview(paste)
    while view:
        view = view[os.write(attach.master, view[:4096]):]
    wait_until(lambda: log_bytes(superv_env, "cat").endswith(paste[-64:]), timeout=30,
               message="the paste's end echoed")
    log = log_bytes(superv_env, "cat")
    assert log[log.index(b"<000000>"):] == paste


def test_a_socket_client_joining_a_lane_gets_every_byte_in_order(
    superv_env: SupervEnv, typing: tuple[PtyAttach, int]
) -> None:
    attach, worker = typing
    if EPOLL_WAITS:
        wait_until(lambda: lane_threads(worker) == 1, timeout=10, message="the lane serving")
    conn, _ = connect(superv_env, "cat", p.Start.OFFSET, 0, timeout=20)
    try:
        for i in range(5):
            attach.type(b"<%d>" % i)
            attach.read_until(b"<%d>" % i)
        got = read_all(conn, until_exit=False, until_offset=log_size(superv_env, "cat"))
    finally:
        conn.close()
    assert got.start == 0 and bytes(got.data) == log_bytes(superv_env, "cat")
    assert bytes(got.data).endswith(b"<0><1><2><3><4>")


# The agent of a quiet-time session (generic) that answers each line typed, after a pause
# longer than a keystroke's echo (ECHO_WINDOW), and a trickle that never pauses for
# TELL_QUIET once a line starts it.
ANSWERS = ["sh", "-c", 'while read line; do sleep 0.5; echo "answer: $line"; done']
TRICKLE = ["sh", "-c", "read go; i=0; while [ $i -lt 80 ]; do echo tick $i; sleep 0.1; i=$((i+1)); done"]


def activities(events: EventStream, name: str) -> list[str]:
    return [e["activity"] for e in events.seen if e.get("event") == "activity"
            and e.get("session") == name]


def type_and_find_no_work(senv: SupervEnv, events: EventStream, name: str,
                          type_key: Callable[[bytes], object], text: bytes) -> None:
    """Type ``text`` a key each 0.2 s, then wait out the quiet time: the session never
    counted as working."""
    for key in text:
        type_key(bytes([key]))
        events.pull(0.2)
    wait_until(lambda: log_bytes(senv, name).endswith(text), timeout=10,
               message="the keys typed and echoed")
    quiet_until = time.monotonic() + QUIET_AFTER + 1.0
    while time.monotonic() < quiet_until:
        events.pull(0.2)
    assert "working" not in activities(events, name), events.seen


@contextlib.contextmanager
def watched_attach(senv: SupervEnv, name: str, argv: list[str], setting: str,
                   attaches: list[PtyAttach]) -> Iterator[tuple[PtyAttach, EventStream]]:
    """The session ``name`` running ``argv`` through the hot path ``setting``, attached,
    and the supervisor's events from before the attach on."""
    senv.env["SUPERV_HOT_PATH"] = setting
    senv.superv("start", name, "--", *argv, check=True)
    events = EventStream(senv)
    try:
        events.subscribe(name)
        attach = attached(senv, name)
        attaches.append(attach)
        yield attach, events
    finally:
        events.close()


@pytest.mark.parametrize("setting", ["native", "python"])
def test_typing_is_not_the_agent_at_work_and_its_answer_is(
    superv_env: SupervEnv, attaches: list[PtyAttach], setting: str
) -> None:
    # Output flowing means working, for an agent that says nothing else; but the echo of
    # what the user types is the user at work: seen as the agent's, typing a prompt flipped
    # the session to working and its pause to a finished turn (a notification).
    with watched_attach(superv_env, "answers", ANSWERS, setting, attaches) as (attach, events):
        type_and_find_no_work(superv_env, events, "answers", attach.type, b"hello there")
        attach.type(b"\r")  # the agent answers half a second later: that is its work
        attach.read_until(b"answer: ")
        until = time.monotonic() + QUIET_AFTER + 5.0
        while len(activities(events, "answers")) < 2 and time.monotonic() < until:
            events.pull(0.2)
        assert activities(events, "answers")[:2] == ["working", "idle"], events.seen


def test_keys_from_a_socket_client_are_typing_too(superv_env: SupervEnv) -> None:
    # Keys that come through trio (a remote attach, --stdio) count as typing like a
    # handed terminal's: their echo does not make the agent working.
    superv_env.superv("start", "answers", "--", *ANSWERS, check=True)
    events = EventStream(superv_env)
    conn, _ = connect(superv_env, "answers", p.Start.TAIL, 0)
    try:
        events.subscribe("answers")
        type_and_find_no_work(superv_env, events, "answers",
                              lambda key: conn.send(p.Input(key)), b"quiet please")
    finally:
        conn.close()
        events.close()


@pytest.mark.parametrize("setting", ["native", "python"])
def test_an_agent_printing_on_and_on_is_heard_of_by_the_activity_while_it_goes_on(
    superv_env: SupervEnv, attaches: list[PtyAttach], setting: str
) -> None:
    # While only a handed terminal watches, trio hears of output once it pauses (a prompt
    # waiting), or at the latest TELL_LONGEST after the agent's own began: a line every
    # 0.1 s never pauses for TELL_QUIET, and the session must count as working meanwhile.
    with watched_attach(superv_env, "trickle", TRICKLE, setting, attaches) as (attach, events):
        attach.type(b"\r")
        attach.read_until(b"tick 0")
        began = time.monotonic()
        working = events.wait_for("activity", "trickle", timeout=TELL_LONGEST + 3.0)
        heard = time.monotonic() - began
        assert not attach.shown.endswith(b"tick 79\r\n"), "the trickle ended first"
    assert working["activity"] == "working", events.seen
    assert heard < TELL_LONGEST + 1.5, heard


@pytest.mark.parametrize("setting", ["native", "python", "unattached"])
def test_an_agent_that_prints_and_exits_is_seen_to_end_at_once(
    superv_env: SupervEnv, attaches: list[PtyAttach], setting: str
) -> None:
    # Its last output and the PTY's hang-up come in one edge (EDGE): read only up to a
    # short read, the hang-up went unheard, and every such session ended EXIT_DRAIN late.
    senv = superv_env
    senv.env["SUPERV_HOT_PATH"] = "python" if setting == "python" else "native"
    if setting == "unattached":  # at once: both are there before the thread's first wait
        senv.superv("start", "last", "--", "printf", "bye", check=True)
    else:  # its first key is echoed (the attach types until one is), an x ends it
        senv.superv("start", "last", "--", "sh", "-c",
                    "stty raw -echo; head -c 1; until [ \"$(head -c 1)\" = x ]; do :; done; "
                    "printf bye", check=True)
        attach = attached(senv, "last", reading=True)
        attaches.append(attach)
        attach.type(b"x")
    directory = senv.session_dir("last")
    wait_until(lambda: read_snapshot(directory)[0].ended_at is not None, timeout=20,
               message="the session's end")
    snap = read_snapshot(directory)[0]
    assert snap.ended_at is not None and snap.last_output_at is not None
    assert log_bytes(senv, "last").endswith(b"bye")
    assert snap.ended_at - snap.last_output_at < EXIT_DRAIN / 2
