"""Hostile inputs for superv's sockets: a seeded generator of frames, and a client that
sends one and says how the server answered.

Every socket superv listens on speaks the frame format of ``agent_worker/protocol.py``.
:func:`cases` makes bad inputs of every shape (random bytes, truncations, valid lengths
with garbage, oversized lengths, a valid opening then garbage, deep and huge JSON, wrong
versions); :func:`expectation` says, with the product's own decoder as the oracle, what a
correct server must do with one: answer a complete invalid frame with an Error (or, on
the control socket, a Reply that refuses it), or close when the input ends mid-frame.
:func:`classify` reads what the server actually did.

The count per run is ``SUPERV_FAULT_SCALE`` times the CI count (default 1; the nightly
mode sets e.g. 20), and the seed is ``SUPERV_FAULT_SEED`` (default fixed), so a failure
reproduces with the same two variables.
"""

from __future__ import annotations

import json
import os
import random
import select
import socket
import struct
import time
from collections import Counter
from collections.abc import Callable, Iterator

import attrs
import pytest

from agent_worker import protocol as p

HEADER = struct.Struct("!IB")


def _whole(name: str, default: str) -> int:
    text = os.environ.get(name, default)
    if not text.isdigit():
        raise pytest.UsageError(f"{name}={text!r}: use a whole number")
    return int(text)


def scale() -> int:
    """How many times the CI count of faults to run (SUPERV_FAULT_SCALE, default 1)."""
    return max(1, _whole("SUPERV_FAULT_SCALE", "1"))


def seed() -> int:
    return _whole("SUPERV_FAULT_SEED", "20261201")


def frame(kind: int, body: bytes) -> bytes:
    return HEADER.pack(1 + len(body), kind) + body


@attrs.frozen
class Case:
    shape: str  # what kind of bad input this is, for the report
    payload: bytes


# ---- what a correct server does with an input ---------------------------------------

ANSWER = "answer"  # a complete invalid frame: an Error (or refusing Reply) must come back
CLOSE = "close"  # the input ends mid-frame: closing without an answer is right
VALID = "valid"  # nothing wrong in it (not generated on purpose; skipped)


def expectation(payload: bytes, opener: type) -> str:
    """What ``payload`` (then end of input) deserves from a server whose first message must
    be an ``opener`` (:class:`p.Hello` for a worker, :class:`p.Request` for the supervisor).
    """
    decoder = p.Decoder()
    decoder.feed(payload)
    first = True
    try:
        while (msg := decoder.next_message()) is not None:
            if first:
                if not isinstance(msg, opener):
                    return ANSWER
                if isinstance(msg, p.Hello) and not p.OLDEST_VERSION <= msg.version <= p.VERSION:
                    return ANSWER
                if isinstance(msg, p.Request):
                    return ANSWER  # the supervisor answers every request it can read
                first = False
            elif opener is p.Request:
                return VALID  # a second request is never read: not a fault we make
            elif not isinstance(msg, p.Resize | p.Input):
                return VALID  # Detach, Signal, Stop...: valid and effective, not generated
    except p.ProtocolError:
        return ANSWER
    return CLOSE if decoder.buffered else VALID


# ---- the generator --------------------------------------------------------------------

SANE_HELLO_STARTS = (p.Start.OFFSET, p.Start.SCREEN, p.Start.TAIL, p.Start.WATCH)


def valid_hello(rng: random.Random) -> bytes:
    """A hello a real client could send: sane size, any start mode."""
    start = rng.choice(SANE_HELLO_STARTS)
    value = rng.choice([0, 1, 10, 1 << 40])
    return p.encode(p.Hello(start, value, rng.randint(1, 200), rng.randint(1, 400),
                            read_only=rng.random() < 0.5))


def deep_json(rng: random.Random) -> bytes:
    depth = rng.choice([1000, 100_000, p.MAX_FRAME // 2 - 8])
    opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
    return (opener * depth + "1" + closer * depth).encode()[: p.MAX_FRAME - 1]


def huge_json(rng: random.Random) -> bytes:
    size = rng.choice([100_000, p.MAX_FRAME - 64])
    return json.dumps({"op": "x" * size}).encode()[: p.MAX_FRAME - 1]


def garbage(rng: random.Random) -> bytes:
    """One bad input of a random shape (no opening frame)."""
    shape = rng.randrange(9)
    if shape == 0:  # random bytes
        return rng.randbytes(rng.randint(1, 300))
    if shape == 1:  # a valid length, garbage in it, any kind
        body_len = rng.choice([0, 1, 2, 5, 16, 17, 100, 4096])
        return frame(rng.randrange(256), rng.randbytes(body_len))
    if shape == 2:  # oversized or zero length
        length = rng.choice([0, p.MAX_FRAME + 1, 1 << 31, (1 << 32) - 1])
        return HEADER.pack(length, rng.randrange(256)) + rng.randbytes(rng.randint(0, 64))
    if shape == 3:  # JSON kinds holding deep JSON
        return frame(rng.choice([p.Request.KIND, p.Event.KIND, p.Reply.KIND]), deep_json(rng))
    if shape == 4:  # JSON kinds holding huge or non-object JSON
        body = rng.choice([huge_json(rng), b"[]", b'"s"', b"1e999", b"null", b"\xff\xfe", b"{"])
        return frame(rng.choice([p.Request.KIND, p.Event.KIND]), body)
    if shape == 5:  # a hello of the wrong size or version, or an unknown start mode
        body = p.encode(p.Hello(p.Start.OFFSET))[5:]
        choice = rng.randrange(3)
        if choice == 0:
            body = body[: rng.randrange(len(body))] if rng.random() < 0.5 else body + b"\0"
        elif choice == 1:
            body = struct.pack("!H", rng.choice([0, 2, 99, 65535])) + body[2:]
        else:
            body = body[:2] + bytes([rng.randint(4, 255)]) + body[3:]
        return frame(p.Hello.KIND, body)
    if shape == 6:  # fixed-size kinds with the wrong size
        kind = rng.choice([p.Resize.KIND, p.Signal.KIND, p.Stop.KIND, p.Detach.KIND])
        return frame(kind, rng.randbytes(rng.choice([1, 3, 7, 9])))
    if shape == 7:  # unknown kinds
        return frame(rng.randint(14, 255), rng.randbytes(rng.randint(0, 32)))
    # a server-to-client kind sent to the server
    return rng.choice([p.encode(p.Welcome({"x": 1})), p.encode(p.Output(0, b"hi")),
                       p.encode(p.Error("no")), p.encode(p.Reply({"ok": True}))])


def truncated(rng: random.Random, whole: bytes) -> bytes:
    return whole[: rng.randrange(1, len(whole))]


def control_garbage(rng: random.Random) -> bytes:
    """Requests the supervisor must refuse in words: bad types, unknown names, 1e999."""
    body = rng.choice([
        {"op": 1}, {"op": None}, {"op": ["ls"]}, {"op": "nope"}, {"op": "x" * 1000},
        {"op": "stop", "name": 5}, {"op": "stop", "name": "no-such"}, {"op": "kill", "name": ""},
        {"op": "kill", "name": "../etc", "signal": "x"}, {"op": "rm", "names": "abc"},
        {"op": "resume", "name": {"a": 1}}, {"op": "stop", "name": "no-such", "grace": "x"},
    ])
    return frame(p.Request.KIND, json.dumps(body).encode())


AFTER_HELLO = "hello then garbage"


def cases(count: int, opener: type, rng: random.Random, *, after_hello: bool = False) -> Iterator[Case]:
    """``count`` bad inputs for a server whose first message is ``opener``; only inputs
    that are bad (per :func:`expectation`) are yielded.  With ``after_hello``, each is a
    valid hello followed by garbage; without, the garbage comes first."""
    made = 0
    while made < count:
        roll = rng.random()
        if after_hello:
            case = Case(AFTER_HELLO, valid_hello(rng) + garbage(rng))
        elif roll < 0.6:
            case = Case("garbage", garbage(rng))
        elif roll < 0.8 or opener is p.Hello:
            whole = valid_hello(rng) if opener is p.Hello else control_garbage(rng)
            case = Case("truncated", truncated(rng, whole))
        else:
            case = Case("bad request", control_garbage(rng))
        if expectation(case.payload, opener) != VALID:
            made += 1
            yield case


# ---- a client that sends one input and reads the answer --------------------------------

ERROR = "error"  # an Error frame, or a Reply with ok false
SILENT = "silent"  # closed without an answer
HANG = "hang"  # neither, in time: always a bug


def read_answer(recv: Callable[[float], bytes | None], deadline: float) -> str:
    """Read frames until an answer, end of stream or ``deadline``: ERROR, SILENT, HANG.

    A Welcome and the stream after it (Output, Screen, Event) are read past: what counts
    is whether the bad input that follows them is answered.
    """
    decoder = p.Decoder()
    while time.monotonic() < deadline:
        data = recv(deadline - time.monotonic())
        if data is None:
            break
        if not data:
            return SILENT
        try:
            decoder.feed(data)
            while (msg := decoder.next_message()) is not None:
                if isinstance(msg, p.Error):
                    return ERROR
                if isinstance(msg, p.Reply) and not msg.body.get("ok"):
                    return ERROR
        except p.ProtocolError as exc:
            raise AssertionError(f"the server sent something that is not a frame: {exc}") from None
    return HANG


def send_to_socket(path: str, payload: bytes, timeout: float = 15.0) -> str:
    """Connect, send ``payload``, end our side, and say how the server answered."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server stopped reading (an oversized length): its answer is readable

        def recv(left: float) -> bytes | None:
            if not select.select([sock], [], [], max(0.0, left))[0]:
                return None
            try:
                return sock.recv(1 << 20)
            except ConnectionResetError:
                return b""

        return read_answer(recv, time.monotonic() + timeout)
    finally:
        sock.close()


@attrs.define
class Tally:
    """What a run of cases gave: per expectation, per outcome."""

    counts: Counter[tuple[str, str]] = attrs.Factory(Counter)
    examples: dict[tuple[str, str], Case] = attrs.Factory(dict)

    def add(self, case: Case, expected: str, outcome: str) -> None:
        self.counts[expected, outcome] += 1
        self.examples.setdefault((expected, outcome), case)

    def total(self) -> int:
        return sum(self.counts.values())

    def answered(self) -> int:
        return self.counts[ANSWER, ERROR]

    def invalid(self) -> int:
        return sum(n for (expected, _), n in self.counts.items() if expected == ANSWER)

    def outcome(self, outcome: str) -> int:
        return sum(n for (_, got), n in self.counts.items() if got == outcome)

    def summary(self) -> str:
        return (f"{self.total()} bad inputs; {self.invalid()} complete invalid frames, "
                f"{self.answered()} answered with an error, "
                f"{self.counts[ANSWER, SILENT]} closed silently; "
                f"{self.outcome(HANG)} hung")

    def example(self, expected: str, outcome: str) -> str:
        case = self.examples.get((expected, outcome))
        return "none" if case is None else f"{case.shape}: {case.payload[:80]!r}"
