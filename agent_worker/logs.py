"""structlog set-up for superv's long-running processes (workers, the supervisor).

Called once by each process's entry point, never on import: key/value events on stderr,
which is the worker's ``worker.log``, the daemon's ``supervisor.log`` or, under systemd,
the journal.

**Logging never raises.**  ``worker.log`` and ``supervisor.log`` live on the same disk as
the sessions, and the events that matter most (``log_write_failed``, a failed snapshot)
are logged exactly when that disk is full.  A line that cannot be written is dropped and
counted; the next line that can be written is preceded by one ``log_lines_dropped`` line
saying how many were lost and why.  Nothing a log write does can kill a session.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any


class SafeStderr:
    """structlog's logger: one ``os.write`` per line to fd 2; a failed write is counted.

    Unbuffered on purpose: a buffered stream that failed once holds the rest of its
    buffer and fails again at every later write, and at exit.
    """

    def __init__(self, fd: int = 2) -> None:
        self.fd = fd
        self.dropped = 0
        self.last_error = ""
        self._torn = False  # a line was cut short: start the next one on a new line

    def msg(self, message: str) -> None:
        if self.dropped:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
            note = (f"timestamp='{stamp}Z' level='warning' event='log_lines_dropped' "
                    f"count={self.dropped} error={self.last_error!r}")
            if not self._write(note):
                self.dropped += 1
                return
            self.dropped = 0
        if not self._write(message):
            self.dropped += 1

    log = debug = info = warn = warning = error = critical = exception = fatal = msg

    def _write(self, line: str) -> bool:
        data = memoryview((("\n" if self._torn else "") + line + "\n").encode("utf-8", "replace"))
        written = 0
        try:
            while written < len(data):
                written += os.write(self.fd, data[written:])
        except OSError as exc:
            self.last_error = exc.strerror or type(exc).__name__
            self._torn = self._torn or written > 0
            return False
        self._torn = False
        return True


_stderr = SafeStderr()


def _factory(*args: Any) -> SafeStderr:
    return _stderr


def configure_logging() -> None:
    import structlog

    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"]),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=_factory,
        cache_logger_on_first_use=True,
    )
