"""The supervisor's registry of sessions: what it knows about each, made durable.

The registry (``$SUPERV_HOME/registry.json``) holds the supervisor's own bookkeeping per
session: which worker process runs it (pid plus start time, so a reused pid is never
mistaken for it) and its lifecycle state (:mod:`supervisor.lifecycle` decides it; the
registry stores its fields: state, exit code, restart count, a pending restart's due time,
whether the user stopped it).
The session's spec (``spec.json``) and the worker's snapshot (``state.json``) stay the
sources of truth for what they describe; on start the registry is rebuilt from them for
any session it does not know, so a lost registry loses nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import attrs

from agent_worker import paths
from agent_worker.atomic import Unreadable, read_json_with_fallback, write_json_atomic
from agent_worker.procfs import is_running
from agent_worker.session_files import SPEC
from agent_worker.snapshot import Snapshot, boot_id, process_start_time, read_snapshot
from agent_worker.spec import SessionSpec
from supervisor import lifecycle as lc

REGISTRY_NAME = "registry.json"


_IDENTITY = ("worker_pid", "worker_start", "agent_pid")


@attrs.define
class Entry:
    """One session in the registry: its lifecycle state and the worker that runs it."""

    name: str
    life: lc.State = attrs.Factory(lc.Starting)  # decided by supervisor.lifecycle alone
    worker_pid: int | None = None
    worker_start: int | None = None
    worker_boot: str | None = None  # boot id: pid plus start time repeat across reboots
    agent_pid: int | None = None
    updated_at: float = attrs.Factory(time.time)

    @property
    def state(self) -> str:
        return lc.label(self.life)

    @property
    def running(self) -> bool:
        return lc.is_running(self.life)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, **lc.to_fields(self.life), "worker_pid": self.worker_pid,
                "worker_start": self.worker_start, "worker_boot": self.worker_boot,
                "agent_pid": self.agent_pid, "updated_at": self.updated_at}

    @classmethod
    def from_json(cls, data: Any) -> Entry:
        """An entry as the registry holds it; TypeError or ValueError if it is malformed."""
        if not isinstance(data, dict):
            raise TypeError(f"a registry entry is {type(data).__name__}, not an object")
        name = data.get("name")
        if not isinstance(name, str) or not paths.NAME_RE.fullmatch(name):
            raise ValueError(f"a registry entry names no valid session: {name!r}")
        for key in _IDENTITY:
            if data.get(key) is not None and not _whole(data[key]):
                raise TypeError(f"{name}: {key} is {data[key]!r}, not a number")
        boot, updated = data.get("worker_boot"), data.get("updated_at", 0.0)
        if boot is not None and not isinstance(boot, str):
            raise TypeError(f"{name}: worker_boot is {boot!r}, not text")
        if isinstance(updated, bool) or not isinstance(updated, int | float):
            raise TypeError(f"{name}: updated_at is {updated!r}, not a time")
        return cls(name, lc.from_fields(data), data.get("worker_pid"), data.get("worker_start"),
                   boot, data.get("agent_pid"), float(updated))

    def worker_alive(self) -> bool:
        return worker_alive(self.worker_pid, self.worker_start, self.worker_boot)

    def forget_worker(self) -> None:
        self.worker_pid = self.worker_start = self.worker_boot = self.agent_pid = None

    def take_identity(self, snap: Snapshot) -> None:
        """Which worker runs the session, as the worker last wrote it."""
        self.worker_pid, self.worker_start = snap.worker_pid, snap.worker_start
        self.worker_boot = snap.boot_id or None
        self.agent_pid = snap.agent_pid

    def take_snapshot(self, snap: Snapshot) -> None:
        """Adopt what the worker last wrote about itself, its state too (a session the
        registry does not know: no end of it was ever decided, so none is now)."""
        self.take_identity(snap)
        restarts = self.life.restarts
        if snap.state == "running":
            self.life = lc.Running(snap.started_at, restarts)
        else:
            outcome = lc.Outcome.of_exit(snap.exit_code, snap.exit_signal)
            self.life = lc.Ended(outcome, snap.ended_at or snap.written_at, snap.started_at, restarts)


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def worker_alive(pid: int | None, start: int | None, boot: str | None) -> bool:
    """Does the worker that pid, start time and boot id name still run?"""
    if not pid:
        return False
    if boot and boot != boot_id():
        return False
    if process_start_time(pid) != start:
        return False
    # A killed worker whose parent is gone stays a zombie until init reaps it (some
    # container inits never do): same pid and start time, but nothing runs.
    return is_running(pid)


def state_from_files(snap: Snapshot | None) -> str:
    """A session's state as its own files tell it, without the supervisor: a snapshot
    that says running, of a worker that is gone, is an interrupted session."""
    if snap is None:
        return "unknown"
    if snap.state == "running" and not worker_alive(snap.worker_pid, snap.worker_start,
                                                    snap.boot_id or None):
        return "interrupted"
    return snap.state


def registry_path() -> Path:
    return paths.state_home() / REGISTRY_NAME


def load_entries() -> tuple[dict[str, Entry], list[str]]:
    """Every session on disk with what is known of it, and warnings for what was not readable.

    A malformed registry, or one malformed entry, costs only what the session files cannot
    tell again: each session missing from it is rebuilt from its own files.
    """
    warnings: list[str] = []
    entries: dict[str, Entry] = {}
    try:
        data, warning = read_json_with_fallback(registry_path())
        if warning:
            warnings.append(warning)
        raw_entries = data.get("sessions", []) if isinstance(data, dict) else None
        if not isinstance(raw_entries, list):
            raise Unreadable(f"it holds no list of sessions: {str(data)[:60]}")
        for raw in raw_entries:
            try:
                entry = Entry.from_json(raw)
            except (TypeError, ValueError) as exc:
                warnings.append(f"registry entry skipped, rebuilt from its session files: {exc}")
                continue
            entries[entry.name] = entry
    except Unreadable as exc:
        if registry_path().exists():
            warnings.append(f"registry unreadable, rebuilt from session files: {exc}")
    sessions = paths.sessions_dir()
    names = sorted(p.name for p in sessions.iterdir()) if sessions.is_dir() else []
    for name in names:
        directory = sessions / name
        if not paths.NAME_RE.fullmatch(name) or not (directory / SPEC).exists():
            continue
        known = name in entries
        entry = entries.setdefault(name, Entry(name))
        try:
            snap, warning = read_snapshot(directory)
        except (Unreadable, TypeError, ValueError, AttributeError) as exc:
            # Whether its worker lives is for the supervisor to find out (it may ask the
            # session's socket); here we only report what the files say.
            warnings.append(f"{name}: no readable snapshot ({exc})")
            continue
        if warning:
            warnings.append(warning)
        if not snap.seq:
            continue
        if not known:
            entry.take_snapshot(snap)
        elif entry.running and entry.worker_pid in (None, snap.worker_pid):
            # How its run ended, if it did, is the supervisor's to decide (Recovered).
            entry.take_identity(snap)
    for name in list(entries):
        if name not in names:
            del entries[name]  # its files are gone: forgotten by hand or by rm
    return entries, warnings


def save_entries(entries: dict[str, Entry]) -> None:
    data = {"format": 1, "sessions": [e.to_json() for e in entries.values()]}
    write_json_atomic(registry_path(), data, keep_previous=True)


def load_spec(name: str) -> SessionSpec:
    return SessionSpec.load(paths.session_dir(name))
