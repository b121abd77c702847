"""Reporting that a running agent has printed nothing for ``SUPERV_STALL_AFTER`` seconds.

The worker knows when it last logged output, so it reports ``stalled`` itself (once per
stall) to its watch clients; the supervisor relays it to ``superv events``.  One timer per
session, set for the moment a stall would begin, instead of a supervisor loop that stats
every session's log.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import trio

from agent_worker import settings

# Once a stall is reported, how often to look whether output resumed (and a new stall
# began): the worker's hot path has no hook for this, and it need not be exact.
RECHECK = 30.0


async def report_stalls(broadcast: Callable[[dict[str, Any]], None],
                        last_output: Callable[[], float], ended: trio.Event) -> None:
    """Until ``ended``: ``broadcast`` a ``stalled`` event when ``last_output()`` is
    ``SUPERV_STALL_AFTER`` seconds old, once for each stretch without output."""
    stall_after = settings.current().stall_after
    reported: float | None = None
    while not ended.is_set():
        last = last_output()
        idle = time.time() - last
        if idle < stall_after:
            await _sleep_unless(ended, stall_after - idle)
            continue
        if reported != last:
            reported = last
            broadcast({"event": "stalled", "idle": round(idle)})
        await _sleep_unless(ended, min(RECHECK, stall_after / 2))


async def _sleep_unless(ended: trio.Event, seconds: float) -> None:
    with trio.move_on_after(seconds):
        await ended.wait()
