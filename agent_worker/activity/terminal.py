"""Terminal signals in an agent's output: titles, notifications, progress, a real BEL.

Read with the worker's one escape tokenizer (:mod:`agent_worker.escapes`), reporting
sequences and controls only (it jumps over text), off the hot path: the worker scans the
log after the bytes are logged.  A BEL that ends an OSC is a terminator, not a bell; one
inside a DCS or APC string is part of the string.
"""

from __future__ import annotations

import re

import attrs

from agent_worker.escapes import OSC, Control, Tokenizer

MAX_OSC = 4096  # an OSC longer than this is not a title or a notification: skipped
# Where a signal may begin: an OSC or a BEL.  The other strings (DCS, SOS, PM, APC) are
# read too, so that a BEL inside one is passed over with it.  Everything else is skipped
# at C speed: tokenizing every line end of ``yes`` made the worker 4x slower than the PTY.
_STARTS = re.compile(r"\x1b[\]PX^_]|\x07")
_LONGEST_START = 2


@attrs.frozen
class Signal:
    kind: str  # "title", "notify", "progress", "bell"
    text: str = ""


@attrs.define
class TerminalScanner:
    _tokens: Tokenizer = attrs.Factory(lambda: Tokenizer(text=False, max_pending=MAX_OSC))

    def feed(self, data: bytes) -> list[Signal]:
        # latin-1 maps each byte to one character: the sequences are found byte-exact, and
        # an OSC's body is decoded as UTF-8 afterwards.
        signals: list[Signal] = []
        for token in self._tokens.feed_at(data.decode("latin-1"), _STARTS, _LONGEST_START):
            if isinstance(token, Control):
                if token.char == "\x07":
                    signals.append(Signal("bell"))
            elif isinstance(token, OSC):
                signal = _osc(token.body.encode("latin-1").decode("utf-8", "replace"))
                if signal is not None:
                    signals.append(signal)
        return signals


def _osc(text: str) -> Signal | None:
    code, _, rest = text.partition(";")
    if code in ("0", "2"):
        return Signal("title", rest)
    if code == "9":
        if rest.startswith("4;"):  # ConEmu / Windows Terminal progress: 9;4;STATE;PERCENT
            return Signal("progress", rest[2:])
        return Signal("notify", rest)
    if code == "777":  # urxvt: 777;notify;TITLE;BODY
        parts = rest.split(";", 2)
        if parts[0] == "notify":
            return Signal("notify", ": ".join(p for p in parts[1:] if p))
        return None
    if code == "99":  # kitty: 99;METADATA;PAYLOAD
        return Signal("notify", rest.partition(";")[2])
    return None
