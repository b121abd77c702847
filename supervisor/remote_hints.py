"""The box's hints as the user runs them from here.

A box's superv names commands in its refusals for someone on that box: "no session named
x: 'superv ls' lists them", "'superv resume x' runs it again".  Read over SSH (``superv
logs box:x``, ``superv attach box:x``), the command that helps is the one for that box:
``superv ls box:``, ``superv resume box:x``.  The laptop rewrites them, not the box: only
it knows how the user named the box (``box``, ``me@box``, ``[::1]``), and a box with an
older superv is read right too.

Only commands that take ``HOST:`` are rewritten (``superv rm x`` has no remote form: it
stays), ``ls`` alone and the others only with the session the user named, so no other
word of a message changes.  Standard library only: the remote commands are short.
"""

from __future__ import annotations

import re

# The commands that also run on another box (``HOST:NAME``), besides ``ls HOST:``.
REMOTE_VERBS = ("attach", "logs", "peek", "send", "stop", "kill", "resume", "approve", "deny")
# 'superv ls' as hints quote it: followed by the quote, a bracket or the end.
_LS = re.compile(r"\bsuperv ls(?=['\")]|$)", re.MULTILINE)
# Where a session name ends: not followed by a character names may have (a full stop
# ending the sentence is not one).
_NAME_END = r"(?![A-Za-z0-9_-])(?!\.[A-Za-z0-9_-])"


def from_here(text: str, where: str, name: str | None = None) -> str:
    """``text`` said by the box ``where`` (``[USER@]HOST`` as the user wrote it) with its
    commands as the user runs them from here, for session ``name`` if there is one."""
    text = _LS.sub(lambda _: f"superv ls {where}:", text)
    if name:
        verbs = "|".join(REMOTE_VERBS)
        command = re.compile(rf"\bsuperv ({verbs}) {re.escape(name)}{_NAME_END}")
        text = command.sub(lambda m: f"superv {m[1]} {where}:{name}", text)
    return text


def bytes_from_here(data: bytes, where: str, name: str | None = None) -> bytes:
    """:func:`from_here` of the box's own bytes; what it does not rewrite stays byte for byte."""
    text = data.decode("utf-8", "surrogateescape")
    return from_here(text, where, name).encode("utf-8", "surrogateescape")
