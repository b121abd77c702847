"""Terminal signals in an agent's output: titles, notifications, progress, a real BEL.

An incremental scanner over the raw bytes of the log (a sequence split across reads is
completed by the next one).  It looks only for ``ESC ]`` (OSC) and BEL with ``bytes.find``,
so it costs little, and the worker runs it off the hot path, after the bytes are logged.
A BEL that ends an OSC is a terminator, not a bell.

(The ``screen`` work on main is building one escape tokenizer for the whole worker; this
scanner should become a client of it when it lands.)
"""

from __future__ import annotations

import attrs

MAX_OSC = 4096  # an OSC longer than this is not a title or a notification: dropped

ESC, BEL, ST = b"\x1b", b"\x07", b"\x1b\\"


@attrs.frozen
class Signal:
    kind: str  # "title", "notify", "progress", "bell"
    text: str = ""


@attrs.define
class TerminalScanner:
    _pending: bytes = b""

    def feed(self, data: bytes) -> list[Signal]:
        buf = self._pending + data if self._pending else data
        self._pending = b""
        signals: list[Signal] = []
        pos = 0
        while True:
            osc = buf.find(b"\x1b]", pos)
            bell = buf.find(BEL, pos)
            if bell != -1 and (osc == -1 or bell < osc):
                signals.append(Signal("bell"))
                pos = bell + 1
                continue
            if osc == -1:
                if buf.endswith(ESC):
                    self._pending = ESC  # maybe the start of an OSC
                break
            end_bel = buf.find(BEL, osc + 2)
            end_st = buf.find(ST, osc + 2)
            ends = [e for e in (end_bel, end_st) if e != -1]
            if not ends:
                rest = buf[osc:]
                self._pending = rest if len(rest) <= MAX_OSC else b""
                break
            end = min(ends)
            signal = _osc(buf[osc + 2 : end])
            if signal is not None:
                signals.append(signal)
            pos = end + (1 if end == end_bel else 2)
        return signals


def _osc(body: bytes) -> Signal | None:
    if len(body) > MAX_OSC:
        return None
    text = body.decode("utf-8", "replace")
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
