"""JSON from outside the process (a socket, a hook call, a file a user may edit, another
box's answer): the one way we parse it, so that every malformed input is a ``ValueError``.

``json.loads`` raises ``RecursionError``, not ``ValueError``, for input nested some
thousand levels deep (``[[[[...``: 200 kB of it fits in one hook call).  Callers catch
``ValueError`` for malformed input; the ``RecursionError`` went past them and took down
the task reading it (a hook call ended the session's worker, and its agent with it).
"""

from __future__ import annotations

import json
from typing import Any


def loads(raw: str | bytes | bytearray, **options: Any) -> Any:
    """``json.loads(raw, **options)``; ValueError for anything that is not usable JSON."""
    try:
        return json.loads(raw, **options)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None
