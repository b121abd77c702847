"""Every ``SUPERV_*`` environment variable: its type, default and range, in one table.

Each entry point (the ``superv`` CLI, ``superv daemon``, ``python -m agent_worker``) calls
:func:`check` first, so a bad value is one line naming the variable and what it accepts,
before anything starts, instead of a traceback at import or a crash of a running daemon
hours later.  Everything else reads values through :func:`current` (or the helpers
below), which parses the environment once and again only when it changes (tests change
it in-process).

Standard library only: the CLI's short commands import this.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

DEFAULT_DETACH_KEY = "^\\"


class SettingError(ValueError):
    """A variable set to something superv cannot use; the message names it and what it accepts."""


class Setting:
    """One variable: how to read it and what it accepts (``accepts`` completes "use ...")."""

    def __init__(self, name: str, default: Any, parse: Callable[[str], Any], accepts: str,
                 meaning: str) -> None:
        self.name = name
        self.default = default
        self.parse = parse
        self.accepts = accepts
        self.meaning = meaning

    def read(self, environ: Mapping[str, str]) -> Any:
        raw = environ.get(self.name)
        if raw is None or raw == "":
            return self.default
        try:
            return self.parse(raw)
        except (ValueError, OverflowError):
            shown = raw if len(raw) <= 40 else raw[:40] + "..."
            raise SettingError(f"{self.name}={shown!r} is not usable: use {self.accepts}") from None


def _number(low: float, high: float, low_open: bool = False) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
            raise ValueError(raw)
        return value

    return parse


def _whole(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw.strip())
        if not low <= value <= high:
            raise ValueError(raw)
        return value

    return parse


def _choice(*values: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in values:
            raise ValueError(raw)
        return raw

    return parse


def _absolute_path(raw: str) -> str:
    # A relative path would name different places for the CLI and the daemon (cwd /).
    if not os.path.isabs(raw) or "\0" in raw:
        raise ValueError(raw)
    return raw


def _text(raw: str) -> str:
    if "\0" in raw:
        raise ValueError(raw)
    return raw


def parse_key(spec: str) -> bytes:
    """``^\\`` / ``^A`` / ``ctrl-a`` style key names to the byte the terminal sends."""
    text = spec.strip()
    lowered = text.lower()
    if lowered.startswith("ctrl-") and len(text) == 6:
        text = "^" + text[5]
    if len(text) == 2 and text[0] == "^":
        char = text[1].upper()
        if char == "?":
            return b"\x7f"
        code = ord(char) ^ 0x40
        if 0 <= code < 0x20:
            return bytes([code])
    # One character is its UTF-8 bytes; argv bytes that are not UTF-8 arrive as a surrogate
    # escape, which no terminal sends as one key.
    if len(text) == 1 and not 0xD800 <= ord(text) <= 0xDFFF:
        return text.encode()
    raise ValueError(f"cannot read detach key {spec!r}: use a form like '^\\', '^A' or 'ctrl-a', "
                     "or one character")


def _detach_key(raw: str) -> str:
    parse_key(raw)
    return raw


DAY = 86400.0
SETTINGS: tuple[Setting, ...] = (
    Setting("SUPERV_HOME", None, _absolute_path, "an absolute path",
            "state: sessions, registry, supervisor.log (default $XDG_STATE_HOME/superv)"),
    Setting("SUPERV_RUNTIME_DIR", None, _absolute_path, "an absolute path",
            "sockets (default $XDG_RUNTIME_DIR/superv, else /tmp/superv-$UID)"),
    Setting("SUPERV_SNAPSHOT_INTERVAL", 30.0, _number(0.0, DAY, low_open=True),
            "a number of seconds more than 0 and at most 86400", "seconds between snapshots"),
    Setting("SUPERV_LOG_FSYNC", "snapshot", _choice("snapshot", "always", "never"),
            "one of snapshot, always, never", "when the output log is fsynced"),
    Setting("SUPERV_DETACH_KEY", DEFAULT_DETACH_KEY, _detach_key,
            "a key like '^\\', '^A' or 'ctrl-a', or one character", "the detach key of attach"),
    Setting("SUPERV_STALL_AFTER", 600.0, _number(0.0, 30 * DAY, low_open=True),
            "a number of seconds more than 0 and at most 2592000",
            "seconds without output before a running session is reported stalled"),
    Setting("SUPERV_APPROVAL_WAIT", 600.0, _number(0.0, 3600.0, low_open=True),
            "a number of seconds more than 0 and at most 3600",
            "seconds a Claude Code approval prompt waits for superv approve/deny"),
    Setting("SUPERV_STOP_GRACE", 10.0, _number(0.0, DAY),
            "a number of seconds from 0 to 86400", "seconds from SIGTERM to SIGKILL of an agent"),
    Setting("SUPERV_RESTART_LIMIT", 5, _whole(0, 1000), "a whole number from 0 to 1000",
            "quick restarts allowed in a row"),
    Setting("SUPERV_RESTART_BACKOFF", 0.5, _number(0.0, 30.0),
            "a number of seconds from 0 to 30", "the first restart delay (doubling to 30 s)"),
    Setting("SUPERV_REMOTE_COMMAND", None, _text, "a command line",
            "how to run superv on the remote box for HOST:NAME"),
    Setting("SUPERV_SSH_CONFIG", None, _text, "a file name", "an ssh config instead of ~/.ssh/config"),
    Setting("SUPERV_KNOWN_HOSTS", None, _text, "a file name",
            "a known_hosts file instead of ~/.ssh/known_hosts"),
    Setting("SUPERV_HOT_PATH", "native", _choice("native", "python"), "native or python",
            "the worker's hot path: its native lane where it was built, or Python only"),
    Setting("SUPERV_DOCTOR_MIN_FREE_MB", 1024, _whole(0, 10**9),
            "a whole number of MB from 0 to 1000000000", "free space below which doctor warns"),
)
BY_NAME = {s.name: s for s in SETTINGS}


class Settings:
    """The parsed values, one attribute per variable (``SUPERV_STALL_AFTER`` -> ``stall_after``)."""

    home: str | None
    runtime_dir: str | None
    snapshot_interval: float
    log_fsync: str
    detach_key: str
    stall_after: float
    approval_wait: float
    stop_grace: float
    restart_limit: int
    restart_backoff: float
    remote_command: str | None
    ssh_config: str | None
    known_hosts: str | None
    hot_path: str
    doctor_min_free_mb: int

    def __init__(self, values: Mapping[str, Any]) -> None:
        for name, value in values.items():
            setattr(self, attribute(name), value)


def attribute(name: str) -> str:
    return name.removeprefix("SUPERV_").lower()


def load(environ: Mapping[str, str] | None = None, names: Iterable[str] | None = None) -> Settings:
    """Parse every variable (or ``names``); raise SettingError naming the first bad one."""
    env = os.environ if environ is None else environ
    chosen = SETTINGS if names is None else [BY_NAME[n] for n in names]
    return Settings({s.name: s.read(env) for s in chosen})


_cache: tuple[tuple[str | None, ...], Settings] | None = None


def current() -> Settings:
    """This process's settings, parsed once (and again only if the environment changed)."""
    global _cache
    key = tuple(os.environ.get(s.name) for s in SETTINGS)
    if _cache is None or _cache[0] != key:
        _cache = (key, load())
    return _cache[1]


def check(environ: Mapping[str, str] | None = None) -> None:
    """For entry points: raise SettingError if any variable is unusable."""
    load(environ)
