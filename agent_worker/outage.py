"""Whether one kind of write is failing now (a full disk), so that an outage is reported
once, when it begins, and its end once, not at every retry: a worker retries its log
every second and snapshots every interval, and a notice per try filled ``superv events``
with three a session every two seconds."""

from __future__ import annotations


class Outage:
    def __init__(self) -> None:
        self.failing = False

    def failed(self) -> bool:
        """A write failed: True if that begins an outage (say so)."""
        began = not self.failing
        self.failing = True
        return began

    def succeeded(self) -> bool:
        """A write succeeded: True if that ends an outage."""
        ended = self.failing
        self.failing = False
        return ended
