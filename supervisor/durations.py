"""Durations as users type them (``90s``, ``5m``, ``1h30m``, ``30d``, or plain seconds) and
as ``ls`` and the overview show them (``42s``, ``5m``, ``3h``)."""

from __future__ import annotations

import argparse
import re

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_duration(text: str) -> float:
    text = text.strip().lower()
    try:
        return float(text)
    except ValueError:
        pass
    parts = _PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise argparse.ArgumentTypeError(f"cannot read duration {text!r}: use e.g. 90s, 5m, 1h30m, 30d")
    return sum(float(n) * _UNITS[u] for n, u in parts)


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
