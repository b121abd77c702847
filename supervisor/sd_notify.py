"""The daemon's side of systemd's notify protocol: one datagram per state change.

Hand-written (it is a dozen lines) because the usual package swallows every error.
"""

from __future__ import annotations

import os
import socket
import sys

# How long READY=1 / STOPPING=1 may wait for room in systemd's queue.  Everything else
# (STATUS=, WATCHDOG=1) is sent without waiting: a newer one follows soon.
_ESSENTIAL_WAIT = 1.0


def notify(state: str) -> bool:
    """Send ``state`` (e.g. ``READY=1``) to ``$NOTIFY_SOCKET``; False if there is none or it failed.

    Called from the daemon's event loop, so it must never block for long: a datagram send
    to a receiver whose queue is full (``net.unix.max_dgram_qlen``, 10 by default) blocks
    until it reads, and a supervisor stuck there neither serves nor handles SIGTERM.
    A failure is reported on stderr (the journal under systemd), not raised: losing a
    status line must not take the supervisor down.
    """
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # an abstract socket
    essential = "READY=1" in state or "STOPPING=1" in state
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(_ESSENTIAL_WAIT if essential else 0.0)
            sock.connect(address)
            sock.sendall(state.encode())
    except BlockingIOError:
        return False  # systemd is busy: this STATUS/WATCHDOG is superseded by the next one
    except OSError as exc:
        first = state.splitlines()[0] if state else ""
        sys.stderr.write(f"superv: sd_notify {first} to {os.environ.get('NOTIFY_SOCKET')} failed: {exc}\n")
        return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of systemd's limit), or None if not asked."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None
