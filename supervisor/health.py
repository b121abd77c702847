"""What ``superv doctor`` checks: everything on this box that would kill or lose sessions.

Each check is a function returning :class:`Check` values (plain data: name, ok, detail,
fix), so the command only prints them and tests call the checks with their own inputs
(a logind config directory, a free-space threshold) without touching the real box.
Standard library only at import time: doctor must work when everything else is broken.
"""

from __future__ import annotations

import configparser
import os
import platform
import socket
import stat
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from agent_worker import paths, settings

DEFAULT_MIN_FREE_MB = 1024
MIN_FREE_INODES = 1000
LOGIND_DIRS = (Path("/etc/systemd"), Path("/run/systemd"), Path("/usr/lib/systemd"))


@attrs.frozen
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


def systemd_booted() -> bool:
    # sd_booted(3): this directory exists only when systemd is the init system.
    return Path("/run/systemd/system").is_dir()


# ---- logout ----------------------------------------------------------------------------


def check_lingering(linger: Any = None) -> Check:
    """``linger``: a :class:`supervisor.service_unit.Linger` already asked for, else ask."""
    from supervisor import service_unit as su

    linger = linger if linger is not None else su.lingering()
    if linger.enabled:
        return Check("lingering", True, linger.detail)
    if linger.enabled is False:
        return Check("lingering", False, linger.detail, f"run '{su.linger_fix()}'")
    if not systemd_booted():
        # No systemd as init means no logind and no user manager: nothing stops a user's
        # processes at logout, and SIGHUP is already ignored by every worker.
        return Check("lingering", True,
                     f"{linger.detail.rstrip('.')}; this box does not run systemd, "
                     "so logout kills nothing")
    return Check("lingering", False, linger.detail,
                 f"run 'loginctl show-user {su.user_name()}' to see why; "
                 f"'{su.linger_fix()}' turns lingering on")


def logind_setting(key: str, roots: tuple[Path, ...] = LOGIND_DIRS) -> tuple[str | None, str]:
    """The effective ``[Login] key`` and the file it came from (as logind reads its config).

    logind reads ``logind.conf`` then every ``logind.conf.d/*.conf`` in the search path,
    sorted by file name, a later file overriding an earlier one; for one file name the
    first directory (/etc over /run over /usr/lib) wins.
    """
    value: str | None = None
    source = ""
    files: list[Path] = []
    main = next((r / "logind.conf" for r in roots if (r / "logind.conf").is_file()), None)
    if main is not None:
        files.append(main)
    dropins: dict[str, Path] = {}
    for root in reversed(roots):  # earlier roots override later ones for the same name
        directory = root / "logind.conf.d"
        if directory.is_dir():
            for path in directory.glob("*.conf"):
                dropins[path.name] = path
    files += [dropins[name] for name in sorted(dropins)]
    for path in files:
        parser = configparser.ConfigParser(strict=False, interpolation=None,
                                           inline_comment_prefixes=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
        try:
            parser.read_string("[__top__]\n" + path.read_text(errors="replace"), str(path))
        except (OSError, configparser.Error):
            continue
        if parser.has_option("Login", key):
            value, source = parser.get("Login", key).strip(), str(path)
    return value, source


def _truthy(value: str) -> bool:
    return value.strip().lower() in ("1", "yes", "true", "on", "y", "t")


def _in_service_cgroup(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        cgroup = Path(f"/proc/{pid}/cgroup").read_text()
    except OSError:
        return False
    return any(line.rstrip().endswith("/superv.service") for line in cgroup.splitlines())


def check_kill_user_processes(
    roots: tuple[Path, ...] = LOGIND_DIRS, supervisor_pid: int | None = None,
    linger: bool | None = None,
) -> Check:
    from supervisor import service_unit as su

    value, source = logind_setting("KillUserProcesses", roots)
    if value is None:
        return Check("kill-user-processes", True, "KillUserProcesses is not set (logind's default: no)")
    if not _truthy(value):
        return Check("kill-user-processes", True, f"KillUserProcesses={value} in {source}")
    user = su.user_name()
    excluded, _ = logind_setting("KillExcludeUsers", roots)
    if excluded and user in excluded.split():
        return Check("kill-user-processes", True,
                     f"KillUserProcesses=yes in {source}, but {user} is in KillExcludeUsers")
    if _in_service_cgroup(supervisor_pid) and linger:
        return Check("kill-user-processes", True,
                     f"KillUserProcesses=yes in {source}; the supervisor runs under "
                     "superv.service with lingering on, so its sessions survive logout")
    return Check(
        "kill-user-processes", False,
        f"KillUserProcesses=yes in {source}: logind kills every process of your login "
        "session at logout, sessions started outside the systemd service included",
        f"run 'superv service install' and '{su.linger_fix()}', "
        "or set KillUserProcesses=no in /etc/systemd/logind.conf",
    )


# ---- files -----------------------------------------------------------------------------


def private_dir_problem(path: Path) -> str | None:
    """Why ``path`` is not a private directory of ours, or None if it is (or does not exist)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"{path} cannot be read: {exc.strerror}"
    if not stat.S_ISDIR(st.st_mode):
        return f"{path} is not a directory"
    if st.st_uid != os.getuid():
        return f"{path} belongs to uid {st.st_uid}, not to you"
    mode = stat.S_IMODE(st.st_mode)
    if mode != 0o700:
        return f"{path} has mode {mode:04o}, not 0700: other users can reach what is in it"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable"
    return None


def _dir_fix(path: Path, problem: str) -> str:
    if "belongs to uid" in problem or "is not a directory" in problem:
        return f"move {path} out of the way (someone else may be intercepting it)"
    return f"run 'chmod 700 {path}'"


def check_runtime_dir() -> Check:
    directory = paths.runtime_dir()
    for path in (directory, directory / "sessions"):
        problem = private_dir_problem(path)
        if problem:
            return Check("runtime-dir", False, problem, _dir_fix(path, problem))
    if not directory.exists():
        return Check("runtime-dir", True, f"{directory} does not exist yet (created 0700 on start)")
    return Check("runtime-dir", True, f"{directory} is private (0700, yours)")


def check_state_dir() -> Check:
    home = paths.state_home()
    for path in (home, paths.sessions_dir()):
        problem = private_dir_problem(path)
        if problem:
            return Check("state-dir", False, problem, _dir_fix(path, problem))
    if not home.exists():
        return Check("state-dir", True, f"{home} does not exist yet (created 0700 on start)")
    # Session directories hold the agents' whole output: each must be private too.
    sessions = paths.sessions_dir()
    names = sorted(p.name for p in sessions.iterdir()) if sessions.is_dir() else []
    for name in names:
        problem = private_dir_problem(sessions / name)
        if problem:
            return Check("state-dir", False, problem, _dir_fix(sessions / name, problem))
    return Check("state-dir", True, f"{home} and its {len(names)} session directories are private")


def min_free_mb() -> int:
    return settings.current().doctor_min_free_mb


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_disk(threshold_mb: int | None = None) -> Check:
    threshold = min_free_mb() if threshold_mb is None else threshold_mb
    where = _existing(paths.state_home())
    try:
        st = os.statvfs(where)
    except OSError as exc:
        return Check("disk", False, f"cannot measure free space on {where}: {exc.strerror}",
                     "check the file system")
    free_mb = st.f_bavail * st.f_frsize // (1024 * 1024)
    if free_mb < threshold:
        return Check("disk", False,
                     f"{free_mb} MB free under {where} (less than {threshold} MB): a full disk "
                     "stops logs and snapshots",
                     "free some space ('superv prune' forgets old sessions and their logs)")
    if st.f_files and st.f_favail < MIN_FREE_INODES:
        return Check("disk", False, f"only {st.f_favail} inodes free under {where}",
                     "remove files on that file system")
    return Check("disk", True, f"{free_mb} MB free under {where}")


# ---- processes -------------------------------------------------------------------------


def ping_supervisor() -> tuple[dict[str, Any] | None, str]:
    from supervisor import control
    from supervisor.errors import CliError

    try:
        return control.request("ping", autostart=False), ""
    except CliError as exc:
        return None, str(exc)


def check_supervisor(ping: dict[str, Any] | None, error: str) -> Check:
    from supervisor.cli import version

    if ping is None:
        stale = paths.supervisor_socket()
        extra = f" (stale socket {stale} left)" if stale.exists() else ""
        return Check("supervisor", False, f"not running for {paths.state_home()}{extra}: {error}",
                     "run 'superv ls' (starts it) or 'superv service install' (systemd runs it)")
    if ping.get("version") != version():
        pid = ping.get("pid")
        return Check(
            "supervisor", False,
            f"pid {pid} runs superv {ping.get('version')}, this CLI is {version()}",
            f"restart it (sessions keep running): 'systemctl --user restart superv.service', "
            f"or 'kill {pid}' and then 'superv ls'",
        )
    return Check("supervisor", True,
                 f"pid {ping.get('pid')}, superv {ping.get('version')}, {ping.get('sessions')} sessions")


def answers(path: Path, timeout: float = 1.0) -> bool:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except OSError:
        return False
    finally:
        sock.close()
    return True


def check_stale_sockets() -> Check:
    directory = paths.runtime_dir() / "sessions"
    try:
        candidates = sorted(directory.glob("*.sock"))
    except OSError:
        candidates = []
    stale = [p for p in candidates if stat.S_ISSOCK(_mode(p)) and not answers(p)]
    if not stale:
        return Check("stale-sockets", True, f"{len(candidates)} session sockets, all answering")
    shown = ", ".join(p.name for p in stale[:5]) + (" ..." if len(stale) > 5 else "")
    # Harmless to sessions (a starting worker replaces its own stale socket), but they are
    # the mark of workers that died without cleaning up: a crash or a reboot without
    # systemd's runtime directory cleanup.
    return Check("stale-sockets", False,
                 f"{len(stale)} socket(s) in {directory} that nobody answers on: {shown}",
                 f"remove them: rm {' '.join(str(p) for p in stale[:5])}")


def _mode(path: Path) -> int:
    try:
        return path.lstat().st_mode
    except OSError:
        return 0


def check_session_files() -> Check:
    """Every session's spec and snapshot readable: a broken one costs that session only,
    but it can be neither resumed nor exported until it is mended or removed."""
    from agent_worker import session_files

    sessions = paths.sessions_dir()
    names = sorted(p.name for p in sessions.iterdir()) if sessions.is_dir() else []
    broken = []
    for name in names:
        if paths.NAME_RE.fullmatch(name):
            problem = session_files.problem(sessions / name)
            if problem:
                broken.append(f"{name} ({problem})")
    if not broken:
        return Check("session-files", True, f"{len(names)} sessions, every spec and snapshot readable")
    shown = "; ".join(broken[:5]) + (" ..." if len(broken) > 5 else "")
    return Check("session-files", False, f"{len(broken)} session(s) with unreadable files: {shown}",
                 "mend the file from its .prev copy, or 'superv rm NAME' to forget the session")


def check_agent_markers(pid: int | None) -> Check:
    """The supervisor must not run with another agent's session markers in its environment.

    Agents it starts are scrubbed of them (agent_kinds.MARKERS) either way; a supervisor
    that has them was started from inside an agent (its Bash tool, say), which is worth
    knowing: restarted from there, it would be again.
    """
    from agent_worker.agent_kinds import markers_in

    if pid is None:
        return Check("agent-markers", True, "supervisor not running: nothing to check")
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError as exc:
        return Check("agent-markers", True, f"cannot read the supervisor's environment: {exc.strerror}")
    env = dict(item.partition(b"=")[::2] for item in raw.split(b"\0") if item)
    found = markers_in({k.decode(errors="replace"): "" for k in env})
    if not found:
        return Check("agent-markers", True, "the supervisor carries no agent session markers")
    return Check("agent-markers", False,
                 f"the supervisor (pid {pid}) runs with another agent's session markers: "
                 f"{', '.join(found)} (agents it starts are scrubbed of them)",
                 f"restart it from a plain shell: 'kill {pid}', then 'superv ls' outside any agent")


def check_versions() -> Check:
    from supervisor.cli import version

    return Check("versions", True,
                 f"superv {version()}, python {platform.python_version()} ({sys.executable})")


def check_config() -> Check:
    """config.toml (notifications, hosts): parses, known keys, valid URLs, a command that exists."""
    from supervisor import config as cfg

    try:
        conf = cfg.load()
    except cfg.ConfigError as exc:
        return Check("config", False, str(exc), "fix that key, then 'superv notify test'")
    if not conf.exists:
        return Check("config", True, f"no {conf.path} (no notifications, no hosts)")
    command = conf.notify.command
    problem = cfg.command_problem(command) if command else None
    if problem:
        return Check("config", False, f"{conf.path}: notify.command: {problem}",
                     "install it or give its full path")
    routes = ", ".join(conf.notify.routes()) or "none"
    return Check("config", True, f"{conf.path}: notification routes: {routes}; "
                                 f"{len(conf.hosts)} host(s)")


def check_activity_rules() -> Check:
    """The user's activity-rules.json, if any: a file that cannot be used is ignored by
    every session (the shipped rules apply), which the user would not see otherwise."""
    from agent_worker.activity import rules
    from agent_worker.agent_kinds import KINDS

    path = rules.user_rules_path()
    if not path.exists():
        return Check("activity-rules", True, f"no {path} (the shipped screen rules)")
    for kind in KINDS:
        _, warning = rules.load(kind, path)
        if warning is not None:
            return Check("activity-rules", False, warning, f"fix {path} or remove it")
    return Check("activity-rules", True, f"{path}: usable, before the shipped rules")


def check_hot_path() -> Check:
    """Which hot path the workers run (issue 13): not a fault either way, the Python loop
    only costs more CPU and latency per key, so it is ok, with what to do about it."""
    from agent_worker import hot_lane, settings

    if not hot_lane.built():
        return Check("hot-path", True, "the Python loop only: the native lane was not built "
                     "(install gcc, libc6-dev and python3-dev, then install superv again)")
    if settings.current().hot_path != "native":
        return Check("hot-path", True, "the Python loop only (SUPERV_HOT_PATH=python)")
    return Check("hot-path", True, "the native lane, built and chosen")


def run_checks() -> list[Check]:
    from supervisor import service_unit as su

    results = [check_versions()]
    ping, error = ping_supervisor()
    results.append(check_supervisor(ping, error))
    linger = su.lingering()
    results.append(check_lingering(linger))
    results.append(check_kill_user_processes(supervisor_pid=(ping or {}).get("pid"),
                                             linger=linger.enabled))
    results.append(check_agent_markers((ping or {}).get("pid")))
    checks: list[Callable[[], Check]] = [check_runtime_dir, check_state_dir, check_disk,
                                         check_stale_sockets, check_session_files, check_config,
                                         check_activity_rules, check_hot_path]
    for check in checks:
        try:
            results.append(check())
        except (OSError, paths.PathError) as exc:  # one broken check never hides the others
            results.append(Check(check.__name__.removeprefix("check_"), False, str(exc),
                                 "see the message"))
    return results
