"""Notice when the laptop's network may have come back, so a reconnect need not wait.

Two signs, both from the kernel, stdlib only:

- **a route or address change**: an ``AF_NETLINK``/``NETLINK_ROUTE`` socket subscribed to
  the IPv4 and IPv6 address and route groups receives a message for each one (a Wi-Fi
  network joined, a DHCP lease, a VPN up or down, a cable plugged in);
- **a resumed system**: ``CLOCK_BOOTTIME`` counts the time spent suspended and
  ``CLOCK_MONOTONIC`` does not, so a jump in their difference means the machine slept.
  (The wall clock is no good for this: NTP and the user may step it.)

:class:`NetworkWatch` only tells; what to do about it (wake the reconnect at once, give up
a try that is stuck) is the remote attach's business (:mod:`supervisor.remote_attach`).
Where netlink is unavailable (not Linux, a sandbox), only the resume check runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import Callable

import attrs

# linux/rtnetlink.h: the multicast groups (bit masks for bind) and the message types.
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV4_ROUTE = 0x40
RTMGRP_IPV6_IFADDR = 0x100
RTMGRP_IPV6_ROUTE = 0x400
GROUPS = RTMGRP_IPV4_IFADDR | RTMGRP_IPV4_ROUTE | RTMGRP_IPV6_IFADDR | RTMGRP_IPV6_ROUTE
_KINDS = {
    20: "address added",
    21: "address removed",
    24: "route added",
    25: "route removed",
}
_NLMSGHDR = struct.Struct("=IHHII")  # length, type, flags, sequence, port id

RESUME_CHECK_INTERVAL = 1.0  # seconds between looks at the two clocks
RESUME_MIN = 1.0  # a jump of more than this between two looks: the system was suspended


@attrs.frozen
class NetworkChange:
    """What the watch saw: words for a log, and whether the system had been suspended."""

    reason: str
    resumed: bool = False


def _open_route_socket() -> socket.socket | None:
    if not hasattr(socket, "AF_NETLINK"):
        return None
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    except OSError:
        return None
    try:
        sock.bind((0, GROUPS))
        sock.setblocking(False)
    except OSError:
        sock.close()
        return None
    return sock


def describe_messages(data: bytes) -> list[str]:
    """The route and address changes in one netlink datagram, as words."""
    found = []
    at = 0
    while at + _NLMSGHDR.size <= len(data):
        length, kind, _, _, _ = _NLMSGHDR.unpack_from(data, at)
        if length < _NLMSGHDR.size:
            break
        if kind in _KINDS:
            found.append(_KINDS[kind])
        at += (length + 3) & ~3  # messages are 4-byte aligned
    return found


def _suspended_so_far() -> float:
    """Seconds this machine has spent suspended since boot (0 where unknown)."""
    boottime = getattr(time, "CLOCK_BOOTTIME", None)
    if boottime is None:
        return 0.0
    return time.clock_gettime(boottime) - time.monotonic()


class NetworkWatch:
    """Calls ``on_change`` on the event loop each time the network may have changed."""

    def __init__(self, on_change: Callable[[NetworkChange], None]) -> None:
        self._on_change = on_change
        self._changes: list[str] = []
        self._arrived = asyncio.Event()

    async def run(self) -> None:
        """Watch until cancelled."""
        loop = asyncio.get_running_loop()
        sock = _open_route_socket()
        if sock is not None:
            loop.add_reader(sock.fileno(), self._drain, sock)
        try:
            suspended = _suspended_so_far()
            while True:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(RESUME_CHECK_INTERVAL):
                        await self._arrived.wait()
                if self._changes:
                    reason = ", ".join(dict.fromkeys(self._changes))
                    self._changes.clear()
                    self._arrived.clear()
                    self._on_change(NetworkChange(reason))
                now = _suspended_so_far()
                if now - suspended > RESUME_MIN:
                    slept = f"resumed after {now - suspended:.0f} s suspended"
                    self._on_change(NetworkChange(slept, resumed=True))
                suspended = now
        finally:
            if sock is not None:
                loop.remove_reader(sock.fileno())
                sock.close()

    def _drain(self, sock: socket.socket) -> None:
        while True:
            try:
                data = sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                # ENOBUFS: the kernel dropped messages because we were slow; something
                # changed all the same.
                self._changes.append("network changed")
                break
            self._changes.extend(describe_messages(data))
        if self._changes:
            self._arrived.set()
