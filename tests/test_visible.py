"""The one rule for printing text from users and agents in tables and headers."""

from __future__ import annotations

import os

import pytest

from supervisor.visible import visible


@pytest.mark.parametrize("text, shown", [
    ("sh -c 'echo hi'", "sh -c 'echo hi'"),
    ("caf\u00e9 \u6f22", "caf\u00e9 \u6f22"),  # printable Unicode stays
    ("\x1b[2J\x1b]0;t\x07", "\\e[2J\\e]0;t\\x07"),
    ("a\nb\r\tc", "a\\nb\\r\\tc"),
    ("\x9b2J\x7f", "\\x9b2J\\x7f"),  # C1 CSI and DEL act on terminals too
    ("\u202eevil", "\\u202eevil"),  # a right-to-left override reorders what follows
    (os.fsdecode(b"\xff\xfe"), "\\xff\\xfe"),  # bytes that were not UTF-8: the bytes
])
def test_control_characters_are_shown_as_escapes(text: str, shown: str) -> None:
    assert visible(text) == shown
