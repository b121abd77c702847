"""The user's configuration file, ``$XDG_CONFIG_HOME/superv/config.toml``: read and checked here only.

Everything else (the notifier, ``superv notify test``, ``superv doctor``, later the fleet)
asks :func:`load` for a :class:`Config` and never reads the file itself.  The file is
validated once, whole: the first problem is one line naming the key
(``config.toml: notify.webhook: not an http(s) URL``), and nothing of a bad file is used.

    hosts = ["box", "gpu"]            # ~/.ssh/config names, for the fleet

    [notify]
    on = ["needs_approval", "needs_input", "idle", "ended", "stalled", "error"]
    webhook = "https://example.com/hook"    # POST of the event JSON
    ntfy = "https://ntfy.sh/my-topic"       # ntfy's plain-text POST
    command = ["notify-send", "superv"]     # the event JSON on stdin, SUPERV_* variables
    command_timeout = 10                    # seconds, then it is killed
    bell = true                             # ring attached terminals (BEL, OSC 9, OSC 777)
    host = "box"                            # the name notifications give this box
    quiet_turn = 10                         # quiet-time sessions: seconds of work, then of quiet

    [notify.agent.claude]                   # per agent kind ...
    on = ["needs_approval", "error"]
    [notify.session.fix-tests]              # ... and per session (wins): which changes
    on = []

Standard library only (``tomllib``): ``doctor`` and ``notify test`` load it on a short path.
"""

from __future__ import annotations

import os
import shutil
import socket
import tomllib
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from agent_worker.activity.tracker import STATES
from supervisor.host_names import is_host_name, split_host

# What `on` may name: an activity (idle means a turn finished: idle after working), or one
# of the changes that are not activities.
EVENTS = ("stalled", "error")
TRIGGERS = tuple(s for s in STATES if s not in ("starting", "unknown")) + EVENTS
DEFAULT_ON = ("needs_approval", "needs_input", "idle", "ended", "stalled", "error")
DEFAULT_COMMAND_TIMEOUT = 10.0
# A session known only by quiet time (generic) has finished a turn when it worked this
# long and then stayed quiet this long (supervisor/notify/message.QuietTurns).
DEFAULT_QUIET_TURN = 10.0


class ConfigError(Exception):
    """A config file that cannot be used; the message is one line naming the file and key."""


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "superv" / "config.toml"


@attrs.frozen
class Notify:
    on: tuple[str, ...] = DEFAULT_ON
    webhook: str | None = None
    ntfy: str | None = None
    command: tuple[str, ...] | None = None
    command_timeout: float = DEFAULT_COMMAND_TIMEOUT
    bell: bool = False
    quiet_turn: float = DEFAULT_QUIET_TURN
    host: str = attrs.field(factory=lambda: socket.gethostname().split(".")[0] or "localhost")
    by_agent: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)
    by_session: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)

    def wants(self, trigger: str, session: str, agent: str | None) -> bool:
        """Whether a change of this kind in this session is notified (session, then agent kind)."""
        if session in self.by_session:
            return trigger in self.by_session[session]
        if agent is not None and agent in self.by_agent:
            return trigger in self.by_agent[agent]
        return trigger in self.on

    def routes(self) -> list[str]:
        """The configured delivery routes, by name."""
        names = [n for n in ("webhook", "ntfy", "command") if getattr(self, n)]
        return names + (["bell"] if self.bell else [])


@attrs.frozen
class Config:
    path: Path
    notify: Notify = attrs.field(factory=Notify)
    hosts: tuple[str, ...] = ()
    exists: bool = False


def load(path: Path | None = None) -> Config:
    """The configuration, or the defaults when there is no file.  Raises ConfigError."""
    path = path or config_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return Config(path)
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse(data, path)


def parse(data: Mapping[str, Any], path: Path) -> Config:
    """Check a decoded config file whole; the first problem raises ConfigError."""
    where = path.name

    def fail(key: str, problem: str) -> ConfigError:
        return ConfigError(f"{where}: {key}: {problem} (in {path})")

    _known(data, ("hosts", "notify"), "", fail)
    hosts = _hosts(data.get("hosts", []), fail)
    table = data.get("notify", {})
    if not isinstance(table, dict):
        raise fail("notify", "must be a table ([notify])")
    _known(table, ("on", "webhook", "ntfy", "command", "command_timeout", "quiet_turn", "bell",
                   "host", "agent", "session"), "notify.", fail)
    fields: dict[str, Any] = {}
    if "on" in table:
        fields["on"] = _triggers(table["on"], "notify.on", fail)
    for key in ("webhook", "ntfy"):
        if key in table:
            fields[key] = _url(table[key], f"notify.{key}", fail)
    if "command" in table:
        command = table["command"]
        if (not isinstance(command, list) or not command
                or not all(isinstance(w, str) and w for w in command)):
            raise fail("notify.command", "must be a non-empty list of strings (an argv, no shell)")
        if any("\0" in w for w in command):
            # An argv cannot carry NUL: it would fail at each notification, and in doctor.
            raise fail("notify.command", "has a NUL character (\\u0000): remove it")
        fields["command"] = tuple(command)
    for key in ("command_timeout", "quiet_turn"):
        if key in table:
            seconds = table[key]
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) \
                    or not 0 < seconds <= 3600:
                raise fail(f"notify.{key}", "must be a number of seconds in (0, 3600]")
            fields[key] = float(seconds)
    if "bell" in table:
        if not isinstance(table["bell"], bool):
            raise fail("notify.bell", "must be true or false")
        fields["bell"] = table["bell"]
    if "host" in table:
        if not isinstance(table["host"], str) or not is_host_name(table["host"]):
            raise fail("notify.host", "must be a host name (letters, digits, '.', '_', '-')")
        fields["host"] = table["host"]
    for key, field in (("agent", "by_agent"), ("session", "by_session")):
        overrides = table.get(key, {})
        if not isinstance(overrides, dict):
            raise fail(f"notify.{key}", f"must be a table of tables ([notify.{key}.NAME])")
        parsed = {}
        for name, override in overrides.items():
            prefix = f"notify.{key}.{name}"
            if not isinstance(override, dict):
                raise fail(prefix, "must be a table")
            _known(override, ("on",), prefix + ".", fail)
            parsed[name] = _triggers(override.get("on", []), prefix + ".on", fail)
        fields[field] = parsed
    return Config(path, Notify(**fields), hosts, exists=True)


def _known(table: Mapping[str, Any], keys: tuple[str, ...], prefix: str, fail: Any) -> None:
    for key in table:
        if key not in keys:
            raise fail(prefix + key, f"unknown key (known: {', '.join(keys)})")


def _hosts(value: Any, fail: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise fail("hosts", "must be a list of host names from ~/.ssh/config")
    for host in value:
        try:
            split_host(host if isinstance(host, str) else "")
        except ValueError:
            raise fail("hosts", f"{host!r} is not a host name ([USER@]HOST)") from None
    if len(set(value)) != len(value):
        raise fail("hosts", "names a host twice")
    return tuple(value)


def _triggers(value: Any, key: str, fail: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise fail(key, f"must be a list of: {', '.join(TRIGGERS)}")
    for v in value:
        if v not in TRIGGERS:
            raise fail(key, f"{v!r} is not one of: {', '.join(TRIGGERS)}")
    return tuple(value)


def _url(value: Any, key: str, fail: Any) -> str:
    if not isinstance(value, str):
        raise fail(key, "must be an http(s) URL string")
    # urlsplit silently drops tabs and newlines, and http.client sends only ASCII: a URL
    # with anything else would fail at each notification instead of here.
    if not (value.isascii() and value.isprintable()) or " " in value:
        raise fail(key, f"{value!r} is not an http(s) URL: only ASCII without spaces or "
                        "control characters (percent-encode the rest)")
    try:
        parts = urllib.parse.urlsplit(value)
    except ValueError as exc:  # a bad [IPv6] host
        raise fail(key, f"{value!r} is not an http(s) URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise fail(key, f"{value!r} is not an http(s) URL")
    try:
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise fail(key, f"{value!r} has a bad port") from None
    return value


def command_problem(command: tuple[str, ...]) -> str | None:
    """Why ``notify.command`` cannot run here, or None (for ``doctor``)."""
    program = command[0]
    if "/" in program:
        if not os.access(program, os.X_OK) or not os.path.isfile(program):
            return f"{program} is not an executable file"
        return None
    if shutil.which(program) is None:
        return f"{program} is not on PATH"
    return None
