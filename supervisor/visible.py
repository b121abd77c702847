"""Text from a user or an agent, made safe to print in a table, a header or the overview.

A command line, a session's last line, a host or a problem we pass on may hold control
characters: printed raw, ``\\e[2J`` clears the user's screen, ``\\e]0;...\\a`` sets the
terminal's title and a newline breaks the table.  :func:`visible` is the one place that
turns them into escapes one can read; ``--json`` output and the session's own output
(``logs``, ``peek``, ``attach``) stay exact.
"""

from __future__ import annotations

_NAMED = {"\x1b": "\\e", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def visible(text: str) -> str:
    """``text`` with each character that is not printable as an escape (``\\e``, ``\\n``,
    ``\\xNN``, ``\\uNNNN``); a byte that was not UTF-8 (a surrogate escape) as ``\\xNN``."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    code = ord(char)
    if char in _NAMED:
        return _NAMED[char]
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's surrogateescape of the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"
