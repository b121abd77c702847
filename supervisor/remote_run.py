"""Every command given ``HOST:NAME`` (or ``ls HOST:``) but attach and events.

``logs``, ``peek``, ``send``, ``stop``, ``kill``, ``resume``, ``approve`` and ``deny`` of
``[USER@]HOST:NAME`` run the box's own ``superv`` over SSH (reached as :mod:`supervisor.ssh_link` says)
and pass its output and exit status through, byte for byte (but for the commands its
error lines name, given as run from here: ``'superv ls box:'``): the box's session files
are read where they are.  No reconnect here: these are short commands, and ``logs -f`` can
simply be run again (it reads the durable log from the start, or ``--since``).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Callable

import asyncssh

from agent_worker import settings
from supervisor.host_names import split_host
from supervisor.remote_hints import bytes_from_here
from supervisor.ssh_link import (
    REMOTE_MISSING_STATUS,
    SshConfigError,
    SshLink,
    remote_superv,
    superv_missing,
)
from supervisor.terminal import write_all

CONNECT_TIMEOUT = 20.0
HELD_STDERR = 65536  # bytes of the box's stderr held until its exit status is known


def run_on_host(target: str, words: list[str], after: list[str] | None = None) -> int:
    """Run ``superv WORDS NAME AFTER`` on the box of ``target`` (``[USER@]HOST:NAME``).

    NAME is checked here, so a hostile name never reaches the box; every word is passed
    as one argument (quoted by :func:`~supervisor.ssh_link.remote_superv`)."""
    from supervisor.sessions import checked_name

    where, _, name = target.rpartition(":")
    return run_remote(where, [*words, checked_name(name), *(after or [])], name=name)


def run_remote(where: str, args: list[str], forward_stdin: bool = False,
               name: str | None = None) -> int:
    """Run ``superv ARGS`` on ``[USER@]HOST``; its exit status, or 1 with one line.
    ``forward_stdin``: our stdin is copied to it (else it reads an empty one).  The
    commands the box's errors name are given as run from here, for session ``name``
    (:mod:`supervisor.remote_hints`)."""
    try:
        user, host = split_host(where)
    except ValueError as exc:
        sys.stderr.write(f"superv: {exc}\n")
        return 2
    logging.getLogger("asyncssh").setLevel(logging.CRITICAL)  # we report failures ourselves
    link = SshLink(host, user)
    remote_command = settings.current().remote_command
    command = remote_superv(args, remote_command)
    errors = _Held(lambda data: bytes_from_here(data, where, name))
    try:
        return asyncio.run(_run(link, command, errors, forward_stdin,
                                missing=superv_missing(link.shown, remote_command)))
    except KeyboardInterrupt:
        return 130
    except SshConfigError as exc:
        sys.stderr.write(f"superv: {exc}\n")
        return 1
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        sys.stderr.write(f"superv: {link.unreachable(exc)}\n")
        return 1


async def _run(link: SshLink, command: bytes, errors: _Held, forward_stdin: bool,
               missing: str) -> int:
    """Run ``command``; its stdout goes out as it comes, its stderr to ``errors``;
    ``missing`` is the line for a box without superv."""
    options = await link.options()
    async with asyncssh.connect(link.host, options=options, connect_timeout=CONNECT_TIMEOUT) as conn:
        proc = await conn.create_process(command, encoding=None)
        feeding = asyncio.ensure_future(_feed(proc.stdin)) if forward_stdin else None
        if feeding is None:
            proc.stdin.write_eof()
        try:
            await asyncio.gather(_copy(proc.stdout, lambda data: write_all(1, data)),
                                 _copy(proc.stderr, errors.write))
            await proc.wait_closed()
        except BrokenPipeError:
            return 0  # our reader is gone (| head): as a local command, not "cannot reach"
        finally:
            if feeding is not None:
                feeding.cancel()
    status = proc.exit_status
    if status != REMOTE_MISSING_STATUS:
        errors.flush()
    else:  # the box's shell said "superv: command not found": ours says what to do
        sys.stderr.write(f"superv: {missing}\n")
        return 1
    return status if status is not None else 1


class _Held:
    """The box's stderr, held until its exit status tells whether it is worth showing
    (up to HELD_STDERR bytes, shown through ``hints``; past that it goes out as it comes)."""

    def __init__(self, hints: Callable[[bytes], bytes]) -> None:
        self.hints = hints
        self.data = b""
        self.passing = False

    def write(self, data: bytes) -> None:
        if not self.passing and len(self.data) + len(data) <= HELD_STDERR:
            self.data += data
            return
        self.passing = True
        write_all(2, self.data + data)
        self.data = b""

    def flush(self) -> None:
        write_all(2, self.hints(self.data))
        self.data = b""


async def _copy(reader: asyncssh.SSHReader[bytes], write: Callable[[bytes], None]) -> None:
    while data := await reader.read(65536):
        write(data)


async def _feed(writer: asyncssh.SSHWriter[bytes]) -> None:
    """Our stdin to the remote command, then its end."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while (data := await reader.read(65536)) and not writer.is_closing():
        writer.write(data)  # (closed by the box: its exit status is what matters)
    writer.write_eof()
