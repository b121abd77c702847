"""Turning terminal output into plain text: escapes stripped, line endings tidied."""

from __future__ import annotations

import re

from agent_worker.escapes import Text, Tokenizer

# Controls that are not layout (BEL, backspace, DEL...): dropped.  Tab and line ends stay.
_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f]")


class PlainText:
    """A streaming escape stripper: feed chunks, get text; an escape may span chunks.

    Sequences are read by :class:`agent_worker.escapes.Tokenizer`, so a title, a DCS or
    APC string (images included) and a CSI of any shape go whole, and a CRLF with a
    sequence between its halves is still one line end.
    """

    def __init__(self) -> None:
        self._tokens = Tokenizer(controls=False)
        self._carry = b""  # a CR at the end of the last chunk: its LF may come next

    def feed(self, data: bytes, final: bool = False) -> bytes:
        # latin-1 maps each byte to one character and back: UTF-8 text passes unchanged.
        parts = [self._carry]
        parts.extend(
            token.text.encode("latin-1")
            for token in self._tokens.feed(data.decode("latin-1"))
            if type(token) is Text
        )
        text = b"".join(parts)
        self._carry = b""
        if final:
            self._tokens.reset()  # an escape cut off by the end of the log: dropped
        elif text.endswith(b"\r"):
            text, self._carry = text[:-1], b"\r"
        # A lone carriage return redraws a line (progress bars): as text, a new line.
        text = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return _CONTROL.sub(b"", text)
