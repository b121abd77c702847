"""The fleet: every configured host's sessions at once (``superv ls --all``).

Hosts are the config file's ``hosts`` list (:mod:`supervisor.config`), names from
``~/.ssh/config``.  Each is asked for its ``superv ls --json`` over its own SSH
connection (:mod:`supervisor.ssh_link`), all at the same time, each within ``timeout``
seconds: an unreachable or silent host is reported as such and costs the others nothing.
This box's own sessions come first, read from its supervisor as ``ls`` does.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import asyncssh
import attrs

from agent_worker import json_input, settings
from supervisor.host_names import split_host
from supervisor.ssh_link import (
    REMOTE_MISSING_STATUS,
    SshConfigError,
    SshLink,
    remote_superv,
    superv_missing,
)

HOST_TIMEOUT = 5.0  # seconds per host, connection and answer together


@attrs.frozen
class HostSessions:
    """One host's answer: its sessions, or why there are none to show."""

    host: str
    sessions: list[dict[str, Any]] = attrs.Factory(list)
    problem: str | None = None  # "unreachable: ...", "timed out after 5 s", ...


def gather(hosts: tuple[str, ...], timeout: float = HOST_TIMEOUT) -> list[HostSessions]:
    """Every host's sessions, asked concurrently; in the order of ``hosts``."""
    if not hosts:
        return []
    logging.getLogger("asyncssh").setLevel(logging.CRITICAL)  # we report failures ourselves
    return asyncio.run(_gather(hosts, timeout))


async def _gather(hosts: tuple[str, ...], timeout: float) -> list[HostSessions]:
    return list(await asyncio.gather(*(_one(host, timeout) for host in hosts)))


async def _one(host: str, timeout: float) -> HostSessions:
    try:
        user, name = split_host(host)
    except ValueError as exc:
        return HostSessions(host, problem=str(exc))
    link = SshLink(name, user)
    try:
        async with asyncio.timeout(timeout):
            return HostSessions(host, await _ls(link))
    except TimeoutError:
        return HostSessions(host, problem=f"no answer in {timeout:g} s")
    except SshConfigError as exc:
        return HostSessions(host, problem=str(exc))
    except (OSError, asyncssh.Error) as exc:
        return HostSessions(host, problem=link.unreachable(exc))
    except ValueError as exc:
        return HostSessions(host, problem=str(exc))


async def _ls(link: SshLink) -> list[dict[str, Any]]:
    remote_command = settings.current().remote_command
    command = remote_superv(["ls", "--json"], remote_command)
    options = await link.options()
    async with asyncssh.connect(link.host, options=options) as conn:
        result = await conn.run(command, stdin=asyncssh.DEVNULL)
    if result.exit_status == REMOTE_MISSING_STATUS:  # no superv there, or not where named
        raise ValueError(superv_missing(link.shown, remote_command))
    if result.exit_status != 0:
        error = str(result.stderr or "").strip().splitlines()
        raise ValueError(error[-1] if error else f"superv ls exited {result.exit_status}")
    try:
        sessions = json_input.loads(str(result.stdout))
    except ValueError:
        raise ValueError("its superv ls --json printed no JSON") from None
    if not isinstance(sessions, list):
        raise ValueError("its superv ls --json printed no list")
    return sessions
