"""Where a session's files and sockets live, and which session names are allowed.

State (logs, snapshots, the registry) lives under ``$SUPERV_HOME``; sockets live under
``$SUPERV_RUNTIME_DIR``.  Both are resolved from the environment each time, so two
processes with different homes never see each other's sessions.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from pathlib import Path

from agent_worker import settings

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# sun_path is 108 bytes on Linux, including the terminating NUL.
MAX_SOCKET_PATH = 107
HASHED_LEN = 20  # hex digits of a hashed session socket name (80 bits)


class PathError(Exception):
    """A name or directory that superv refuses to use; the message says why."""


def validate_name(name: str) -> str:
    """Return ``name`` if it is a safe session name, else raise PathError."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        shown = repr(name) if len(str(name)) <= 40 else repr(str(name)[:40]) + "..."
        raise PathError(
            f"invalid session name {shown}: use 1-64 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def state_home() -> Path:
    explicit = settings.current().home
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return Path(xdg) / "superv"


def _default_home() -> Path:
    return Path(os.path.expanduser("~/.local/state")) / "superv"


def runtime_dir() -> Path:
    explicit = settings.current().runtime_dir
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    base = Path(xdg) / "superv" if xdg else Path(f"/tmp/superv-{os.getuid()}")
    home = state_home().resolve()
    if home != _default_home().resolve():
        # A non-default home (SUPERV_HOME or XDG_STATE_HOME) gets its own socket directory,
        # so that two homes on one machine never answer for each other's sessions, while
        # SUPERV_HOME set to the default home still finds the default sockets.
        tag = hashlib.sha256(os.fsencode(home)).hexdigest()[:10]
        return base / f"home-{tag}"
    return base


def sessions_dir() -> Path:
    return state_home() / "sessions"


def session_dir(name: str) -> Path:
    return sessions_dir() / validate_name(name)


def session_socket(name: str) -> Path:
    """``NAME.sock``, or a short hashed name when that path would not fit in ``sun_path``.

    Every valid name must work wherever the runtime directory is (a non-default home under
    /run/user/UID needs ~116 bytes for a 64-character name).  ``~`` cannot start a session
    name, so a hashed name never collides with a readable one.
    """
    directory = runtime_dir() / "sessions"
    readable = directory / f"{validate_name(name)}.sock"
    if len(os.fsencode(readable)) <= MAX_SOCKET_PATH:
        return readable
    return directory / f"~{hashlib.sha256(name.encode()).hexdigest()[:HASHED_LEN]}.sock"


def supervisor_socket() -> Path:
    return runtime_dir() / "supervisor.sock"


def check_socket_path(path: Path) -> Path:
    if len(os.fsencode(path)) > MAX_SOCKET_PATH:
        raise PathError(
            f"socket path {path} is longer than {MAX_SOCKET_PATH} bytes: "
            "set SUPERV_RUNTIME_DIR to a shorter directory"
        )
    return path


def check_runtime_dir() -> Path:
    """The runtime directory, if every socket superv may need fits in it; else PathError."""
    directory = runtime_dir()
    longest = directory / "sessions" / f"~{'0' * HASHED_LEN}.sock"
    check_socket_path(longest)
    return directory


def ensure_private_dir(path: Path) -> Path:
    """Create ``path`` (and parents) and make sure it is ours and mode 0700.

    A directory owned by another user is refused rather than repaired: it may be an
    attempt to intercept our sockets.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:  # a file, or a symlink to one
        raise PathError(f"{path} exists and is not a directory") from None
    st = path.lstat()
    if stat.S_ISLNK(st.st_mode):
        raise PathError(f"{path} is a symlink: superv uses only its own directories there; "
                        "remove it or pick another")
    if not stat.S_ISDIR(st.st_mode):
        raise PathError(f"{path} is not a directory")
    if st.st_uid != os.getuid():
        raise PathError(f"{path} belongs to uid {st.st_uid}, not to you: remove it or pick another")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    return path


def ensure_socket_dir(path: Path) -> Path:
    """:func:`ensure_private_dir` for a directory of sockets, whose parents must not let
    another user swap it for theirs either: each is root's or ours, and not writable by
    everyone unless sticky (as /tmp is).  The fallback ``/tmp/superv-UID`` is made by whoever
    comes first: another user's (mode 0777) let them rename our socket directory away and
    put their own in its place."""
    for parent in path.absolute().parents:
        try:
            st = parent.stat()
        except FileNotFoundError:
            continue  # made below, by us
        if st.st_uid not in (0, os.getuid()) or (st.st_mode & 0o002 and not st.st_mode & stat.S_ISVTX):
            owner = "you" if st.st_uid == os.getuid() else f"uid {st.st_uid}"
            raise PathError(f"{parent} (of {owner}, mode {stat.S_IMODE(st.st_mode):o}) would let "
                            f"another user replace {path}: remove it, or set SUPERV_RUNTIME_DIR "
                            "to a directory of your own")
    return ensure_private_dir(path)
