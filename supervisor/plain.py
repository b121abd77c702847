"""Turning terminal output into plain text: escapes stripped, line endings tidied."""

from __future__ import annotations

import re

# CSI, OSC (ended by BEL or ST), DCS/SOS/PM/APC strings, and two-byte escapes.
_ESCAPE = re.compile(
    rb"\x1b\[[0-?]*[ -/]*[@-~]"
    rb"|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)"
    rb"|\x1b[PX^_][^\x1b]*\x1b\\"
    rb"|\x1b[()*+][0-~]"
    rb"|\x1b[ -/]*[0-~]"
)
# An escape that may be cut off at the end of a chunk.
_PARTIAL = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*|\x1b?|[PX^_][^\x1b]*\x1b?|[()*+])?$")
_CONTROL = re.compile(rb"[\x00-\x08\x0b-\x0c\x0e-\x1f\x7f]")


class PlainText:
    """A streaming escape stripper: feed chunks, get text; an escape may span chunks."""

    def __init__(self) -> None:
        self._carry = b""

    def feed(self, data: bytes, final: bool = False) -> bytes:
        data = self._carry + data
        self._carry = b""
        if not final:
            partial = _PARTIAL.search(data[-4096:])
            if partial and partial.group():
                cut = len(data) - len(partial.group())
                data, self._carry = data[:cut], data[cut:]
            elif data.endswith(b"\r"):
                data, self._carry = data[:-1], b"\r"  # its \n may come in the next chunk
        text = _ESCAPE.sub(b"", data)
        # A lone carriage return redraws a line (progress bars): as text, a new line.
        text = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        return _CONTROL.sub(b"", text)
