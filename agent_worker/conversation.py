"""The protocol's conversation: who may say what, and when, as a sans-I/O state machine.

:mod:`agent_worker.protocol` turns bytes into frames; this module owns the rules of a
session connection above the frames, for both ends, in the manner of h11: bytes go in
with ``receive_data``, typed events come out of ``next_event``, and ``send`` turns an
event into the bytes to write.  Nothing here touches a socket or a clock, so every rule
is tested byte by byte (``tests/test_conversation.py``).

Both ends go ``AWAITING_HELLO -> STREAMING -> ENDED``:

- the client opens with a :class:`~agent_worker.protocol.Hello` (version, where to start,
  window size, read-only); the server answers with a Welcome carrying
  :class:`SessionInfo`, or an Error;
- then the server streams Screen and Output frames, addressed by log offset, continuous:
  the server refuses to send a gap and drops what it already sent, the client reports a
  gap and drops a duplicate, so a reconnect at "everything after offset N" shows every
  byte once;
- a client that asked for acks (version 2, ``FEED_ACKS``) sends ``Ack(offset)`` once it
  has shown the stream up to ``offset`` (``ack()``); acks only go forward and never past
  what was sent.  One that may be skipped (``FEED_SKIP``) can be sent a Screen ahead of its
  position: it comes out as :class:`Skipped` (the worker's feed policy chose the present
  over the backlog);
- a client that asked to hand over its terminal (``FEED_TERMINAL``) and was offered it in
  the Welcome (``takes_terminal``) sends Terminal first (its descriptor goes with it); the
  worker answers with a ``terminal`` Notice (taken or not), and from then on the client may
  send Show (bytes for the worker to write to that terminal);
- the client sends Input, Resize, Signal, Stop; a read-only client's input is refused,
  with one :class:`Refused` notice, and never reaches the agent;
- the stream ends with :class:`Exited` (the agent ended: for an attach, nothing follows),
  a Detach from the client, an Error from either side, or the connection closing.

A peer that breaks a rule gets :class:`Violation` from ``next_event`` (never an
exception): the caller sends ``send(Error(violation.message))`` and closes.  A rule that
*we* break (sending output with a gap, or after the end) raises :class:`LocalProtocolError`:
that is a bug in the caller.
"""

from __future__ import annotations

import contextlib
import enum
import signal
from collections.abc import Mapping
from typing import Any, Final

import attrs

from agent_worker import protocol as p
from agent_worker.screen_size import MAX_COLS, MAX_ROWS, clamp_size

# Window sizes a hello or a resize may ask for: the sizes the screen model keeps (the
# limit has one owner, agent_worker.screen_size).


class State(enum.Enum):
    AWAITING_HELLO = "awaiting_hello"
    STREAMING = "streaming"
    ENDED = "ended"


class LocalProtocolError(Exception):
    """This end tried to break the protocol: a bug in the code driving the conversation."""


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()
"""``next_event`` has nothing complete yet: feed more bytes with ``receive_data``."""


def window_size_error(rows: int, cols: int) -> str | None:
    """Why ``rows`` x ``cols`` is not a window size we accept, or None if it is one."""
    if 1 <= rows <= MAX_ROWS and 1 <= cols <= MAX_COLS:
        return None
    return (
        f"window size {rows}x{cols} is out of range: rows must be 1..{MAX_ROWS}, "
        f"columns 1..{MAX_COLS}"
    )


def fit_window_size(rows: int, cols: int) -> tuple[int, int]:
    """A client's real window size, brought into the range a server accepts."""
    return clamp_size(rows, cols)


# ---- typed events ------------------------------------------------------------------------


def _opt_int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@attrs.frozen
class SessionInfo:
    """What a Welcome says about the session (the same for a live and an ended one)."""

    name: str
    state: str = "running"
    agent_pid: int | None = None
    worker_pid: int | None = None
    log_end: int = 0
    rows: int = 24
    cols: int = 80
    started_at: float | None = None
    dir: str = ""
    ended: bool = False  # served from the session's files: its worker is gone
    takes_terminal: bool = False  # the worker offers to take this client's terminal
    held: str | None = None  # the disk refuses the session's log now: its error

    @property
    def running(self) -> bool:
        return self.state == "running"

    def to_dict(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_dict(cls, info: Mapping[str, Any]) -> SessionInfo:
        """Read a Welcome's info; ProtocolError if a field we rely on has the wrong type."""
        name, state = info.get("name"), info.get("state", "running")
        rows, cols = info.get("rows", 24), info.get("cols", 80)
        if not isinstance(name, str) or not isinstance(state, str):
            raise p.ProtocolError("welcome without a session name and state")
        if not isinstance(rows, int) or not isinstance(cols, int):
            raise p.ProtocolError("welcome with a window size that is not two numbers")
        started = info.get("started_at")
        return cls(
            name=name,
            state=state,
            agent_pid=_opt_int(info, "agent_pid"),
            worker_pid=_opt_int(info, "worker_pid"),
            log_end=_opt_int(info, "log_end") or 0,
            rows=rows,
            cols=cols,
            started_at=float(started) if isinstance(started, int | float) else None,
            dir=str(info.get("dir", "")),
            ended=info.get("ended") is True,
            takes_terminal=info.get("takes_terminal") is True,
            held=info["held"] if isinstance(info.get("held"), str) else None,
        )


@attrs.frozen
class Exited:
    """The agent ended; ``log_end`` is where its output ends (the stream's last offset).

    The one builder of the ``exited`` event, for the worker, the ended-session replay and
    every reader.
    """

    state: str
    exit_code: int | None = None
    exit_signal: int | None = None
    log_end: int | None = None

    def body(self) -> dict[str, Any]:
        return {"event": "exited", "state": self.state, "exit_code": self.exit_code,
                "exit_signal": self.exit_signal, "log_end": self.log_end}

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> Exited:
        state = body.get("state")
        return cls(
            state=state if isinstance(state, str) else "ended",
            exit_code=_opt_int(body, "exit_code"),
            exit_signal=_opt_int(body, "exit_signal"),
            log_end=_opt_int(body, "log_end"),
        )


READ_ONLY_REFUSAL: Final = "read-only attach: input ignored"

# A client acks once it has shown this many bytes (frames counted whole): often enough for
# the worker to measure the link (its window is tens of kB at least), rarely enough that
# an echo of a keystroke costs no frame back.  A Screen is acked at once, whatever its size.
ACK_EVERY: Final = 4096
FRAME_OVERHEAD: Final = 13  # header and offset of an Output or Screen frame


@attrs.frozen
class Refused:
    """The server ignored what the client sent (input on a read-only attach)."""

    reason: str = READ_ONLY_REFUSAL

    def body(self) -> dict[str, Any]:
        return {"event": "refused", "reason": self.reason}


@attrs.frozen
class Notice:
    """Any other event a worker reports: ``attached``, ``detached``, ``snapshot_failed``,
    ``log_write_failed`` (what the supervisor relays to ``superv events``)."""

    event: str
    fields: Mapping[str, Any] = attrs.field(factory=dict, converter=dict)

    def body(self) -> dict[str, Any]:
        return {**self.fields, "event": self.event}


@attrs.frozen
class Failed:
    """The peer sent an Error frame: it refuses or gives up, and closes."""

    message: str


@attrs.frozen
class Violation:
    """The peer broke the protocol; answer ``send(Error(message))`` and close."""

    message: str


@attrs.frozen
class Closed:
    """The peer closed the connection."""


def event_from_body(body: Mapping[str, Any]) -> Exited | Refused | Notice:
    """The typed form of an Event frame's JSON body."""
    kind = body.get("event")
    if kind == "exited":
        return Exited.from_body(body)
    if kind == "refused":
        reason = body.get("reason")
        return Refused(reason if isinstance(reason, str) else READ_ONLY_REFUSAL)
    fields = {k: v for k, v in body.items() if k != "event"}
    return Notice(kind if isinstance(kind, str) else "unknown", fields)


@attrs.frozen
class Skipped:
    """The worker skipped this client to the present: ``screen`` repaints the terminal as
    of its offset, and the ``skipped`` bytes before it were not sent (they are in the log:
    ``superv logs NAME`` shows them).  Output continues from ``screen.offset``."""

    screen: p.Screen
    skipped: int

    @property
    def data(self) -> bytes:
        return self.screen.data


ServerEvent = (
    p.Hello | p.Input | p.Resize | p.Signal | p.Stop | p.Detach | p.Ack | p.Repaint | p.Terminal
    | p.Show
)
ClientEvent = SessionInfo | p.Screen | Skipped | p.Output | Exited | Refused | Notice


# ---- the two ends --------------------------------------------------------------------------


class _End:
    """What both ends share: the frame decoder, the state, the end of input."""

    def __init__(self) -> None:
        self.state = State.AWAITING_HELLO
        self._decoder = p.Decoder()
        self._eof = False

    def receive_data(self, data: bytes) -> None:
        """Bytes from the peer; ``b""`` means it closed the connection."""
        if not data:
            self._eof = True
        elif self.state is not State.ENDED:
            with contextlib.suppress(p.ProtocolError):  # already reported by next_event
                self._decoder.feed(data)

    def _next_frame(self) -> p.Message | Violation | Closed | _NeedData:
        try:
            msg = self._decoder.next_message()
        except p.ProtocolError as exc:
            return self._violation(str(exc))
        if msg is not None:
            return msg
        if self._eof:
            self.state = State.ENDED
            return Closed()
        return NEED_DATA

    def _violation(self, message: str) -> Violation:
        self.state = State.ENDED
        return Violation(message)


class ServerConversation(_End):
    """The worker's end of one client connection.

    Events out: the client's :class:`~agent_worker.protocol.Hello` (checked: version,
    window size), then ``Input``, ``Resize`` (checked), ``Signal`` (checked), ``Stop``,
    ``Detach``; :class:`Refused` once when a read-only client sends input (send it back);
    :class:`Violation`, :class:`Closed`, or :data:`NEED_DATA`.

    Bytes out: ``send(SessionInfo)`` (the Welcome, which starts the stream), ``Screen``,
    ``output_frame()``, ``Exited``, ``Refused``, ``Notice``, ``Error``.
    """

    def __init__(self) -> None:
        super().__init__()
        self.hello: p.Hello | None = None
        self.position: int | None = None  # log offset of the next output byte to send
        self.acked = 0  # the client's last Ack: it has shown the stream up to here
        self._welcomed = False
        self._refused = False
        self._offered_terminal = False  # our Welcome offered to take the client's terminal
        self.terminal_handed = False  # the client sent its Terminal frame

    @property
    def read_only(self) -> bool:
        return self.hello is not None and self.hello.read_only

    @property
    def watching(self) -> bool:
        return self.hello is not None and self.hello.start == p.Start.WATCH

    def next_event(self) -> ServerEvent | Refused | Violation | Closed | _NeedData:
        while True:
            if self.state is State.ENDED:
                return Closed()
            if self.hello is not None and not self._welcomed:
                return NEED_DATA  # what follows the hello waits for our answer to it
            msg = self._next_frame()
            if not isinstance(msg, p.Message):
                return msg
            if self.hello is None:
                return self._first(msg)
            event = self._streaming(msg)
            if event is not None:
                return event

    def _first(self, msg: p.Message) -> p.Hello | Violation:
        if not isinstance(msg, p.Hello):
            return self._violation(f"expected a hello frame first, got {type(msg).__name__}")
        if not p.OLDEST_VERSION <= msg.version <= p.VERSION:
            return self._violation(
                f"protocol version {msg.version} is not {p.OLDEST_VERSION}..{p.VERSION}: "
                "the client and the worker come from different superv versions"
            )
        bad_size = window_size_error(msg.rows, msg.cols)
        if bad_size:
            return self._violation(bad_size)
        self.hello = msg
        return msg

    def _streaming(self, msg: p.Message) -> ServerEvent | Refused | Violation | None:
        if self._offered_terminal and not self.terminal_handed and not isinstance(
                msg, p.Terminal | p.Detach):
            return self._violation(
                f"a {type(msg).__name__} frame before the terminal the client asked to hand over")
        match msg:
            case p.Terminal():
                if not self._offered_terminal or self.terminal_handed:
                    return self._violation("a terminal frame the worker did not ask for")
                self.terminal_handed = True
                return msg
            case p.Show():
                if not self._offered_terminal:
                    return self._violation("a show frame from a client that kept its terminal")
                return msg
            case p.Detach():
                self.state = State.ENDED
                return msg
            case p.Ack(offset):
                assert self.hello is not None
                if not self.hello.acks:
                    return self._violation("an ack from a client that did not ask to ack")
                if offset < self.acked or self.position is None or offset > self.position:
                    return self._violation(
                        f"ack of offset {offset}: outside {self.acked}..{self.position}, "
                        "what was sent and not yet acknowledged"
                    )
                self.acked = offset
                return msg
            case p.Repaint():
                assert self.hello is not None
                if not self.hello.may_skip:
                    return self._violation("a repaint for a client that asked for every byte")
                return msg
            case p.Input() | p.Resize() | p.Signal() | p.Stop() if self.read_only:
                if self._refused:
                    return None  # said once; the rest is dropped quietly
                self._refused = True
                return Refused()
            case p.Input() | p.Stop():
                return msg
            case p.Resize(rows, cols):
                bad_size = window_size_error(rows, cols)
                return self._violation(bad_size) if bad_size else msg
            case p.Signal(signum):
                try:
                    signal.Signals(signum)
                except ValueError:
                    return self._violation(f"no such signal number {signum}")
                return msg
            case _:
                return self._violation(f"a client may not send {type(msg).__name__}")

    # -- sending

    def send(
        self, event: SessionInfo | p.Screen | p.Output | Exited | Refused | Notice | p.Error
    ) -> bytes:
        match event:
            case p.Error():
                self.state = State.ENDED
                return p.encode(event)
            case SessionInfo():
                if self.hello is None or self._welcomed:
                    raise LocalProtocolError("a welcome answers a hello, once")
                self._welcomed = True
                self.state = State.STREAMING
                self._offered_terminal = event.takes_terminal and self.hello.hands_terminal
                # The version both ends speak: the lower one (a version-1 client never acks).
                version = min(self.hello.version, p.VERSION)
                return p.encode(p.Welcome(event.to_dict(), version))
        if self.state is not State.STREAMING:
            raise LocalProtocolError(f"cannot send {type(event).__name__} in state {self.state}")
        match event:
            case p.Screen():
                self.position = event.offset
                return p.encode(event)
            case p.Output(offset, data):
                return self.output_frame(offset, data)
            case Exited():
                if not self.watching:
                    self.state = State.ENDED  # an attach stream ends with the exit
                return p.encode(p.Event(event.body()))
            case Refused() | Notice():
                return p.encode(p.Event(event.body()))
        raise TypeError(f"not an event a server sends: {event!r}")

    def expects(self, offset: int) -> bool:
        """True if output starting at ``offset`` is what this client needs next."""
        return self.state is State.STREAMING and self.position == offset

    def output_sent(self, offset: int, length: int) -> None:
        """Record that an Output frame of ``length`` bytes at ``offset``, encoded by the
        caller (shared by several clients), was sent."""
        if self.state is not State.STREAMING:
            raise LocalProtocolError(f"cannot send output in state {self.state}")
        if self.position is not None and offset != self.position:
            raise LocalProtocolError(f"output at {offset}, but this client is at {self.position}")
        self.position = offset + length

    def output_frame(self, offset: int, data: bytes) -> bytes:
        """The Output frame for ``data`` at ``offset``, without what this client already
        has (``b""`` if it has all of it); a gap is refused."""
        if self.position is not None and offset < self.position:
            data = data[self.position - offset :]
            offset = self.position
            if not data:
                return b""
        self.output_sent(offset, len(data))
        return p.encode_output(offset, data)


class ClientConversation(_End):
    """A client's end: attach, ``logs -f``, ``peek``, ``send``, ``kill``, the watchers.

    ``initiate()`` gives the hello's bytes.  A window bigger than a server accepts is sent
    as the largest it does (the agent gets at most :data:`MAX_ROWS` x :data:`MAX_COLS`).

    Events out: :class:`SessionInfo` (the Welcome), then ``Screen`` and ``Output``
    (continuous: a duplicate is dropped, a gap is a :class:`Violation`), :class:`Exited`
    (the end, for an attach), :class:`Refused`, :class:`Notice`; :class:`Failed` for an
    Error frame, :class:`Violation`, :class:`Closed`, or :data:`NEED_DATA`.

    ``position`` is the log offset after the last byte received: a reconnect asks for
    ``Hello(Start.OFFSET, position)`` and passes ``position`` on to its new conversation.
    """

    def __init__(self, hello: p.Hello, position: int | None = None) -> None:
        super().__init__()
        self.hello = hello
        self.position = position
        self.info: SessionInfo | None = None
        self.version: int | None = None  # the version both ends speak, from the Welcome
        self._initiated = False
        self._unacked = 0  # bytes received since the last ack

    @property
    def watching(self) -> bool:
        return self.hello.start == p.Start.WATCH

    def initiate(self) -> bytes:
        """The bytes of the hello that opens the conversation."""
        if self._initiated:
            raise LocalProtocolError("the hello is sent once")
        rows, cols = fit_window_size(self.hello.rows, self.hello.cols)
        self.hello = attrs.evolve(self.hello, rows=rows, cols=cols)
        self._initiated = True
        return p.encode(self.hello)

    @property
    def may_hand_terminal(self) -> bool:
        """Did we ask to hand our terminal over, and did the worker's Welcome offer to take it?"""
        return (self.hello.hands_terminal and self.info is not None
                and self.info.takes_terminal)

    def send(self, msg: p.Input | p.Resize | p.Signal | p.Stop | p.Detach | p.Repaint
             | p.Terminal | p.Show) -> bytes:
        if self.state is State.ENDED:
            raise LocalProtocolError(f"cannot send {type(msg).__name__}: the conversation ended")
        if not self._initiated:
            raise LocalProtocolError("say hello first")
        if isinstance(msg, p.Terminal | p.Show):
            if not self.may_hand_terminal:
                raise LocalProtocolError("the worker did not offer to take this terminal")
        elif isinstance(msg, p.Detach):
            self.state = State.ENDED
        elif isinstance(msg, p.Repaint):
            if not self.hello.may_skip or self.version is None or self.version < 2:
                raise LocalProtocolError("a repaint is for a client that may be skipped")
        elif self.hello.read_only and not isinstance(msg, p.Detach):
            raise LocalProtocolError(f"a read-only client sends no {type(msg).__name__}")
        elif isinstance(msg, p.Resize):
            msg = p.Resize(*fit_window_size(msg.rows, msg.cols))
        elif not isinstance(msg, p.Input | p.Signal | p.Stop):
            raise TypeError(f"not a message a client sends: {msg!r}")
        return p.encode(msg)

    @property
    def acks(self) -> bool:
        """Does this client acknowledge what it shows (asked for it, and the worker speaks
        a version that reads acks)?"""
        return self.hello.acks and self.version is not None and self.version >= 2

    def ack(self) -> bytes:
        """The Ack for what has been received so far, once the caller has shown it; ``b""``
        when there is little new to acknowledge (under :data:`ACK_EVERY` bytes: a
        keystroke's echo costs no ack) or this client does not ack."""
        if not self.acks or self.state is not State.STREAMING or self.position is None:
            return b""
        if self._unacked < ACK_EVERY:
            return b""
        self._unacked = 0
        return p.encode(p.Ack(self.position))

    def next_event(self) -> ClientEvent | Failed | Violation | Closed | _NeedData:
        while True:
            if self.state is State.ENDED:
                return Closed()
            msg = self._next_frame()
            if not isinstance(msg, p.Message):
                return msg
            if isinstance(msg, p.Error):
                self.state = State.ENDED
                return Failed(msg.message)
            if self.info is None:
                return self._welcome(msg)
            event = self._streaming(msg)
            if event is not None:
                return event

    def _welcome(self, msg: p.Message) -> SessionInfo | Violation:
        if not isinstance(msg, p.Welcome):
            return self._violation(f"expected a welcome, got {type(msg).__name__}")
        try:
            self.info = SessionInfo.from_dict(msg.info)
        except p.ProtocolError as exc:
            return self._violation(str(exc))
        self.version = msg.version
        self.state = State.STREAMING
        return self.info

    def _streaming(self, msg: p.Message) -> ClientEvent | Violation | None:
        match msg:
            case p.Output(offset, data):
                if self.position is None:
                    self.position = offset
                if offset > self.position:
                    return self._violation(
                        f"output at offset {offset} after {self.position}: bytes are missing"
                    )
                if offset < self.position:  # already shown (a replay overlapping it)
                    data = data[self.position - offset :]
                    offset = self.position
                    if not data:
                        return None
                self.position = offset + len(data)
                self._unacked += len(data) + FRAME_OVERHEAD
                return p.Output(offset, data) if offset != msg.offset else msg
            case p.Screen(offset, data):
                skipped = offset - self.position if self.position is not None else 0
                self.position = offset
                # Acked at once, however small: the worker sends a client far behind
                # nothing more until it has shown its screen (the feed policy's hold).
                self._unacked = max(self._unacked + len(data) + FRAME_OVERHEAD, ACK_EVERY)
                return Skipped(msg, skipped) if skipped > 0 else msg
            case p.Event(body):
                event = event_from_body(body)
                if isinstance(event, Exited) and not self.watching:
                    self.state = State.ENDED
                return event
            case _:
                return self._violation(f"a worker does not send {type(msg).__name__}")
