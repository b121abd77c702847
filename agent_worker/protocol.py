"""The superv wire protocol, as a pure codec: bytes in, messages out.

Every socket superv listens on (a session's worker, the supervisor's control socket, the
``attach --stdio`` bridge used over SSH) speaks the same framing::

    frame   = length:u32 (big endian, of kind+body)  kind:u8  body
    body    = depends on kind, see the message classes below

A frame's length is checked as soon as its header arrives, so an oversized or hostile
length is refused at once instead of being buffered.  A client opens with :class:`Hello`
(protocol version, where to start, window size, read-only flag, and from version 2 its
feed flags); the worker answers with :class:`Welcome` (carrying the version both speak,
the lower of the two) or :class:`Error`.  A version-2 client that asked for
:data:`FEED_ACKS` acknowledges what it has shown with :class:`Ack` (issue 12: the worker
keeps only about a round trip of output in flight to it, see
:mod:`agent_worker.feed_policy`).  A local client that asked for :data:`FEED_TERMINAL` and
was offered it hands over its terminal with :class:`Terminal` (issue 13: the worker then
reads and writes that terminal itself, and the socket carries only control frames).
Output is addressed by its offset in the session's
log, so a client that reconnects asks for "everything after offset N" and sees no gap and
no duplicate.

Nothing here touches a socket: :class:`Decoder` is fed bytes and yields messages, and
:func:`encode` turns a message into bytes.  Errors raise :class:`ProtocolError` with a
sentence fit for a user.
"""

from __future__ import annotations

import enum
import json
import math
import struct
from typing import Any, ClassVar

import attrs

from agent_worker import json_input

VERSION = 2
OLDEST_VERSION = 1  # a version-1 peer still works: no feed flags, no acks, every byte sent

# Hello feed flags (version 2 on).
FEED_ACKS = 1  # the client sends Ack(offset) once it has shown output up to offset
FEED_SKIP = 2  # when far behind, the client may be sent the current screen instead
# The client would hand its terminal to the worker (issue 13).  A worker that can take it
# says so in its Welcome (``takes_terminal``); the client then sends :class:`Terminal`
# with the terminal's descriptor (SCM_RIGHTS).  An older worker ignores the bit and serves
# the client the old way; an older client never sets it.
FEED_TERMINAL = 4
MAX_FRAME = 1 << 20  # kind + body, in bytes
MAX_OUTPUT_CHUNK = MAX_FRAME - 1 - 8  # what fits in one Output frame

_HEADER = struct.Struct("!IB")


class ProtocolError(Exception):
    """The peer sent something that is not superv protocol; the connection must close."""


class Start(enum.IntEnum):
    """Where a :class:`Hello` asks the stream to begin."""

    OFFSET = 0  # replay the log from ``value`` (0 = from the start), then live output
    SCREEN = 1  # paint the current screen, then live output
    TAIL = 2  # replay the last ``value`` lines of the log, then live output
    WATCH = 3  # no output at all: only Event messages (the supervisor watching a worker)


@attrs.frozen
class Hello:
    KIND: ClassVar[int] = 1
    start: Start
    value: int = 0
    rows: int = 24
    cols: int = 80
    read_only: bool = False
    version: int = VERSION
    flags: int = 0  # FEED_* bits; carried from version 2 on

    @property
    def acks(self) -> bool:
        return self.version >= 2 and bool(self.flags & FEED_ACKS)

    @property
    def may_skip(self) -> bool:
        return self.acks and bool(self.flags & FEED_SKIP)

    @property
    def hands_terminal(self) -> bool:
        return self.version >= 2 and bool(self.flags & FEED_TERMINAL) and self.start != Start.WATCH


@attrs.frozen
class Input:
    KIND: ClassVar[int] = 2
    data: bytes


@attrs.frozen
class Resize:
    KIND: ClassVar[int] = 3
    rows: int
    cols: int


@attrs.frozen
class Detach:
    KIND: ClassVar[int] = 4


@attrs.frozen
class Signal:
    """Send ``signum`` to the agent's process group (``superv kill``)."""

    KIND: ClassVar[int] = 5
    signum: int


@attrs.frozen
class Stop:
    """Stop the agent gracefully: SIGTERM, then SIGKILL after ``grace_ms`` (``superv stop``)."""

    KIND: ClassVar[int] = 6
    grace_ms: int = 10_000


@attrs.frozen
class Welcome:
    """The worker accepts a Hello; ``info`` describes the session (name, pid, state...)."""

    KIND: ClassVar[int] = 7
    info: dict[str, Any]
    version: int = VERSION


@attrs.frozen
class Output:
    """Bytes the agent printed, starting at log offset ``offset``."""

    KIND: ClassVar[int] = 8
    offset: int
    data: bytes


@attrs.frozen
class Screen:
    """Bytes that repaint a terminal to the session's screen as of log offset ``offset``.

    Output frames that follow start at ``offset``.
    """

    KIND: ClassVar[int] = 9
    offset: int
    data: bytes


@attrs.frozen
class Event:
    """A lifecycle event or state change, as JSON: ``{"event": "exited", ...}``."""

    KIND: ClassVar[int] = 10
    body: dict[str, Any]


@attrs.frozen
class Error:
    """A refusal or failure, one sentence for the user; the sender closes afterwards."""

    KIND: ClassVar[int] = 11
    message: str


@attrs.frozen
class Request:
    """A command to the supervisor's control socket, as JSON: ``{"op": "ls", ...}``."""

    KIND: ClassVar[int] = 12
    body: dict[str, Any]


@attrs.frozen
class Reply:
    """The supervisor's answer to a Request.

    ``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``.
    """

    KIND: ClassVar[int] = 13
    body: dict[str, Any]


@attrs.frozen
class Ack:
    """The client has shown the stream up to log offset ``offset`` (version 2, FEED_ACKS)."""

    KIND: ClassVar[int] = 14
    offset: int


@attrs.frozen
class Repaint:
    """The client wants the current screen again (version 2, FEED_SKIP): its status line
    covered the bottom row, and only the worker knows what belongs there."""

    KIND: ClassVar[int] = 15


@attrs.frozen
class Terminal:
    """The client's terminal, whose descriptor travels with this frame (SCM_RIGHTS), is
    the worker's to read and write from now on (``FEED_TERMINAL``); ``detach_key`` is the
    key that ends the attach, which the worker now watches for.  The first frame after a
    Welcome that offered to take the terminal; the worker answers with a ``terminal``
    event saying whether it took it."""

    KIND: ClassVar[int] = 16
    detach_key: bytes


@attrs.frozen
class Show:
    """Bytes for the worker to write to the terminal the client handed it, between two
    batches of output (a status line: the worker is that terminal's only writer)."""

    KIND: ClassVar[int] = 17
    data: bytes


MAX_DETACH_KEY = 16  # bytes of a detach key a Terminal frame may carry

Message = (
    Hello | Input | Resize | Detach | Signal | Stop | Welcome | Output | Screen | Event
    | Error | Request | Reply | Ack | Repaint | Terminal | Show
)

_HELLO = struct.Struct("!HBQHH?")
_FLAGS = struct.Struct("!B")  # after the version-1 hello, from version 2 on
_RESIZE = struct.Struct("!HH")
_SIGNAL = struct.Struct("!H")
_STOP = struct.Struct("!I")
_OFFSET = struct.Struct("!Q")
_VERSION = struct.Struct("!H")


def _frame(kind: int, body: bytes) -> bytes:
    if 1 + len(body) > MAX_FRAME:
        raise ProtocolError(
            f"message of {len(body)} bytes is over the {MAX_FRAME}-byte frame limit"
        )
    return _HEADER.pack(1 + len(body), kind) + body


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _check_uint(bits: int, **values: int) -> None:
    for name, value in values.items():
        if not 0 <= value < 1 << bits:
            raise ProtocolError(f"{name}={value} does not fit the protocol (0..{(1 << bits) - 1})")


def _check_u16(**values: int) -> None:
    _check_uint(16, **values)


def encode(msg: Message) -> bytes:
    """The bytes of one frame carrying ``msg``."""
    match msg:
        case Hello():
            _check_u16(version=msg.version, rows=msg.rows, cols=msg.cols)
            if not 0 <= msg.value < 1 << 64:
                raise ProtocolError(f"start value {msg.value} out of range")
            try:
                Start(msg.start)
            except ValueError:
                raise ProtocolError(f"hello asks for unknown start mode {msg.start}") from None
            _check_uint(8, flags=msg.flags)
            body = _HELLO.pack(msg.version, msg.start, msg.value, msg.rows, msg.cols, msg.read_only)
            if msg.version >= 2:
                body += _FLAGS.pack(msg.flags)
        case Input() | Show():
            body = bytes(msg.data)
        case Terminal():
            if not 1 <= len(msg.detach_key) <= MAX_DETACH_KEY:
                raise ProtocolError(f"a detach key is 1 to {MAX_DETACH_KEY} bytes")
            body = bytes(msg.detach_key)
        case Resize():
            _check_u16(rows=msg.rows, cols=msg.cols)
            body = _RESIZE.pack(msg.rows, msg.cols)
        case Detach() | Repaint():
            body = b""
        case Signal():
            _check_u16(signum=msg.signum)
            body = _SIGNAL.pack(msg.signum)
        case Stop():
            _check_uint(32, grace_ms=msg.grace_ms)
            body = _STOP.pack(msg.grace_ms)
        case Welcome():
            _check_u16(version=msg.version)
            body = _VERSION.pack(msg.version) + _json(msg.info)
        case Output() | Screen():
            _check_uint(64, offset=msg.offset)
            body = _OFFSET.pack(msg.offset) + bytes(msg.data)
        case Ack():
            _check_uint(64, offset=msg.offset)
            body = _OFFSET.pack(msg.offset)
        case Event() | Request() | Reply():
            body = _json(msg.body)
        case Error():
            body = msg.message.encode("utf-8", "replace")
        case _:
            raise TypeError(f"not a protocol message: {msg!r}")
    return _frame(msg.KIND, body)


def encode_output(offset: int, data: bytes | memoryview) -> bytes:
    """Fast path for the hot loop: one Output frame without building a message object.

    Refuses what :func:`encode` refuses: a chunk over :data:`MAX_OUTPUT_CHUNK` or an offset
    that does not fit in 64 bits.
    """
    if len(data) > MAX_OUTPUT_CHUNK:
        raise ProtocolError(
            f"message of {8 + len(data)} bytes is over the {MAX_FRAME}-byte frame limit"
        )
    if not 0 <= offset < 1 << 64:
        raise ProtocolError(f"offset={offset} does not fit the protocol (0..{(1 << 64) - 1})")
    return _HEADER.pack(9 + len(data), Output.KIND) + _OFFSET.pack(offset) + data


def _exact(body: bytes, layout: struct.Struct, what: str) -> tuple[Any, ...]:
    if len(body) != layout.size:
        raise ProtocolError(f"{what} frame of {len(body)} bytes, expected {layout.size}")
    return layout.unpack(body)


class _NotFinite(Exception):
    pass


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: every reader would choke on inf (OverflowError)
        raise _NotFinite(text)
    return value


def _no_constant(name: str) -> float:  # NaN, Infinity, -Infinity: not JSON
    raise _NotFinite(name)


def _load_json(body: bytes, what: str) -> dict[str, Any]:
    try:
        value = json_input.loads(body, parse_float=_finite, parse_constant=_no_constant)
    except _NotFinite as exc:
        raise ProtocolError(f"{what} frame holds a number out of range: {exc}") from None
    except ValueError as exc:  # UnicodeDecodeError is a ValueError too, and '[[[[...'
        raise ProtocolError(f"{what} frame does not hold valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"{what} frame holds JSON that is not an object")
    return value


def decode_body(kind: int, body: bytes) -> Message:
    """Turn one frame's kind and body into a message, or raise ProtocolError."""
    if kind == Hello.KIND:
        flags = 0
        if len(body) >= _VERSION.size and _VERSION.unpack_from(body)[0] >= 2:
            # From version 2 on, the feed flags follow the version-1 layout.
            (flags,) = _exact(body[_HELLO.size :], _FLAGS, "hello flags")
            body = body[: _HELLO.size]
        version, start, value, rows, cols, read_only = _exact(body, _HELLO, "hello")
        try:
            start = Start(start)
        except ValueError:
            raise ProtocolError(f"hello asks for unknown start mode {start}") from None
        return Hello(start, value, rows, cols, read_only, version, flags)
    if kind == Input.KIND:
        return Input(body)
    if kind == Resize.KIND:
        return Resize(*_exact(body, _RESIZE, "resize"))
    if kind == Detach.KIND:
        if body:
            raise ProtocolError("detach frame must be empty")
        return Detach()
    if kind == Signal.KIND:
        return Signal(*_exact(body, _SIGNAL, "signal"))
    if kind == Stop.KIND:
        return Stop(*_exact(body, _STOP, "stop"))
    if kind == Welcome.KIND:
        if len(body) < _VERSION.size:
            raise ProtocolError("welcome frame too short")
        (version,) = _VERSION.unpack_from(body)
        return Welcome(_load_json(body[_VERSION.size :], "welcome"), version)
    if kind in (Output.KIND, Screen.KIND):
        if len(body) < _OFFSET.size:
            raise ProtocolError("output frame too short")
        (offset,) = _OFFSET.unpack_from(body)
        cls = Output if kind == Output.KIND else Screen
        return cls(offset, body[_OFFSET.size :])
    if kind == Repaint.KIND:
        if body:
            raise ProtocolError("repaint frame must be empty")
        return Repaint()
    if kind == Ack.KIND:
        return Ack(*_exact(body, _OFFSET, "ack"))
    if kind == Terminal.KIND:
        if not 1 <= len(body) <= MAX_DETACH_KEY:
            raise ProtocolError(f"terminal frame of {len(body)} bytes: a detach key is 1 to "
                                f"{MAX_DETACH_KEY} bytes")
        return Terminal(body)
    if kind == Show.KIND:
        return Show(body)
    if kind == Event.KIND:
        return Event(_load_json(body, "event"))
    if kind == Request.KIND:
        return Request(_load_json(body, "request"))
    if kind == Reply.KIND:
        return Reply(_load_json(body, "reply"))
    if kind == Error.KIND:
        return Error(body.decode("utf-8", "replace"))
    raise ProtocolError(f"unknown frame kind {kind}: is the peer speaking superv protocol?")


class Decoder:
    """Incremental decoder: :meth:`feed` bytes as they arrive, then iterate messages.

    After a ProtocolError the decoder is poisoned: every further call raises again,
    because the byte stream can no longer be trusted to be aligned on frames.
    """

    def __init__(self, max_frame: int = MAX_FRAME) -> None:
        self._buf = bytearray()
        self._max = max_frame
        self._error: ProtocolError | None = None

    def feed(self, data: bytes) -> None:
        if self._error:
            raise self._error
        self._buf += data

    @property
    def buffered(self) -> int:
        """Bytes received but not yet decoded (a partial frame)."""
        return len(self._buf)

    def next_message(self) -> Message | None:
        """The next complete message, or None if more bytes are needed."""
        if self._error:
            raise self._error
        try:
            if len(self._buf) < _HEADER.size:
                return None
            length, kind = _HEADER.unpack_from(self._buf)
            if length < 1 or length > self._max:
                raise ProtocolError(
                    f"frame length {length} is outside 1..{self._max}: "
                    "is the peer speaking superv protocol?"
                )
            end = 4 + length
            if len(self._buf) < end:
                return None
            body = bytes(self._buf[_HEADER.size : end])
            del self._buf[:end]
            return decode_body(kind, body)
        except ProtocolError as exc:
            self._error = exc
            raise

    def __iter__(self) -> Decoder:
        return self

    def __next__(self) -> Message:
        msg = self.next_message()
        if msg is None:
            raise StopIteration
        return msg
