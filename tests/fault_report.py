"""The figures of a fault-suite run, printed at the end of pytest's output.

Each fault test records what it injected and how it was answered; ``conftest.py`` prints
the lines in its terminal summary, so the README's Reliability figures come from one run
of ``scripts/test tests/test_fault_*.py``.
"""

from __future__ import annotations

from typing import Any

LINES: list[str] = []
TOTALS: dict[str, int] = {}


def add(key: str, n: int) -> None:
    TOTALS[key] = TOTALS.get(key, 0) + n


def note(line: str) -> None:
    LINES.append(line)


def record(where: str, tally: Any, silent: list[str], growth: dict[str, int]) -> None:
    """A fuzz run's tally (a ``fault_frames.Tally``), its lingering connections' outcomes
    and the RSS growth of the processes it hit."""
    answered_silent = sum(1 for s in silent if s == "error")
    memory = ", ".join(f"{k} RSS {v:+d} kB" for k, v in growth.items())
    what = (f"{answered_silent} of {len(silent)} answered with an error" if silent
            else tally.summary())
    note(f"{where}: {what}; {memory}")
    add("bad inputs tried", tally.total() + len(silent))
    add("complete invalid frames", tally.invalid())
    add("errors answered", tally.answered() + answered_silent)
    add("closed silently", tally.counts["answer", "silent"])
