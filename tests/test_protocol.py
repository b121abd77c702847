"""The wire codec, tested without sockets: bytes in, messages out.

Properties: every message survives encode -> Decoder however the bytes are split; a
truncated stream yields only the complete frames and waits for the rest; garbage gives
valid messages or a ProtocolError (never another exception, a hang or unbounded
buffering); a decoder that raised once stays poisoned.
"""

from __future__ import annotations

import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_worker import protocol as p
from agent_worker.protocol import (
    MAX_FRAME,
    MAX_OUTPUT_CHUNK,
    Decoder,
    ProtocolError,
    decode_body,
    encode,
    encode_output,
)

SETTINGS = settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
HEADER = struct.Struct("!IB")

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
u64 = st.integers(0, (1 << 64) - 1)
small_bytes = st.binary(max_size=300)

# JSON values that survive a round trip unchanged (no NaN, which is != itself).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(1 << 63), 1 << 64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(max_size=8), json_values, max_size=5)
# Error messages are sent as UTF-8: lone surrogates cannot be, so they are left out here.
clean_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=100)

messages = st.one_of(
    st.builds(p.Hello, st.sampled_from(p.Start), u64, u16, u16, st.booleans(), u16),
    st.builds(p.Input, small_bytes),
    st.builds(p.Resize, u16, u16),
    st.just(p.Detach()),
    st.builds(p.Signal, u16),
    st.builds(p.Stop, u32),
    st.builds(p.Welcome, json_objects, u16),
    st.builds(p.Output, u64, small_bytes),
    st.builds(p.Screen, u64, small_bytes),
    st.builds(p.Event, json_objects),
    st.builds(p.Error, clean_text),
    st.builds(p.Request, json_objects),
    st.builds(p.Reply, json_objects),
    st.builds(p.Terminal, st.binary(min_size=1, max_size=p.MAX_DETACH_KEY)),
    st.builds(p.Show, small_bytes),
)


def drain(dec: Decoder) -> list[p.Message]:
    out = []
    while (msg := dec.next_message()) is not None:
        out.append(msg)
    return out


def split_points(data: bytes, draw_cuts: list[int]) -> list[bytes]:
    cuts = sorted({c % (len(data) + 1) for c in draw_cuts})
    pieces, prev = [], 0
    for c in [*cuts, len(data)]:
        pieces.append(data[prev:c])
        prev = c
    return pieces


def assert_clear_error(exc: ProtocolError) -> None:
    text = str(exc)
    assert len(text) >= 15, text
    assert text.isprintable(), text
    assert "struct" not in text and "Traceback" not in text, text


# --- round trips -----------------------------------------------------------------------


@SETTINGS
@given(messages)
def test_every_message_round_trips(msg: p.Message) -> None:
    dec = Decoder()
    dec.feed(encode(msg))
    assert drain(dec) == [msg]
    assert dec.buffered == 0


@SETTINGS
@given(st.lists(messages, max_size=8))
def test_stream_fed_whole(msgs: list[p.Message]) -> None:
    dec = Decoder()
    dec.feed(b"".join(encode(m) for m in msgs))
    assert list(dec) == msgs
    assert dec.buffered == 0


@settings(deadline=None, max_examples=60)
@given(st.lists(messages, min_size=1, max_size=4))
def test_stream_fed_byte_by_byte(msgs: list[p.Message]) -> None:
    data = b"".join(encode(m) for m in msgs)
    dec = Decoder()
    got = []
    for i in range(len(data)):
        dec.feed(data[i : i + 1])
        got.extend(drain(dec))
    assert got == msgs
    assert dec.buffered == 0


@SETTINGS
@given(st.lists(messages, max_size=8), st.lists(st.integers(0, 1 << 20), max_size=20))
def test_stream_fed_in_random_splits(msgs: list[p.Message], cuts: list[int]) -> None:
    data = b"".join(encode(m) for m in msgs)
    dec = Decoder()
    got = []
    for piece in split_points(data, cuts):
        dec.feed(piece)
        got.extend(drain(dec))
    assert got == msgs


@SETTINGS
@given(st.lists(messages, min_size=1, max_size=6), st.data())
def test_truncated_stream_yields_only_complete_frames(msgs: list[p.Message], data) -> None:
    frames = [encode(m) for m in msgs]
    stream = b"".join(frames)
    cut = data.draw(st.integers(0, len(stream) - 1), label="cut")
    dec = Decoder()
    dec.feed(stream[:cut])
    got = drain(dec)  # must neither raise nor loop
    complete, used = 0, 0
    for frame in frames:
        if used + len(frame) > cut:
            break
        used += len(frame)
        complete += 1
    assert got == msgs[:complete]
    assert dec.buffered == cut - used
    # The rest arrives later: nothing lost, nothing duplicated.
    dec.feed(stream[cut:])
    assert got + drain(dec) == msgs


@SETTINGS
@given(st.integers(0, (1 << 64) - 1), st.binary(max_size=300))
def test_encode_output_equals_encode(offset: int, data: bytes) -> None:
    assert encode_output(offset, data) == encode(p.Output(offset, data))
    assert encode_output(offset, memoryview(data)) == encode(p.Output(offset, data))


def test_encode_output_largest_chunk() -> None:
    data = b"\xff" * MAX_OUTPUT_CHUNK
    frame = encode_output(7, data)
    assert frame == encode(p.Output(7, data))
    assert len(frame) == 4 + MAX_FRAME
    dec = Decoder()
    dec.feed(frame)
    assert dec.next_message() == p.Output(7, data)


# --- garbage -----------------------------------------------------------------------------


def decode_garbage(chunks: list[bytes], max_frame: int = MAX_FRAME) -> list[p.Message]:
    """Feed ``chunks``; return the messages, stopping at the first ProtocolError.

    Any other exception fails the test; so does a buffer that outgrows one frame.
    """
    dec = Decoder(max_frame)
    got: list[p.Message] = []
    try:
        for chunk in chunks:
            dec.feed(chunk)
            got.extend(drain(dec))
            # Everything left is one partial frame: bounded by the frame limit.
            assert dec.buffered < 4 + max_frame
    except ProtocolError as exc:
        assert_clear_error(exc)
        # Poisoned for good.
        with pytest.raises(ProtocolError):
            dec.next_message()
        with pytest.raises(ProtocolError):
            dec.feed(encode(p.Detach()))
    return got


@SETTINGS
@given(st.lists(st.binary(max_size=200), max_size=10))
def test_random_bytes(chunks: list[bytes]) -> None:
    decode_garbage(chunks)
    decode_garbage(chunks, max_frame=64)


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=64)), max_size=6))
def test_well_framed_garbage_bodies(frames: list[tuple[int, bytes]]) -> None:
    """Correct lengths, random kinds and bodies: this reaches every body decoder."""
    stream = b"".join(HEADER.pack(1 + len(body), kind) + body for kind, body in frames)
    decode_garbage([stream])


@SETTINGS
@given(st.lists(messages, min_size=1, max_size=4), st.data())
def test_corrupted_valid_stream(msgs: list[p.Message], data) -> None:
    stream = bytearray(b"".join(encode(m) for m in msgs))
    for _ in range(data.draw(st.integers(1, 4), label="flips")):
        i = data.draw(st.integers(0, len(stream) - 1), label="index")
        stream[i] = data.draw(st.integers(0, 255), label="byte")
    decode_garbage([bytes(stream)])


@pytest.mark.parametrize("kind", [p.Welcome.KIND, p.Event.KIND, p.Request.KIND, p.Reply.KIND])
@pytest.mark.parametrize("nest", ["[", '{"a":', '[{"a":'], ids=["list", "object", "mixed"])
def test_deeply_nested_json_is_a_protocol_error(kind: int, nest: str) -> None:
    """A 1 MB frame of '[[[[...' must not escape as RecursionError."""
    prefix = struct.pack("!H", 1) if kind == p.Welcome.KIND else b""
    body = prefix + (nest * ((MAX_FRAME - 16) // len(nest))).encode()
    with pytest.raises(ProtocolError) as info:
        decode_body(kind, body)
    assert_clear_error(info.value)


# --- oversized frames ----------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, MAX_FRAME + 1, 1 << 31, 0xFFFFFFFF])
def test_bad_length_refused_from_header_alone(length: int) -> None:
    dec = Decoder()
    dec.feed(HEADER.pack(length, p.Input.KIND))  # no body at all
    with pytest.raises(ProtocolError, match=f"frame length {length}") as info:
        dec.next_message()
    assert_clear_error(info.value)
    assert dec.buffered == 5  # nothing more was waited for or kept


def test_length_at_limit_is_buffered_not_refused() -> None:
    dec = Decoder()
    dec.feed(HEADER.pack(MAX_FRAME, p.Input.KIND) + b"x" * 1000)
    assert dec.next_message() is None
    dec.feed(b"x" * (MAX_FRAME - 1 - 1000))
    assert dec.next_message() == p.Input(b"x" * (MAX_FRAME - 1))


def test_custom_max_frame() -> None:
    dec = Decoder(max_frame=100)
    dec.feed(encode(p.Input(b"y" * 99)))
    assert dec.next_message() == p.Input(b"y" * 99)
    dec.feed(encode(p.Input(b"y" * 100)))
    with pytest.raises(ProtocolError):
        dec.next_message()


@pytest.mark.parametrize(
    "msg",
    [
        p.Input(b"x" * MAX_FRAME),
        p.Output(0, b"x" * (MAX_OUTPUT_CHUNK + 1)),
        p.Screen(0, b"x" * (MAX_OUTPUT_CHUNK + 1)),
        p.Error("é" * MAX_FRAME),
        p.Event({"x": "y" * MAX_FRAME}),
        p.Welcome({"x": "y" * MAX_FRAME}),
    ],
    ids=lambda m: type(m).__name__,
)
def test_oversized_message_refused_on_encode(msg: p.Message) -> None:
    with pytest.raises(ProtocolError, match="frame limit") as info:
        encode(msg)
    assert_clear_error(info.value)


def test_encode_output_refuses_oversized_chunk() -> None:
    with pytest.raises(ProtocolError, match="frame limit"):
        encode_output(0, b"x" * (MAX_OUTPUT_CHUNK + 1))


def test_largest_input_fits() -> None:
    frame = encode(p.Input(b"x" * (MAX_FRAME - 1)))
    assert len(frame) == 4 + MAX_FRAME


@pytest.mark.parametrize(
    "msg",
    [
        p.Hello(p.Start.OFFSET, value=-1),
        p.Hello(p.Start.OFFSET, value=1 << 64),
        p.Hello(p.Start.OFFSET, rows=70000),
        p.Hello(p.Start.OFFSET, cols=-1),
        p.Hello(p.Start.OFFSET, version=1 << 16),
        p.Hello(7),  # type: ignore[arg-type]
        p.Resize(-1, 80),
        p.Signal(1 << 16),
        p.Stop(-1),
        p.Stop(1 << 32),
        p.Welcome({}, version=-1),
        p.Output(-1, b""),
        p.Output(1 << 64, b""),
        p.Screen(-5, b""),
    ],
    ids=repr,
)
def test_out_of_range_fields_refused_on_encode(msg: p.Message) -> None:
    """The encoder never emits a frame its own decoder would refuse or misread."""
    with pytest.raises(ProtocolError) as info:
        encode(msg)
    assert_clear_error(info.value)


def test_encode_output_refuses_bad_offset() -> None:
    with pytest.raises(ProtocolError):
        encode_output(-1, b"x")


def test_encode_rejects_non_messages() -> None:
    with pytest.raises(TypeError):
        encode("hello")  # type: ignore[arg-type]


# --- malformed bodies ----------------------------------------------------------------------


def frame(kind: int, body: bytes) -> bytes:
    return HEADER.pack(1 + len(body), kind) + body


def assert_refused(data: bytes, match: str | None = None) -> ProtocolError:
    dec = Decoder()
    dec.feed(data)
    with pytest.raises(ProtocolError, match=match) as info:
        dec.next_message()
    assert_clear_error(info.value)
    # Poisoned: even a valid frame afterwards is not decoded.
    with pytest.raises(ProtocolError):
        dec.feed(encode(p.Detach()))
    with pytest.raises(ProtocolError):
        dec.next_message()
    return info.value


FIXED = [
    (p.Hello.KIND, 16, "hello"),
    (p.Resize.KIND, 4, "resize"),
    (p.Signal.KIND, 2, "signal"),
    (p.Stop.KIND, 4, "stop"),
]


@pytest.mark.parametrize(("kind", "size", "what"), FIXED, ids=[f[2] for f in FIXED])
def test_fixed_layout_wrong_size(kind: int, size: int, what: str) -> None:
    for wrong in {0, 1, size - 1, size + 1, size * 3}:
        assert_refused(frame(kind, b"\0" * wrong), match=f"{what} frame of {wrong} bytes")


def test_fixed_layout_right_size_decodes() -> None:
    hello = struct.pack("!HBQHH?", 1, 0, 0, 24, 80, False)
    for kind, body in [
        (p.Hello.KIND, hello),
        (p.Resize.KIND, b"\0" * 4),
        (p.Signal.KIND, b"\0" * 2),
        (p.Stop.KIND, b"\0" * 4),
    ]:
        dec = Decoder()
        dec.feed(frame(kind, body))
        assert dec.next_message() is not None


def test_detach_with_body() -> None:
    assert_refused(frame(p.Detach.KIND, b"x"), match="detach")


@pytest.mark.parametrize("kind", [p.Welcome.KIND, p.Output.KIND, p.Screen.KIND])
def test_too_short_for_prefix(kind: int) -> None:
    assert_refused(frame(kind, b"\0"), match="too short")
    assert_refused(frame(kind, b""), match="too short")


JSON_KINDS = [
    (p.Welcome.KIND, b"\0\1", "welcome"),
    (p.Event.KIND, b"", "event"),
    (p.Request.KIND, b"", "request"),
    (p.Reply.KIND, b"", "reply"),
]


@pytest.mark.parametrize(("kind", "prefix", "what"), JSON_KINDS, ids=[k[2] for k in JSON_KINDS])
@pytest.mark.parametrize(
    "bad", [b"", b"{", b"{'a': 1}", b"\xff\xfe\xfd", b'{"a": 1} x', b"\x00" * 8, b'{"a":"\xc3"}']
)
def test_bad_json(kind: int, prefix: bytes, what: str, bad: bytes) -> None:
    assert_refused(frame(kind, prefix + bad), match=f"{what} frame does not hold valid JSON")


@pytest.mark.parametrize(("kind", "prefix", "what"), JSON_KINDS, ids=[k[2] for k in JSON_KINDS])
@pytest.mark.parametrize("value", [[], [1, 2], "s", 3, 1.5, None, True])
def test_json_that_is_not_an_object(kind: int, prefix: bytes, what: str, value: object) -> None:
    assert_refused(frame(kind, prefix + json.dumps(value).encode()), match="not an object")


@pytest.mark.parametrize("kind", [0, 18, 100, 255])
def test_unknown_kind(kind: int) -> None:
    assert_refused(frame(kind, b"abc"), match=f"unknown frame kind {kind}")


@pytest.mark.parametrize("mode", [4, 9, 255])
def test_unknown_hello_start_mode(mode: int) -> None:
    body = struct.pack("!HBQHH?", 1, mode, 0, 24, 80, False)
    assert_refused(frame(p.Hello.KIND, body), match=f"unknown start mode {mode}")


def test_valid_messages_before_garbage_are_delivered() -> None:
    dec = Decoder()
    good = [p.Output(0, b"hi"), p.Resize(40, 120)]
    dec.feed(b"".join(encode(m) for m in good) + frame(200, b""))
    assert dec.next_message() == good[0]
    assert dec.next_message() == good[1]
    with pytest.raises(ProtocolError):
        dec.next_message()


def test_error_message_with_invalid_utf8_is_replaced_not_refused() -> None:
    dec = Decoder()
    dec.feed(frame(p.Error.KIND, b"bad \xff byte"))
    assert dec.next_message() == p.Error("bad \ufffd byte")


@pytest.mark.parametrize("number", [b"1e999", b"-1e999", b"NaN", b"Infinity", b"-Infinity"])
@pytest.mark.parametrize("kind", [p.Request.KIND, p.Reply.KIND, p.Event.KIND])
def test_json_number_out_of_range_is_a_protocol_error(kind: int, number: bytes) -> None:
    """Issue 14.4: ``"rows": 1e999`` decoded to inf, and the supervisor's int() of it
    raised OverflowError and closed the connection with no reply."""
    dec = Decoder()
    dec.feed(HEADER.pack(1 + 10 + len(number), kind) + b'{"rows": ' + number + b"}")
    with pytest.raises(ProtocolError, match="number out of range") as info:
        dec.next_message()
    assert_clear_error(info.value)


def test_large_finite_numbers_still_decode() -> None:
    dec = Decoder()
    body = b'{"a": 1e308, "b": 123456789012345678901234567890}'
    dec.feed(HEADER.pack(1 + len(body), p.Request.KIND) + body)
    assert dec.next_message() == p.Request({"a": 1e308, "b": 123456789012345678901234567890})


@pytest.mark.parametrize("key", [b"", b"x" * (p.MAX_DETACH_KEY + 1)])
def test_a_terminal_frame_carries_a_detach_key_of_1_to_16_bytes(key: bytes) -> None:
    assert_refused(frame(p.Terminal.KIND, key), match="detach key")
    with pytest.raises(p.ProtocolError):
        p.encode(p.Terminal(key))
