"""The one reader of terminal escape sequences: text in, tokens out.

Everything in superv that needs to know where an escape sequence starts and ends reads it
through :class:`Tokenizer`: the screen model, ``logs --plain``, the log anchors a screen is
rebuilt from, the worker's answers to terminal queries, and the attach client's record of
the modes a session set.  It is sans-I/O, like h11: feed it text as it arrives, in chunks
of any size, and it yields what is complete; a sequence cut by a chunk boundary is kept and
completed by the next feed::

    tokens = Tokenizer()
    for token in tokens.feed("\\x1b]0;build\\x07\\x1b[1;31mfailed"):
        match token:
            case OSC(body=body):      # body == "0;build", token.terminator == "\\x07"
                ...
            case CSI(final="m"):      # token.params == "1;31"
                ...
            case Text(text=text):     # "failed"
                ...

The grammar is the VT500 one (Paul Williams' state machine, as xterm and tmux follow it):

* :class:`Text`: a run of printable characters.  Characters U+0080..U+009F are text, not
  8-bit controls: output is UTF-8, where those bytes are continuation bytes.
* :class:`Control`: one C0 control or DEL (never ESC, which starts a sequence).
* :class:`CSI`: ``ESC [``, parameter bytes (``0-9:;<=>?``, the private prefix included),
  intermediate bytes (space to ``/``), a final byte.  A C0 control inside a CSI is
  reported on its own (before the CSI) and the CSI goes on; CAN or SUB abort it; ESC
  abandons it and starts a new sequence; a parameter byte after an intermediate makes it
  malformed and it is dropped whole.
* :class:`OSC`: ``ESC ]`` up to BEL or ST (``ESC \\``); :attr:`OSC.terminator` says which,
  so that an answer can end the way the question did.
* :class:`StringSequence`: DCS (``ESC P``), SOS (``ESC X``), PM (``ESC ^``) and APC
  (``ESC _``), up to ST.  In OSC and these strings, CAN or SUB abort the string and an ESC
  that is not ST abandons it and starts a new sequence.
* :class:`Escape`: ``ESC``, intermediates, a final byte (``ESC 7``, ``ESC ( 0``, ``ESC c``).
  An ESC followed by anything else is dropped and what follows is read afresh.

Two properties the callers rely on:

* **An ESC resynchronises.**  Whatever came before, an ESC either ends a string (as ST,
  ``ESC \\``) or starts a new sequence, so reading from any ESC not followed by ``\\``
  gives the tokens reading the whole stream would give from there on.  A caller whose
  tokenizer is :attr:`~Tokenizer.idle` may therefore skip to the first ESC it cares about.
* **Memory is bounded.**  An unfinished sequence is kept only up to ``max_pending``
  characters.  A longer OSC or DCS/APC/PM/SOS string (sixel, inline images) is skipped to
  its terminator and yields no token; a longer CSI or escape is dropped.

Bytes: the tokenizer reads ``str``.  The screen model decodes UTF-8 first (it needs the
characters); a caller that only cares about the sequences decodes with ``latin-1``, which
maps each byte to one character, so offsets and text round-trip exactly
(``text.encode("latin-1")``).

Speed: one regex match per token.  ``Tokenizer(text=False, controls=False)`` reports only
sequences and jumps from ESC to ESC, so plain output costs almost nothing; callers on a hot
path use it.  ``Tokenizer(text=False)`` reports sequences and controls (BEL, for one), and
jumps over text.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import NamedTuple

__all__ = [
    "CSI",
    "OSC",
    "Control",
    "Escape",
    "StringSequence",
    "Text",
    "Token",
    "Tokenizer",
]

ST = "\x1b\\"
BEL = "\x07"
MAX_PENDING = 1 << 16


class Text(NamedTuple):
    """Printable characters (no C0 control, no DEL, no ESC)."""

    text: str


class Control(NamedTuple):
    """One C0 control character or DEL: ``"\\r"``, ``"\\n"``, ``"\\x07"`` (BEL), ..."""

    char: str


class CSI(NamedTuple):
    """``ESC [ params intermediates final``; ``params`` keeps a private prefix (``?1049``)."""

    params: str
    intermediates: str
    final: str

    @property
    def prefix(self) -> str:
        """The private marker (``?``, ``>``, ``=``, ``<``) the parameters start with, or ``""``."""
        first = self.params[:1]
        return first if first in ("<", "=", ">", "?") else ""

    def values(self, cap: int = 9999) -> list[int]:
        """The ``;``-separated parameters after the prefix as numbers: empty or malformed
        is 0, a ``:`` sub-parameter list counts by its first value, each at most ``cap``."""
        body = self.params[1:] if self.prefix else self.params
        if not body:
            return []
        out = []
        for part in body.split(";"):
            head = part.split(":", 1)[0]
            out.append(min(int(head), cap) if head.isdigit() else 0)
        return out


class OSC(NamedTuple):
    """``ESC ] body`` ended by ``terminator``: BEL (``"\\x07"``) or ST (``"\\x1b\\\\"``)."""

    body: str
    terminator: str


class StringSequence(NamedTuple):
    """A DCS/SOS/PM/APC string: ``kind`` is ``"P"``, ``"X"``, ``"^"`` or ``"_"``."""

    kind: str
    body: str


class Escape(NamedTuple):
    """``ESC intermediates final`` (not CSI, OSC or a string)."""

    intermediates: str
    final: str


Token = Text | Control | CSI | OSC | StringSequence | Escape

_SEQUENCES = (
    r"|\x1b\[(?P<cp>[\x30-\x3f]*)(?P<ci>[\x20-\x2f]*)(?P<cf>[\x40-\x7e])"
    r"|(?P<c0>[\x00-\x1a\x1c-\x1f\x7f])"
    r"|\x1b\](?P<osc>[^\x07\x18\x1a\x1b]*)(?P<ot>\x07|\x1b\\)"
    r"|\x1b(?P<sk>[PX^_])(?P<sb>[^\x18\x1a\x1b]*)\x1b\\"
    r"|\x1b(?P<ei>[\x20-\x2f]+)(?P<ef>[\x30-\x7e])"
    r"|\x1b(?P<e1>[\x30-\x4f\x51-\x57\x59\x5a\x5c\x60-\x7e])"
)
_TOKEN = re.compile(r"(?P<text>[^\x00-\x1f\x7f]+)" + _SEQUENCES)
# controls=False: a text run is everything up to the next ESC (the c0 branch never matches).
_TOKEN_RAW = re.compile(r"(?P<text>[^\x1b]+)" + _SEQUENCES)
# An unfinished OSC/DCS/SOS/PM/APC string or ESC-with-intermediates: wait for more input.
_PARTIAL = re.compile(r"\x1b(?:[\]PX^_][^\x18\x1a\x1b]*\x1b?|[\x20-\x2f]*)\Z")
_OSC_END = re.compile(r"\x07|\x1b\\?|[\x18\x1a]")
_STRING_END = re.compile(r"\x1b\\?|[\x18\x1a]")
_STRINGS = ("]", "P", "X", "^", "_")
_CONTROL_OR_ESC = re.compile(r"[\x00-\x1f\x7f]")
# A match is told apart by the last group it closed (``Match.lastindex``: cheaper than names).
_G = _TOKEN.groupindex
_TEXT, _CSI, _C0, _OSC, _ESC, _ESC1 = _G["text"], _G["cf"], _G["c0"], _G["ot"], _G["ef"], _G["e1"]


class Tokenizer:
    """An incremental tokenizer of terminal output; see the module docstring.

    ``text=False``: no :class:`Text`; text is skipped without being looked at.
    ``controls=False``: no :class:`Control`; with text, controls are part of the
    :class:`Text` around them (a text run is then everything up to the next ESC, for callers
    that strip sequences and keep the rest); without text, they are skipped too, and only
    sequences are reported.  ``max_pending`` bounds the unfinished sequence kept between
    feeds.  Never raises on any input.
    """

    def __init__(
        self, *, text: bool = True, controls: bool = True, max_pending: int = MAX_PENDING
    ) -> None:
        self.text = text
        self.controls = controls
        self._token = _TOKEN if controls else _TOKEN_RAW
        self.max_pending = max_pending
        self._pending = ""  # an unfinished sequence from the last feed
        self._skipping = ""  # inside an over-long string: its kind, dropped until its end

    @property
    def idle(self) -> bool:
        """True when no sequence is open: the next feed starts from scratch."""
        return not self._pending and not self._skipping

    @property
    def unfinished(self) -> str:
        """The unfinished sequence the last feed ended in (``""`` if none), as text that
        puts another terminal's parser in the same state: the stream's next bytes then
        complete it there as they do here.  An over-long string being skipped is given as
        its introducer only."""
        if self._skipping:
            return "\x1b" + self._skipping + self._pending
        return self._pending

    def reset(self) -> None:
        """Forget any unfinished sequence (the caller skipped part of the stream)."""
        self._pending = ""
        self._skipping = ""

    def feed(self, data: str) -> Iterator[Token]:
        """Tokens for ``data``, following what earlier feeds left unfinished.

        Consume the iterator before the next feed: the state advances as it is consumed.
        """
        if self._pending:
            data, self._pending = self._pending + data, ""
        pos = 0
        if self._skipping:
            pos = self._skip_string(data, 0)
            if pos < 0:
                return
        end = len(data)
        match = self._token.match
        keep_text = self.text
        skip = None if keep_text else ("\x1b" if not self.controls else _CONTROL_OR_ESC)
        new = tuple.__new__  # a NamedTuple's own __new__ is a Python call: twice the cost
        while pos < end:
            if skip is not None and data[pos] != "\x1b":
                if skip == "\x1b":
                    pos = data.find("\x1b", pos)
                else:
                    found = _CONTROL_OR_ESC.search(data, pos)
                    pos = found.start() if found is not None else -1
                if pos < 0:
                    return
            m = match(data, pos)
            if m is None:
                pos = yield from self._irregular(data, pos)
                if pos < 0:
                    return
                continue
            pos = m.end()
            kind = m.lastindex
            if kind == _TEXT:
                yield new(Text, (m[_TEXT],))
            elif kind == _CSI:
                yield new(CSI, (m["cp"], m["ci"], m[_CSI]))
            elif kind == _C0:
                yield new(Control, (m[_C0],))
            elif kind == _ESC1:
                yield new(Escape, ("", m[_ESC1]))
            elif kind == _OSC:
                yield new(OSC, (m["osc"], m[_OSC]))
            elif kind == _ESC:
                yield new(Escape, (m["ei"], m[_ESC]))
            else:
                yield new(StringSequence, (m["sk"], m["sb"]))

    def feed_at(self, data: str, starts: re.Pattern[str], longest: int) -> Iterator[Token]:
        """Tokens of only the sequences in ``data`` that begin where ``starts`` matches.

        The fast path for a caller that looks for a few kinds of sequence in a lot of output
        (the worker's query answers, the attach client's modes): everything else is passed
        over by ``starts`` at C speed, never tokenized.  ``starts`` must match the beginning
        of a sequence, ESC first, or a control character (with ``controls=True``), and no
        ESC after its first character; ``longest`` is the length of its longest match.
        Each match is read up to the next ESC (which ends or abandons whatever it began: an
        ESC resynchronises) or through the ST that ends the string it began, and a match
        cut off by the end of ``data`` is completed by the next call.  Use one tokenizer
        with either :meth:`feed` or this, not both.  Titles, notifications and bells::

            signals = Tokenizer(text=False)
            for token in signals.feed_at(chunk, re.compile(r"\\x1b\\]|\\x07"), 2):
                ...  # OSC(...) or Control("\\x07"); a BEL that ends an OSC is its terminator
        """
        if self._pending or self._skipping:
            data, self._pending, self._skipping = self.unfinished + data, "", ""
        end = len(data)
        done = 0
        for m in starts.finditer(data):
            if m.start() < done:
                continue  # inside what the last match read (a BEL that ended its OSC)
            stop = data.find("\x1b", m.end())
            if stop < 0 or stop == end - 1:  # none, or one that may begin an ST: read on
                stop = end
            elif data.startswith(ST, stop):
                stop += 2  # the ST that ends a string the match began
            yield from self.feed(data[m.start() : stop])
            if stop < end:
                self.reset()
            done = stop
        last = data.rfind("\x1b", max(done, end - longest))
        if last >= done and not self._pending:  # may begin a match the next call completes
            self._pending = data[last:]

    def _irregular(self, data: str, pos: int) -> Iterator[Token]:
        """``data[pos]`` is an ESC that starts no complete sequence the fast path knows:
        keep it for the next feed if it may still become one, else recover as a VT500
        parser would.  Returns where to go on (-1: stop)."""
        kind = data[pos + 1 : pos + 2]
        if kind == "[":
            return (yield from self._csi_slow(data, pos))
        if _PARTIAL.match(data, pos):
            if len(data) - pos <= self.max_pending:
                self._pending = data[pos:]
            elif kind in _STRINGS:
                self._skipping = kind
                if data.endswith("\x1b"):
                    self._pending = "\x1b"
            return -1
        if kind in _STRINGS:
            # An ESC that is not ST abandons the string; CAN and SUB abort it.
            found = (_OSC_END if kind == "]" else _STRING_END).search(data, pos + 2)
            if found is None:  # pragma: no cover - _PARTIAL matched that case
                return -1
            cut = found.start()
            return cut if data[cut] == "\x1b" else cut + 1
        return pos + 1  # ESC + something that is no sequence: drop the ESC

    def _csi_slow(self, data: str, pos: int) -> Iterator[Token]:
        """A CSI the regex did not take (a control inside, too long, malformed, or cut off
        at the end of the feed).  Returns where to go on, -1 if it is unfinished."""
        params: list[str] = []
        inter: list[str] = []
        malformed = False
        for i in range(pos + 2, len(data)):
            ch = data[i]
            if "\x40" <= ch <= "\x7e":
                if not malformed and len(params) + len(inter) < 256:
                    yield CSI("".join(params), "".join(inter), ch)
                return i + 1
            if "\x30" <= ch <= "\x3f":
                if inter:
                    malformed = True
                params.append(ch)
            elif "\x20" <= ch <= "\x2f":
                inter.append(ch)
            elif ch in "\x18\x1a":
                return i + 1
            elif ch == "\x1b":
                return i
            elif ch < " ":
                if self.controls:
                    yield Control(ch)
                elif self.text:
                    yield Text(ch)
            else:  # DEL or a non-ASCII character: not a CSI after all
                return i
        if len(data) - pos <= self.max_pending:
            # Unfinished; controls already reported are not repeated: keep only the CSI.
            self._pending = "\x1b[" + "".join(params) + "".join(inter)
        return -1

    def _skip_string(self, data: str, pos: int) -> int:
        ends = _OSC_END if self._skipping == "]" else _STRING_END
        found = ends.search(data, pos)
        if found is None:
            return -1
        token = found.group()
        if token == "\x1b" and found.end() == len(data):
            self._pending = "\x1b"
            return -1
        self._skipping = ""
        return found.start() if token == "\x1b" else found.end()
