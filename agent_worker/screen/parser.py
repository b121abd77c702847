"""Bytes in, calls on a :class:`VTScreen` out: the escape tokenizer drives the screen.

The tokens come from :class:`agent_worker.escapes.Tokenizer` (the one reader of escape
sequences, shared with the rest of superv); this module only decides what each means for
the screen.  Where pyte's own parser is wrong it is not used: it applies ``CSI > 4 ; 2 m``
(vim's modifyOtherKeys) as an SGR, prints the payload of DCS/APC strings and the tail of
``CSI = 1 u`` / ``CSI ! p`` as text, and drops colon sub-parameters (``38:2::r:g:b``).

A sequence the screen does not know is ignored; parameters beyond those a sequence takes
are ignored, as a terminal does.  Nothing here raises on any input: an exception is a bug.
"""

from __future__ import annotations

import codecs
from collections.abc import Callable

from agent_worker.escapes import CSI, OSC, Control, Escape, Text, Tokenizer
from agent_worker.screen.cells import apply_sgr
from agent_worker.screen.vt import VTScreen

_TITLE_MAX = 256  # characters of a window title kept


class Parser:
    """Feeds a :class:`VTScreen` from output bytes (UTF-8, any chunking)."""

    def __init__(self, screen: VTScreen) -> None:
        self.screen = screen
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.tokens = Tokenizer()
        s = screen
        self.c0: dict[str, Callable[[], None]] = {
            "\x08": s.backspace,
            "\x09": s.tab,
            "\x0a": s.linefeed,
            "\x0b": s.linefeed,
            "\x0c": s.linefeed,
            "\x0d": s.carriage_return,
            "\x0e": s.shift_out,
            "\x0f": s.shift_in,
        }
        self.csi: dict[str, Callable[..., None]] = {  # one parameter, or none
            "@": s.insert_characters,
            "A": s.cursor_up,
            "B": s.cursor_down,
            "C": s.cursor_forward,
            "D": s.cursor_back,
            "E": s.cursor_down1,
            "F": s.cursor_up1,
            "G": s.cursor_to_column,
            "I": s.tab,
            "J": s.erase_in_display,
            "K": s.erase_in_line,
            "L": s.insert_lines,
            "M": s.delete_lines,
            "P": s.delete_characters,
            "S": s.scroll_up,
            "T": s.scroll_down,
            "X": s.erase_characters,
            "Z": s.back_tab,
            "`": s.cursor_to_column,
            "a": s.cursor_forward,
            "b": s.repeat,
            "d": s.cursor_to_line,
            "e": s.cursor_down,
            "g": s.clear_tab_stop,
        }
        self.esc: dict[str, Callable[[], None]] = {
            "7": s.save_cursor,
            "8": s.restore_cursor,
            "D": s.index,
            "E": s.next_line,
            "M": s.reverse_index,
            "H": s.set_tab_stop,
            "c": s.reset,
            "=": lambda: s.keypad(True),
            ">": lambda: s.keypad(False),
        }
        self.csi2: dict[str, Callable[..., None]] = {  # two parameters
            "H": s.cursor_position,
            "f": s.cursor_position,
            "r": s.set_margins,
        }
        self.csi0: dict[str, Callable[[], None]] = {  # parameters ignored
            "s": s.save_cursor,
            "u": s.restore_cursor,
        }

    def feed(self, data: bytes) -> None:
        screen = self.screen
        draw = screen.draw
        for token in self.tokens.feed(self.decoder.decode(data)):
            kind = type(token)
            if kind is Text:
                draw(token[0])
                continue
            if kind is CSI:
                self._csi(token)  # type: ignore[arg-type]
            elif kind is Control:
                handler = self.c0.get(token[0])
                if handler is not None:
                    handler()
            elif kind is Escape:
                self._esc(token[0], token[1])
            elif kind is OSC:
                self._osc(token[0])
            # DCS/SOS/PM/APC strings: consumed, ignored.
            # REP repeats only a character printed right before it (tmux, ECMA-48): any
            # control or sequence in between, render()'s included, forgets it.
            screen.last_char = ""

    def unfinished(self) -> bytes:
        """The incomplete sequence (and UTF-8 character) the last feed ended in, as bytes
        that put another terminal's parser in the same state: the stream's next bytes then
        complete it there as they do here."""
        return self.tokens.unfinished.encode("utf-8", "replace") + self.decoder.getstate()[0]

    def _csi(self, token: CSI) -> None:
        screen = self.screen
        params, inter, final = token
        if final == "m" and not inter:  # SGR, the most common by far: first
            if not params or params[0] not in "<=>?":
                screen.cursor.attrs = apply_sgr(screen.cursor.attrs, params)
            return
        prefix = token.prefix
        if inter:
            if inter == " " and final == "q" and not prefix:
                screen.set_cursor_style((token.values() or [0])[0])
            elif inter == "!" and final == "p":
                screen.soft_reset()
            return
        if prefix:
            if prefix == "?":
                if final in "hl":
                    (screen.set_mode if final == "h" else screen.reset_mode)(*token.values(), private=True)
                elif final in "JK":
                    handler = screen.erase_in_display if final == "J" else screen.erase_in_line
                    handler(*token.values()[:1])
            return
        handler = self.csi.get(final)
        if handler is not None:
            handler(*token.values()[:1])
        elif final in "hl":  # ANSI modes: insert (4), newline (20)
            (screen.set_mode if final == "h" else screen.reset_mode)(*token.values())
        elif final in self.csi2:
            self.csi2[final](*token.values()[:2])
        elif final in self.csi0:
            self.csi0[final]()

    def _esc(self, inter: str, final: str) -> None:
        screen = self.screen
        if not inter:
            handler = self.esc.get(final)
            if handler is not None:
                handler()
        elif inter in ("(", ")"):
            screen.define_charset(final, inter)
        elif inter == "#" and final == "8":
            screen.alignment_display()

    def _osc(self, body: str) -> None:
        code, _, value = body.partition(";")
        if code in ("0", "2"):
            self.screen.title = value[:_TITLE_MAX]
