"""structlog set-up for superv's long-running processes (workers, the supervisor).

Called once by each process's entry point, never on import: key/value events on stderr,
which is the worker's ``worker.log``, the daemon's ``supervisor.log`` or, under systemd,
the journal.
"""

from __future__ import annotations

import logging
import sys


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
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
