"""The systemd user unit for the supervisor: its text, where it goes, and systemctl calls.

The unit's text lives here (not only in the repository's ``systemd/superv.service``)
because an installed wheel carries the package, not the repository; the repository file
is this template rendered with a placeholder ``ExecStart`` and a test keeps the two equal.

Everything here runs ``systemctl``/``loginctl`` with argv lists: no shell, no string that
a user's path or name could turn into a command.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import attrs

UNIT_NAME = "superv.service"
# What the repository's systemd/superv.service says; ``install`` puts the real one here.
PLACEHOLDER_EXEC = "%h/.local/bin/superv daemon"
# Variables that decide which home and sockets the daemon serves: when the user who runs
# ``install`` has them set, the service must serve that home, not the default one.
PINNED_ENV = ("SUPERV_HOME", "SUPERV_RUNTIME_DIR", "XDG_STATE_HOME")
COMMAND_TIMEOUT = 30.0

UNIT_TEMPLATE = """\
# superv: the per-user session supervisor, as a systemd *user* service.
#
# 'superv service install' writes this file to ~/.config/systemd/user/superv.service with
# ExecStart= pointing at the superv of the installation that ran it, then enables it.
# Copying it by hand works too if superv is at ~/.local/bin/superv (pipx's default).
# Sessions survive logout only with lingering on: sudo loginctl enable-linger $USER
# ('superv doctor' checks this and everything else that can kill a session).

[Unit]
Description=superv session supervisor (keeps AI coding agents alive)

[Service]
# The daemon sends READY=1 once its control socket serves, STATUS= with the session
# count, WATCHDOG=1 at half of WatchdogSec, and STOPPING=1 when it gets SIGTERM.
Type=notify
# Only the main process may report: workers never see NOTIFY_SOCKET, and an agent must not
# be able to tell systemd the supervisor is ready or alive.
NotifyAccess=main
ExecStart={exec_start}
{environment}
# Workers and agents are started by the daemon, so they live in this service's cgroup.
# With the default KillMode=control-group, stopping, restarting or upgrading the service
# would SIGTERM every worker and agent in it: every session would die with the supervisor.
# KillMode=process signals the daemon alone; it persists its registry and exits, and the
# next daemon re-adopts the running workers (they are detached and own their sessions).
KillMode=process
# The daemon persists and exits at once on SIGTERM; a short limit is enough, and a hung
# daemon gets SIGKILL (which workers survive too: only the main process is signalled).
TimeoutStopSec=15s

# A crash, a non-zero exit or a missed watchdog restarts it; the workers keep running.
Restart=on-failure
RestartSec=2s
WatchdogSec=30s

# An agent killed by the kernel's OOM killer is that session's business: with the default
# (stop) systemd would stop the whole unit, supervisor included.
OOMPolicy=continue
# Agents run builds and test suites in this cgroup: do not cap them at the default
# per-service task limit.
TasksMax=infinity

[Install]
WantedBy=default.target
"""


class ServiceError(Exception):
    """systemctl or loginctl could not do what was asked; the message says why."""


def unit_dir() -> Path:
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(config) / "systemd" / "user"


def unit_path() -> Path:
    return unit_dir() / UNIT_NAME


def user_name() -> str:
    # $USER is not always set (cron, containers, su): ask the password database.
    try:
        return pwd.getpwuid(os.getuid()).pw_name
    except KeyError:
        return os.environ.get("USER") or str(os.getuid())


def _executable(path: Path) -> bool:
    try:
        st = path.stat()
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and os.access(path, os.X_OK)


def daemon_argv() -> list[str]:
    """How systemd should start *this* installation's supervisor.

    Not ``shutil.which("superv")``: the service's PATH is not the user's shell's, and the
    first ``superv`` on a PATH may be another installation (pipx next to a venv).  In order:
    the ``superv`` script this process was started as; the ``superv`` script generated next
    to this interpreter (its shebang pins this environment); else this interpreter with
    ``-m supervisor``.  The interpreter path is kept as given, not resolved: a venv's
    ``python`` is a symlink whose location is what selects the venv.
    """
    argv0 = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if argv0 is not None and argv0.name == "superv" and _executable(argv0):
        return [str(argv0.absolute()), "daemon"]
    beside = Path(sys.executable).parent / "superv"
    if sys.executable and _executable(beside):
        return [str(beside), "daemon"]
    return [sys.executable or "python3", "-m", "supervisor", "daemon"]


def _quote(word: str, *, exec_line: bool) -> str:
    """One word for a unit file: specifiers (``%``) and, on Exec lines, ``$`` kept literal."""
    if any(c in word for c in "\n\r\0"):
        raise ServiceError(f"{word!r} holds a line break or NUL: it cannot go into a unit file")
    word = word.replace("%", "%%")
    if exec_line:
        word = word.replace("$", "$$")
    if word and not any(c.isspace() or c in "\"'\\;" for c in word):
        return word
    return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(argv: list[str] | None = None, env: dict[str, str] | None = None) -> str:
    """The unit text; ``argv=None`` gives the repository's copy with the placeholder."""
    exec_start = PLACEHOLDER_EXEC if argv is None else " ".join(_quote(a, exec_line=True) for a in argv)
    lines = [
        "Environment=" + _quote(f"{key}={value}", exec_line=False)
        for key, value in (env or {}).items()
    ]
    return UNIT_TEMPLATE.format(exec_start=exec_start, environment="".join(line + "\n" for line in lines))


def pinned_environment() -> dict[str, str]:
    env: dict[str, str] = {}
    for key in PINNED_ENV:
        value = os.environ.get(key)
        if value:
            # Absolute, so the service (which starts in another directory) finds the same home.
            env[key] = os.path.abspath(os.path.expanduser(value))
    return env


def write_unit(text: str) -> Path:
    """Write the unit atomically (a half-written unit would fail to load at next boot)."""
    from agent_worker.atomic import write_atomic

    path = unit_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text.encode(), mode=0o644)  # unit files are not secret
    return path


def run_tool(argv: list[str]) -> subprocess.CompletedProcess[str]:
    """Run systemctl/loginctl; ServiceError when it is missing or hangs."""
    tool = shutil.which(argv[0])
    if tool is None:
        raise ServiceError(f"{argv[0]} is not installed: this box has no systemd")
    try:
        return subprocess.run(
            [tool, *argv[1:]], capture_output=True, text=True, timeout=COMMAND_TIMEOUT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        raise ServiceError(f"'{' '.join(argv)}' did not answer in {COMMAND_TIMEOUT:.0f} s") from None
    except OSError as exc:
        raise ServiceError(f"cannot run {argv[0]}: {exc}") from None


def _first_line(proc: subprocess.CompletedProcess[str]) -> str:
    text = (proc.stderr or proc.stdout or "").strip()
    return text.splitlines()[0] if text else f"exit status {proc.returncode}"


def systemctl(*args: str) -> str:
    """``systemctl --user ARGS``; its stdout, or ServiceError with its first error line."""
    proc = run_tool(["systemctl", "--user", *args])
    if proc.returncode != 0:
        reason = _first_line(proc)
        if "bus" in reason.lower() or "not been booted with systemd" in reason:
            raise ServiceError(
                f"no systemd user manager to talk to ({reason}): log in through a PAM session "
                "with systemd (ssh does this), or run 'superv daemon' without systemd"
            )
        raise ServiceError(f"systemctl --user {' '.join(args)} failed: {reason}")
    return proc.stdout


@attrs.frozen
class Linger:
    enabled: bool | None  # None: could not tell
    detail: str


def lingering() -> Linger:
    """Whether the user's manager (and so the service) outlives their last logout."""
    user = user_name()
    try:
        proc = run_tool(["loginctl", "show-user", user, "--property=Linger"])
    except ServiceError as exc:
        return Linger(None, f"could not check lingering: {exc}")
    out = proc.stdout.strip()
    if proc.returncode != 0 or not out.startswith("Linger="):
        # No logind (no systemd as init), or the user has no session and no linger file:
        # logind's own files are the other witness.
        if Path("/var/lib/systemd/linger", user).exists():
            return Linger(True, f"lingering is on for {user} (/var/lib/systemd/linger/{user})")
        return Linger(None, f"could not check lingering: loginctl: {_first_line(proc)}")
    if out == "Linger=yes":
        return Linger(True, f"lingering is on for {user}")
    return Linger(False, f"lingering is off for {user}: every session dies at your last logout")


def linger_fix() -> str:
    return f"sudo loginctl enable-linger {user_name()}"


def show_unit() -> dict[str, str]:
    props = "LoadState,ActiveState,SubState,UnitFileState,MainPID,StatusText,ExecMainStartTimestamp"
    out = systemctl("show", UNIT_NAME, f"--property={props}")
    result = {}
    for line in out.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            result[key] = value
    return result
