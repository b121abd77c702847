"""The supervisor's registry of sessions: what it knows about each, made durable.

The registry (``$SUPERV_HOME/registry.json``) holds the supervisor's own bookkeeping per
session: which worker process runs it (pid plus start time, so a reused pid is never
mistaken for it), the last known state, restart counts, whether the user stopped it.
The session's spec (``spec.json``) and the worker's snapshot (``state.json``) stay the
sources of truth for what they describe; on start the registry is rebuilt from them for
any session it does not know, so a lost registry loses nothing.
"""

from __future__ import annotations

import time
from pathlib import Path

import attrs

from agent_worker import paths
from agent_worker.atomic import Unreadable, read_json_with_fallback, write_json_atomic
from agent_worker.records import JsonRecord
from agent_worker.snapshot import Snapshot, boot_id, process_start_time, read_snapshot
from agent_worker.spec import SessionSpec

REGISTRY_NAME = "registry.json"


@attrs.define
class Entry(JsonRecord):
    name: str
    state: str = "starting"  # running, exited N, killed SIG, interrupted, failed
    exit_code: int | None = None
    exit_signal: int | None = None
    worker_pid: int | None = None
    worker_start: int | None = None
    worker_boot: str | None = None  # boot id: pid plus start time repeat across reboots
    agent_pid: int | None = None
    started_at: float | None = None
    ended_at: float | None = None
    restarts: int = 0
    user_stopped: bool = False
    restart_pending: bool = False  # waiting out a restart backoff (survives our restart)
    updated_at: float = attrs.Factory(time.time)

    @property
    def running(self) -> bool:
        return self.state in ("running", "starting")

    def worker_alive(self) -> bool:
        if not self.worker_pid:
            return False
        if self.worker_boot and self.worker_boot != boot_id():
            return False
        if process_start_time(self.worker_pid) != self.worker_start:
            return False
        # A killed worker whose parent is gone stays a zombie until init reaps it (some
        # container inits never do): same pid and start time, but nothing runs.
        return not _zombie(self.worker_pid)


    def take_snapshot(self, snap: Snapshot) -> None:
        """Adopt what the worker last wrote about itself."""
        self.worker_pid, self.worker_start = snap.worker_pid, snap.worker_start
        self.worker_boot = snap.boot_id or None
        self.agent_pid = snap.agent_pid
        self.started_at = snap.started_at
        self.state, self.exit_code, self.exit_signal = snap.state, snap.exit_code, snap.exit_signal
        self.ended_at = snap.ended_at


def _zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return True
    return stat[stat.rindex(b")") + 2 :].split()[0] in (b"Z", b"X")


def registry_path() -> Path:
    return paths.state_home() / REGISTRY_NAME


def load_entries() -> tuple[dict[str, Entry], list[str]]:
    """Every session on disk with what is known of it, and warnings for what was not readable."""
    warnings: list[str] = []
    entries: dict[str, Entry] = {}
    try:
        data, warning = read_json_with_fallback(registry_path())
        if warning:
            warnings.append(warning)
        for raw in data.get("sessions", []):
            entry = Entry.from_json(raw)
            entries[entry.name] = entry
    except Unreadable as exc:
        if registry_path().exists():
            warnings.append(f"registry unreadable, rebuilt from session files: {exc}")
    sessions = paths.sessions_dir()
    names = sorted(p.name for p in sessions.iterdir()) if sessions.is_dir() else []
    for name in names:
        directory = sessions / name
        if not paths.NAME_RE.fullmatch(name) or not (directory / "spec.json").exists():
            continue
        entry = entries.setdefault(name, Entry(name))
        try:
            snap, warning = read_snapshot(directory)
        except (Unreadable, TypeError) as exc:
            # Whether its worker lives is for the supervisor to find out (it may ask the
            # session's socket); here we only report what the files say.
            warnings.append(f"{name}: no readable snapshot ({exc})")
            continue
        if warning:
            warnings.append(warning)
        if snap.seq and (snap.written_at >= entry.updated_at or entry.running):
            entry.take_snapshot(snap)
    for name in list(entries):
        if name not in names:
            del entries[name]  # its files are gone: forgotten by hand or by rm
    return entries, warnings


def save_entries(entries: dict[str, Entry]) -> None:
    data = {"format": 1, "sessions": [e.to_json() for e in entries.values()]}
    write_json_atomic(registry_path(), data, keep_previous=True)


def load_spec(name: str) -> SessionSpec:
    return SessionSpec.load(paths.session_dir(name))
