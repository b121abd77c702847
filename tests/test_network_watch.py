"""The network watch hears real route and address changes from the kernel (netlink)."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess

import pytest

from supervisor.network_watch import NetworkChange, NetworkWatch, describe_messages


def test_describe_messages_reads_netlink_headers() -> None:
    import struct

    def message(kind: int, payload: bytes = b"\0" * 8) -> bytes:
        length = 16 + len(payload)
        return struct.pack("=IHHII", length, kind, 0, 1, 0) + payload + b"\0" * (-length % 4)

    data = message(20) + message(25, b"\0" * 5) + message(3)  # new addr, del route, other
    assert describe_messages(data) == ["address added", "route removed"]
    assert describe_messages(b"\x01\x00") == []


@pytest.mark.timeout(30)
def test_an_address_added_and_removed_is_heard() -> None:
    if os.geteuid() != 0:
        pytest.fail("this test adds an address to lo: run it as root (scripts/test does)")
    # An address from TEST-NET-1 (RFC 5737, never routed) on lo, /32: nothing else uses it.
    address = f"192.0.2.{random.randrange(2, 250)}/32"

    async def scenario() -> list[NetworkChange]:
        seen: list[NetworkChange] = []
        arrived = asyncio.Event()

        def on_change(change: NetworkChange) -> None:
            seen.append(change)
            arrived.set()

        async with asyncio.TaskGroup() as tasks:
            watcher = tasks.create_task(NetworkWatch(on_change).run())
            await asyncio.sleep(0)  # let it subscribe before the change
            await asyncio.sleep(0)
            subprocess.run(["ip", "addr", "add", address, "dev", "lo"], check=True, timeout=10)
            try:
                async with asyncio.timeout(10):
                    await arrived.wait()
            finally:
                subprocess.run(["ip", "addr", "del", address, "dev", "lo"], check=True,
                               timeout=10)
            watcher.cancel()
        return seen

    seen = asyncio.run(scenario())
    assert seen and "address added" in seen[0].reason and not seen[0].resumed, seen
