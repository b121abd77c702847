"""The protocol's conversation, both ends, byte by byte and without sockets.

A server and a client conversation are wired back to back through byte strings; the
properties: whatever the split of the bytes, the client sees every output byte once and
in order; a duplicate is dropped, a gap is a violation; read-only input never comes out
of the server; the exit ends an attach stream; every rule a peer breaks is a Violation
(never an exception) and ends the conversation.
"""

from __future__ import annotations

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_worker import protocol as p
from agent_worker.conversation import (
    ACK_EVERY,
    MAX_COLS,
    MAX_ROWS,
    NEED_DATA,
    ClientConversation,
    Closed,
    Exited,
    Failed,
    LocalProtocolError,
    Notice,
    Refused,
    ServerConversation,
    SessionInfo,
    Skipped,
    State,
    Violation,
    event_from_body,
)

SETTINGS = settings(deadline=None, max_examples=100, suppress_health_check=[HealthCheck.too_slow])
INFO = SessionInfo(name="s", agent_pid=10, worker_pid=11, log_end=0)


def events(conv: ServerConversation | ClientConversation) -> list[object]:
    out = []
    while (ev := conv.next_event()) is not NEED_DATA:
        out.append(ev)
        if isinstance(ev, Closed | Violation):
            break
    return out


def feed_in_pieces(conv: ServerConversation | ClientConversation, data: bytes,
                   cuts: list[int]) -> list[object]:
    out: list[object] = []
    prev = 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        if cut > prev:  # b"" would mean the end of the connection
            conv.receive_data(data[prev:cut])
        prev = cut
        out += events(conv)
        if out and isinstance(out[-1], Closed | Violation):
            break
    return out


def welcomed(hello: p.Hello) -> tuple[ServerConversation, ClientConversation]:
    server, client = ServerConversation(), ClientConversation(hello)
    server.receive_data(client.initiate())
    assert server.next_event() == hello
    client.receive_data(server.send(INFO))
    assert client.next_event() == INFO
    assert server.state is client.state is State.STREAMING
    return server, client


# ---- the hello --------------------------------------------------------------------------


def test_hello_byte_by_byte_then_welcome() -> None:
    hello = p.Hello(p.Start.OFFSET, 5, 30, 100)
    server = ServerConversation()
    data = p.encode(hello)
    for byte in data[:-1]:
        server.receive_data(bytes([byte]))
        assert server.next_event() is NEED_DATA
        assert server.state is State.AWAITING_HELLO
    server.receive_data(data[-1:])
    assert server.next_event() == hello
    assert server.hello == hello


def test_input_before_the_welcome_waits_for_it() -> None:
    server = ServerConversation()
    server.receive_data(p.encode(p.Hello(p.Start.SCREEN)) + p.encode(p.Input(b"x")))
    assert isinstance(server.next_event(), p.Hello)
    assert server.next_event() is NEED_DATA  # nothing past the hello until we answer it
    server.send(INFO)
    assert server.next_event() == p.Input(b"x")


@pytest.mark.parametrize("first", [p.Input(b"x"), p.Detach(), p.Request({"op": "ls"})])
def test_anything_but_a_hello_first_is_a_violation(first: p.Message) -> None:
    server = ServerConversation()
    server.receive_data(p.encode(first))
    ev = server.next_event()
    assert isinstance(ev, Violation) and "hello" in ev.message
    assert server.state is State.ENDED
    error = server.send(p.Error(ev.message))
    assert list(feed(p.Decoder(), error)) == [p.Error(ev.message)]


def feed(dec: p.Decoder, data: bytes) -> list[p.Message]:
    dec.feed(data)
    return list(dec)


def test_wrong_version_is_a_violation_that_says_why() -> None:
    server = ServerConversation()
    server.receive_data(p.encode(p.Hello(p.Start.SCREEN, version=7)))
    ev = server.next_event()
    assert isinstance(ev, Violation) and "different superv versions" in ev.message


@pytest.mark.parametrize("rows,cols", [(20000, 20000), (0, 80), (24, 0), (MAX_ROWS + 1, 80),
                                       (24, MAX_COLS + 1)])
def test_hello_with_a_window_size_out_of_range_is_refused(rows: int, cols: int) -> None:
    server = ServerConversation()
    server.receive_data(p.encode(p.Hello(p.Start.SCREEN, rows=rows, cols=cols)))
    ev = server.next_event()
    assert isinstance(ev, Violation)
    assert f"{rows}x{cols}" in ev.message and "out of range" in ev.message
    assert server.hello is None


def test_largest_window_size_is_accepted() -> None:
    welcomed(p.Hello(p.Start.SCREEN, rows=MAX_ROWS, cols=MAX_COLS))


def test_garbage_after_a_valid_hello_is_a_violation_not_an_exception() -> None:
    # Issue 14.2: a read-only hello, then a one-byte frame of unknown kind 99.
    server, _ = welcomed(p.Hello(p.Start.OFFSET, read_only=True))
    server.receive_data(b"\x00\x00\x00\x01\x63")
    ev = server.next_event()
    assert isinstance(ev, Violation) and "unknown frame kind 99" in ev.message
    assert server.state is State.ENDED
    assert server.send(p.Error(ev.message)).endswith(ev.message.encode())


@pytest.mark.parametrize("msg", [p.Resize(0, 80), p.Resize(24, 60000), p.Signal(0xFFFF),
                                 p.Welcome({}), p.Output(0, b"x")])
def test_bad_messages_while_streaming_are_violations(msg: p.Message) -> None:
    server, _ = welcomed(p.Hello(p.Start.SCREEN))
    server.receive_data(p.encode(msg))
    assert isinstance(server.next_event(), Violation)
    assert server.next_event() == Closed()


def test_eof_before_the_hello_is_closed() -> None:
    server = ServerConversation()
    server.receive_data(p.encode(p.Hello(p.Start.SCREEN))[:5])
    server.receive_data(b"")
    assert server.next_event() == Closed()
    assert server.state is State.ENDED


# ---- read-only --------------------------------------------------------------------------


def test_read_only_input_never_comes_out_and_is_refused_once() -> None:
    server, client = welcomed(p.Hello(p.Start.OFFSET, read_only=True))
    sent = b"".join(p.encode(m) for m in [p.Input(b"rm -rf /\r"), p.Resize(50, 50),
                                           p.Signal(9), p.Stop(0), p.Input(b"y")])
    server.receive_data(sent + p.encode(p.Detach()))
    assert events(server) == [Refused(), p.Detach(), Closed()]
    client.receive_data(server_send_after_end(Refused()))
    assert client.next_event() == Refused()


def server_send_after_end(event: Refused) -> bytes:
    return p.encode(p.Event(event.body()))


def test_read_only_client_cannot_send_input() -> None:
    _, client = welcomed(p.Hello(p.Start.OFFSET, read_only=True))
    with pytest.raises(LocalProtocolError):
        client.send(p.Input(b"x"))
    assert client.send(p.Detach())
    assert client.state is State.ENDED


def test_read_write_client_messages_come_out_in_order() -> None:
    server, client = welcomed(p.Hello(p.Start.SCREEN))
    msgs = [p.Input(b"ls\r"), p.Resize(40, 120), p.Signal(2), p.Stop(500), p.Detach()]
    server.receive_data(b"".join(client.send(m) for m in msgs))
    assert events(server) == [*msgs, Closed()]


# ---- the stream ---------------------------------------------------------------------------


def test_server_drops_what_a_client_already_has_and_refuses_a_gap() -> None:
    server, _ = welcomed(p.Hello(p.Start.OFFSET, 100))
    frame = server.output_frame(100, b"abc")
    assert feed(p.Decoder(), frame) == [p.Output(100, b"abc")]
    assert feed(p.Decoder(), server.output_frame(101, b"bcde")) == [p.Output(103, b"de")]
    assert server.output_frame(102, b"cd") == b""
    with pytest.raises(LocalProtocolError):
        server.output_frame(200, b"x")
    assert server.expects(105) and not server.expects(104)
    server.output_sent(105, 10)
    assert server.position == 115


def test_exit_ends_an_attach_stream_and_nothing_follows() -> None:
    server, client = welcomed(p.Hello(p.Start.OFFSET))
    data = server.output_frame(0, b"bye") + server.send(Exited("exited 0", 0, None, 3))
    assert server.state is State.ENDED
    with pytest.raises(LocalProtocolError):
        server.output_frame(3, b"more")
    client.receive_data(data + p.encode(p.Output(3, b"late")))
    assert events(client) == [p.Output(0, b"bye"), Exited("exited 0", 0, None, 3), Closed()]
    assert client.position == 3


def test_exit_does_not_end_a_watch() -> None:
    server, client = welcomed(p.Hello(p.Start.WATCH))
    data = server.send(Exited("killed 9", None, 9, 0)) + server.send(Notice("detached"))
    client.receive_data(data)
    assert events(client) == [Exited("killed 9", None, 9, 0), Notice("detached")]
    assert client.state is State.STREAMING


def test_screen_sets_where_output_continues() -> None:
    server, client = welcomed(p.Hello(p.Start.SCREEN))
    data = server.send(p.Screen(50, b"\x1b[Hpaint")) + server.output_frame(50, b"live")
    client.receive_data(data)
    assert events(client) == [p.Screen(50, b"\x1b[Hpaint"), p.Output(50, b"live")]
    assert client.position == 54


def test_client_reports_a_gap() -> None:
    _, client = welcomed(p.Hello(p.Start.OFFSET))
    client.receive_data(p.encode(p.Output(0, b"ab")) + p.encode(p.Output(5, b"x")))
    assert client.next_event() == p.Output(0, b"ab")
    ev = client.next_event()
    assert isinstance(ev, Violation) and "missing" in ev.message
    assert client.state is State.ENDED


def test_error_frame_is_failed_and_ends() -> None:
    client = ClientConversation(p.Hello(p.Start.SCREEN))
    client.initiate()
    client.receive_data(p.encode(p.Error("no such session")) + p.encode(p.Output(0, b"x")))
    assert events(client) == [Failed("no such session"), Closed()]


def test_client_wants_a_welcome_first() -> None:
    client = ClientConversation(p.Hello(p.Start.SCREEN))
    client.initiate()
    client.receive_data(p.encode(p.Output(0, b"x")))
    assert isinstance(client.next_event(), Violation)


def test_welcome_with_bad_fields_is_a_violation() -> None:
    client = ClientConversation(p.Hello(p.Start.SCREEN))
    client.initiate()
    client.receive_data(p.encode(p.Welcome({"name": "s", "rows": "many"})))
    assert isinstance(client.next_event(), Violation)


def test_client_brings_its_window_size_into_range() -> None:
    client = ClientConversation(p.Hello(p.Start.SCREEN, rows=0, cols=50000))
    server = ServerConversation()
    server.receive_data(client.initiate())
    assert server.next_event() == p.Hello(p.Start.SCREEN, rows=1, cols=MAX_COLS)
    server.send(INFO)
    server.receive_data(client.send(p.Resize(5000, 10)))
    assert server.next_event() == p.Resize(MAX_ROWS, 10)


def test_session_info_round_trips_and_tolerates_unknown_fields() -> None:
    info = SessionInfo("s", "exited 1", 1, 2, 300, 30, 100, 1.5, "/d", True)
    assert SessionInfo.from_dict({**info.to_dict(), "future": [1]}) == info
    assert not info.running and SessionInfo("s").running


def test_exited_body_is_the_one_shape() -> None:
    ex = Exited("killed 15", None, 15, 42)
    assert ex.body() == {"event": "exited", "state": "killed 15", "exit_code": None,
                         "exit_signal": 15, "log_end": 42}
    assert event_from_body(ex.body()) == ex
    assert event_from_body({"event": "exited"}) == Exited("ended")
    assert event_from_body({"event": "attached", "client": 3}) == Notice("attached", {"client": 3})


# ---- properties -------------------------------------------------------------------------

chunks = st.lists(st.binary(min_size=0, max_size=40), min_size=1, max_size=20)


@SETTINGS
@given(chunks, st.lists(st.integers(0, 10_000), max_size=20),
       st.lists(st.integers(0, 5), max_size=20))
def test_client_sees_every_byte_once_whatever_the_splits_and_overlaps(
    pieces: list[bytes], cuts: list[int], backs: list[int]
) -> None:
    """A server whose frames overlap (a replay that goes back a little) still gives the
    client the stream exactly once, however the bytes are cut."""
    wire = bytearray(p.encode(p.Welcome(INFO.to_dict())))
    stream = b"".join(pieces)
    pos = 0
    for i, piece in enumerate(pieces):
        back = min(backs[i] if i < len(backs) else 0, pos)
        wire += p.encode(p.Output(pos - back, stream[pos - back : pos] + piece))
        pos += len(piece)
    wire += p.encode(p.Event(Exited("exited 0", 0, None, pos).body()))
    client = ClientConversation(p.Hello(p.Start.OFFSET))
    client.initiate()
    got = feed_in_pieces(client, bytes(wire), cuts)
    assert got[0] == INFO and got[-2:] == [Exited("exited 0", 0, None, pos), Closed()]
    outputs = [ev for ev in got if isinstance(ev, p.Output)]
    assert b"".join(o.data for o in outputs) == stream
    assert client.position == pos


@SETTINGS
@given(st.lists(st.sampled_from([p.Input(b"k"), p.Resize(30, 90), p.Signal(15), p.Stop(1)]),
                max_size=10),
       st.lists(st.integers(0, 1000), max_size=10), st.booleans())
def test_server_gives_what_the_client_sent_whatever_the_splits(
    msgs: list[p.Message], cuts: list[int], read_only: bool
) -> None:
    hello = p.Hello(p.Start.OFFSET, read_only=read_only)
    server = ServerConversation()
    wire = p.encode(hello) + b"".join(p.encode(m) for m in msgs) + p.encode(p.Detach())
    got = feed_in_pieces(server, wire[:len(p.encode(hello))], cuts)
    assert got == [hello]
    server.send(INFO)
    got = feed_in_pieces(server, wire[len(p.encode(hello)):], cuts)
    if read_only:
        assert got == ([Refused()] if msgs else []) + [p.Detach(), Closed()]
    else:
        assert got == [*msgs, p.Detach(), Closed()]


@SETTINGS
@given(st.binary(max_size=200), st.booleans())
def test_garbage_gives_violations_never_exceptions(garbage: bytes, after_hello: bool) -> None:
    for conv in (ServerConversation(), ClientConversation(p.Hello(p.Start.OFFSET))):
        if after_hello:
            if isinstance(conv, ServerConversation):
                conv.receive_data(p.encode(p.Hello(p.Start.OFFSET)))
                assert isinstance(conv.next_event(), p.Hello)
                conv.send(INFO)
            else:
                conv.initiate()
                conv.receive_data(p.encode(p.Welcome(INFO.to_dict())))
                assert conv.next_event() == INFO
        conv.receive_data(garbage)
        conv.receive_data(b"")
        got = events(conv)
        assert isinstance(got[-1], Closed | Violation | Failed) or conv.state is State.ENDED


# ---- acks and skips (protocol version 2, issue 12) ------------------------------------------


def pair(flags: int, client_version: int = p.VERSION) -> tuple[ServerConversation,
                                                              ClientConversation]:
    client = ClientConversation(p.Hello(p.Start.OFFSET, 0, version=client_version, flags=flags))
    server = ServerConversation()
    server.receive_data(client.initiate())
    assert isinstance(server.next_event(), p.Hello)
    client.receive_data(server.send(INFO))
    assert isinstance(client.next_event(), SessionInfo)
    return server, client


def test_a_client_acks_what_it_was_sent_and_the_server_reads_it() -> None:
    server, client = pair(p.FEED_ACKS)
    assert client.acks and client.ack() == b""  # nothing shown yet
    client.receive_data(server.output_frame(0, b"echo"))
    assert isinstance(client.next_event(), p.Output)
    assert client.ack() == b""  # a keystroke's echo costs no ack
    client.receive_data(server.output_frame(4, b"x" * ACK_EVERY))
    assert isinstance(client.next_event(), p.Output)
    server.receive_data(client.ack())
    end = 4 + ACK_EVERY
    assert server.next_event() == p.Ack(end) and server.acked == end
    assert client.ack() == b""  # said once


def test_a_version_1_client_still_works_and_never_acks() -> None:
    server, client = pair(0, client_version=1)
    assert client.version == 1 and not client.acks
    client.receive_data(server.output_frame(0, b"hello"))
    assert client.next_event() == p.Output(0, b"hello")
    assert client.ack() == b""
    assert p.decode_body(p.Hello.KIND, p.encode(p.Hello(p.Start.SCREEN, version=1))[5:]) \
        == p.Hello(p.Start.SCREEN, version=1)


@pytest.mark.parametrize("flags, ack, why", [
    (0, 0, "did not ask to ack"),
    (p.FEED_ACKS, 6, "outside 0..5"),
])
def test_an_ack_the_server_did_not_ask_for_or_past_what_it_sent_is_a_violation(
    flags: int, ack: int, why: str
) -> None:
    server, _ = pair(flags)
    server.output_frame(0, b"hello")
    server.receive_data(p.encode(p.Ack(ack)))
    event = server.next_event()
    assert isinstance(event, Violation) and why in event.message


def test_an_ack_going_back_is_a_violation() -> None:
    server, _ = pair(p.FEED_ACKS)
    server.output_frame(0, b"hello")
    server.receive_data(p.encode(p.Ack(4)) + p.encode(p.Ack(3)))
    assert server.next_event() == p.Ack(4)
    assert isinstance(server.next_event(), Violation)


def test_a_screen_ahead_of_the_client_is_a_skip_of_what_it_did_not_get() -> None:
    server, client = pair(p.FEED_ACKS | p.FEED_SKIP)
    client.receive_data(server.output_frame(0, b"abc"))
    client.receive_data(server.send(p.Screen(1000, b"\x1b[Hnow")))
    client.receive_data(server.output_frame(1000, b"!"))
    got = events(client)
    assert got[0] == p.Output(0, b"abc")
    assert got[1] == Skipped(p.Screen(1000, b"\x1b[Hnow"), 997) and got[1].data == b"\x1b[Hnow"
    assert got[2] == p.Output(1000, b"!") and client.position == 1001


def test_a_repaint_is_for_a_client_that_may_be_skipped() -> None:
    server, client = pair(p.FEED_ACKS | p.FEED_SKIP)
    server.receive_data(client.send(p.Repaint()))
    assert server.next_event() == p.Repaint()
    server, client = pair(p.FEED_ACKS)  # --exact: a screen mid-stream would skip bytes
    with pytest.raises(LocalProtocolError):
        client.send(p.Repaint())
    server.receive_data(p.encode(p.Repaint()))
    assert isinstance(server.next_event(), Violation)


# ---- handing the terminal over (issue 13) ----------------------------------------------


def offered(hello: p.Hello) -> tuple[ServerConversation, ClientConversation]:
    server, client = ServerConversation(), ClientConversation(hello)
    server.receive_data(client.initiate())
    assert server.next_event() == hello
    client.receive_data(server.send(attrs.evolve(INFO, takes_terminal=True)))
    assert client.next_event() == attrs.evolve(INFO, takes_terminal=True)
    return server, client


HANDING = p.Hello(p.Start.SCREEN, flags=p.FEED_ACKS | p.FEED_TERMINAL)


def test_a_handed_terminal_comes_first_then_show_frames_are_allowed() -> None:
    server, client = offered(HANDING)
    assert client.may_hand_terminal
    server.receive_data(client.send(p.Terminal(b"\x1c")) + client.send(p.Show(b"status")))
    assert events(server) == [p.Terminal(b"\x1c"), p.Show(b"status")]


def test_anything_but_the_terminal_after_the_offer_is_a_violation() -> None:
    server, client = offered(HANDING)
    server.receive_data(client.send(p.Resize(30, 100)))
    [violation] = events(server)
    assert isinstance(violation, Violation) and "before the terminal" in violation.message


def test_no_terminal_or_show_without_the_offer() -> None:
    server, client = welcomed(HANDING)  # an older worker: its Welcome offers nothing
    assert not client.may_hand_terminal
    with pytest.raises(LocalProtocolError):
        client.send(p.Terminal(b"\x1c"))
    server.receive_data(p.encode(p.Show(b"x")))
    [violation] = events(server)
    assert isinstance(violation, Violation)


def test_a_worker_offers_nothing_to_a_client_that_did_not_ask() -> None:
    server = ServerConversation()
    server.receive_data(p.encode(p.Hello(p.Start.SCREEN, flags=p.FEED_ACKS)))
    server.next_event()
    server.send(attrs.evolve(INFO, takes_terminal=True))
    server.receive_data(p.encode(p.Terminal(b"\x1c")))
    [violation] = events(server)
    assert isinstance(violation, Violation) and "did not ask" in violation.message
