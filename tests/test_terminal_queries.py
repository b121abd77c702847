"""Terminal queries answered while no terminal is attached (agent_worker.terminal_queries)."""

from __future__ import annotations

from conftest import SupervEnv, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st
from test_worker import FAST, agent
from worker_helpers import log_bytes, start_worker, stop_worker, wait_exit

from agent_worker.escapes import CSI, OSC, Tokenizer
from agent_worker.terminal_queries import QueryAnswerer

QUERIES = (
    b"\x1b[6n",
    b"\x1b[c",
    b"\x1b[0c",
    b"\x1b[>c",
    b"\x1b[>0c",
    b"\x1b]10;?\x07",
    b"\x1b]11;?\x1b\\",
)
ANSWERS = (
    b"\x1b[3;5R",
    b"\x1b[?62;22c",
    b"\x1b[?62;22c",
    b"\x1b[>0;10;1c",
    b"\x1b[>0;10;1c",
    b"\x1b]10;rgb:ffff/ffff/ffff\x07",
    b"\x1b]11;rgb:0000/0000/0000\x1b\\",
)


def cursor() -> tuple[int, int]:
    return 2, 4


def test_each_query_is_answered_the_way_it_was_asked() -> None:
    for query, answer in zip(QUERIES, ANSWERS, strict=True):
        assert QueryAnswerer().feed(b"text " + query + b" more", cursor) == answer


def test_a_query_split_anywhere_is_answered_once() -> None:
    stream = b"\x1b[1;31mred\x1b[0m " + b" ".join(QUERIES) + b"\r\n"
    for cut in range(len(stream) + 1):
        answerer = QueryAnswerer()
        got = answerer.feed(stream[:cut], cursor) + answerer.feed(stream[cut:], cursor)
        assert got == b"".join(ANSWERS), cut
    byte_by_byte = QueryAnswerer()
    assert b"".join(byte_by_byte.feed(bytes([b]), cursor) for b in stream) == b"".join(ANSWERS)


def test_query_lookalikes_are_not_answered() -> None:
    answerer = QueryAnswerer()
    assert answerer.feed(b"\x1b]0;[6n and [c\x07", cursor) == b""  # a window title
    assert answerer.feed(b"\x1b[?6n\x1b[1;6n\x1b[6 n\x1b[=c", cursor) == b""
    assert answerer.feed(b"\x1b[6n", lambda: None) == b""  # no screen: no made-up position


def test_skipped_output_leaves_no_half_query_behind() -> None:
    answerer = QueryAnswerer()
    assert answerer.feed(b"\x1b[", cursor) == b""
    answerer.skip()  # a client was attached: it saw the rest
    assert answerer.feed(b"6n", cursor) == b""


def test_query_split_across_two_pty_reads_is_answered(superv_env: SupervEnv) -> None:
    """The agent writes ESC [ , waits until the worker has logged it, then writes 6n."""
    senv = superv_env
    log = senv.session_dir("split") / "output.log"
    code = f"""
    tty.setraw(0)
    out.write(b"abc\\x1b["); out.flush()
    deadline = time.monotonic() + 10
    while not open({str(log)!r}, "rb").read().endswith(b"abc\\x1b["):
        if time.monotonic() > deadline:
            break
        time.sleep(0.01)
    out.write(b"6n"); out.flush()
    reply = b""
    while not reply.endswith(b"R"):
        if not select.select([0], [], [], 5)[0]:
            break
        reply += os.read(0, 100)
    out.write(b"\\r\\nreply=" + reply.replace(b"\\x1b", b"ESC") + b"\\r\\n"); out.flush()
    """
    proc, ready = start_worker(senv, "split", agent(code, echo=False), extra_env=FAST)
    assert ready["ok"]
    try:

        wait_until(lambda: b"reply=" in log_bytes(senv, "split"), timeout=20, message="reply")
        assert b"reply=ESC[1;4R" in log_bytes(senv, "split")
    finally:
        stop_worker(proc)
    wait_exit(proc)


PIECES = st.sampled_from([
    "\x1b", "[", "]", "P", "?", ">", "0", "1", "6", "10", "11", ";", "c", "n", "h", "m",
    "\x07", "\\", "\x18", "\r\n", "text", "é",
])


@settings(max_examples=300, deadline=None)
@given(st.lists(PIECES, max_size=40).map("".join), st.data())
def test_the_shortcut_answers_what_reading_everything_answers(
    stream: str, data: st.DataObject
) -> None:
    """Skipping to where a query may begin gives the answers of reading every sequence."""
    raw = stream.encode()
    expected = b""
    for token in Tokenizer().feed(raw.decode("latin-1")):
        if type(token) in (CSI, OSC):
            one = QueryAnswerer()  # a whole query alone is answered: the reference
            expected += one.feed(("\x1b[" + "".join(token) if type(token) is CSI else
                                  "\x1b]" + "".join(token)).encode("latin-1"), cursor)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(raw)), max_size=5)))
    answerer = QueryAnswerer()
    got = b"".join(
        answerer.feed(raw[a:b], cursor) for a, b in zip([0, *cuts], [*cuts, len(raw)], strict=True)
    )
    assert got == expected
