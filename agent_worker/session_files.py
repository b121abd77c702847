"""A session's files: what each is called, and the one reader and writer of each JSON file.

``$SUPERV_HOME/sessions/NAME/`` holds:

- ``spec.json``: what to run (:class:`agent_worker.spec.SessionSpec`), written atomically
  by whoever starts the worker; the worker only reads it.
- ``state.json`` (and ``state.json.prev``): the worker's snapshot
  (:class:`agent_worker.snapshot.Snapshot`), written atomically with the previous copy kept.
- ``output.log`` and ``output.idx``: every byte the agent printed and its time index
  (:mod:`agent_worker.log`).
- ``worker.log``: the worker's own stderr (its structlog events).

A file on disk is input like any other: it may be empty, truncated, of the wrong type,
huge or nested ten thousand deep.  The readers here turn every such file into one
:class:`BadFile` (a ValueError naming the file and what is wrong), so one broken session
costs only itself and says why (``ls`` shows it ``unreadable``, ``doctor`` names it).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from agent_worker import json_input
from agent_worker.atomic import Unreadable, read_json_with_fallback, write_json_atomic

if TYPE_CHECKING:
    from agent_worker.snapshot import Snapshot
    from agent_worker.spec import SessionSpec

SPEC = "spec.json"
STATE = "state.json"
LOG = "output.log"
INDEX = "output.idx"
WORKER_LOG = "worker.log"
# A spec carries the agent's environment (a request is at most 1 MiB); a snapshot is small.
MAX_JSON_BYTES = 4 << 20


class BadFile(ValueError):
    """A session file that exists but cannot be used; the message names it and says why."""


def load_json(path: Path) -> Any:
    """The JSON value in ``path``; BadFile for anything but a readable, sane JSON file.

    FileNotFoundError passes through: a missing file is not a broken one.
    """
    try:
        with open(path, "rb") as f:
            data = _read_bounded(f)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise BadFile(f"{path}: cannot read it: {exc.strerror or exc}") from None
    if len(data) > MAX_JSON_BYTES:
        raise BadFile(f"{path}: over {MAX_JSON_BYTES} bytes")
    try:
        return json_input.loads(data.decode())
    except ValueError as exc:
        raise BadFile(f"{path}: not JSON ({exc})") from None


def _read_bounded(f: BinaryIO) -> bytes:
    """At most MAX_JSON_BYTES + 1 bytes of ``f``, asked for in a buffer its size:
    ``f.read(MAX_JSON_BYTES + 1)`` alone maps and unmaps 4 MiB for a 2 KiB spec (the
    supervisor reads the spec on every activity event, ``ls`` every session's)."""
    size = os.fstat(f.fileno()).st_size
    data = f.read(min(size, MAX_JSON_BYTES) + 1)
    if len(data) > size:  # it grew since, or tells no size: read on, still bounded
        data += f.read(MAX_JSON_BYTES + 1 - len(data))
    return data


def _record(cls: Any, value: Any, path: Path) -> Any:
    try:
        return cls.from_json(value)
    except (TypeError, ValueError) as exc:
        raise BadFile(f"{path}: {exc}") from None


def read_spec(directory: Path) -> SessionSpec:
    """The session's spec; FileNotFoundError if it has none, BadFile if it is broken."""
    from agent_worker.spec import SessionSpec

    path = directory / SPEC
    return _record(SessionSpec, load_json(path), path)


def read_state(directory: Path) -> tuple[Snapshot, str | None]:
    """The newest usable snapshot and a warning if it had to fall back to the previous one.

    Raises :class:`agent_worker.atomic.Unreadable` if neither copy is usable.
    """
    from agent_worker.snapshot import Snapshot

    return read_json_with_fallback(directory / STATE, Snapshot.from_json, load=load_json)


def write_spec(directory: Path, spec: SessionSpec) -> None:
    """Write ``spec.json`` atomically (whoever starts the worker; the worker only reads it)."""
    write_json_atomic(directory / SPEC, spec.to_json())


def write_state(directory: Path, snap: Snapshot) -> None:
    """Write ``state.json`` atomically, keeping the previous copy as ``state.json.prev``."""
    write_json_atomic(directory / STATE, snap.to_json(), keep_previous=True)


def problem(directory: Path) -> str | None:
    """What is wrong with a session's spec or snapshot, in a few words, or None."""
    try:
        read_spec(directory)
    except FileNotFoundError:
        return f"{SPEC}: missing"
    except BadFile as exc:
        return _short(exc, directory)
    if (directory / STATE).exists() or (directory / f"{STATE}.prev").exists():
        try:
            read_state(directory)
        except Unreadable as exc:
            return _short(exc, directory)
    return None


def _short(exc: Exception, directory: Path) -> str:
    return str(exc).replace(f"{directory}/", "")
