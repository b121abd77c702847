"""What an attach client says when the worker skipped it to the present (issue 12).

The worker's feed policy (:mod:`agent_worker.feed_policy`) sends a client that fell far
behind the current screen instead of its backlog; the client shows one line about it on
its status line for a moment (:mod:`supervisor.status_line`), with the command that shows
what it did not get.  Local and remote attach both say it in these words.
"""

from __future__ import annotations


def _size(n: int) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f} MB"
    if n >= 1000:
        return f"{n / 1000:.0f} kB"
    return f"{n} bytes"


def skip_words(name: str, skipped: int, where: str = "") -> str:
    """The status line after a skip of ``skipped`` log bytes of session ``name``."""
    on = f" on {where}" if where else ""
    return (f"skipped {_size(skipped)} to the present: 'superv logs {name}'{on} shows it "
            "(or attach --from-start; --exact never skips)")
