"""The one place where superv writes a file durably.

Every durable write (snapshots, the registry, session specs) goes through
:func:`write_atomic`: a temp file in the same directory, write, fsync, rename over the
target, fsync the directory.  A reader therefore sees the old file or the new one, never
a partial or empty one, even after a SIGKILL or a power loss mid-write.

With ``keep_previous`` the file being replaced is kept as ``NAME.prev``, so that a reader
that finds the newest copy unreadable (a bad disk block, a hand edit) can fall back to the
last good one: see :func:`read_json_with_fallback`.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, TypeVar

from agent_worker import json_input

T = TypeVar("T")


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _keep_previous(path: Path) -> None:
    """Make the current ``path`` its ``NAME.prev`` while ``path`` itself stays in place.

    A hard link under a temp name, renamed over ``NAME.prev``: so at every moment (and
    after a crash at any step) ``NAME`` is the old or the new version, and a reader never
    finds it missing.  Where the filesystem has no hard links, the old file is renamed
    instead: a crash between that rename and the next leaves only ``NAME.prev``, which
    readers fall back to.  No ``NAME`` yet (the first write): nothing to keep.
    """
    prev = previous_path(path)
    link = prev.with_name(f".{prev.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        os.link(path, link)
    except FileNotFoundError:
        return
    except OSError:  # EPERM, EXDEV, EMLINK...: no hard link here
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, prev)
        return
    try:
        os.replace(link, prev)
    finally:
        # rename() between two links of one file does nothing (POSIX): when a concurrent
        # writer already made this same file NAME.prev, the temp link is still there.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(link)


def previous_path(path: Path) -> Path:
    return path.with_name(path.name + ".prev")


def write_atomic(
    path: Path, data: bytes, *, keep_previous: bool = False, mode: int = 0o600
) -> None:
    """Replace ``path`` with ``data`` atomically and durably.

    Raises OSError (ENOSPC, EDQUOT, EFBIG...) with the old file left untouched.
    """
    # Unique per call, so that two threads writing the same file never share a temp file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    try:
        if keep_previous:
            _keep_previous(path)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)


def open_private_log(path: Path) -> BinaryIO:
    """Open a log file for appending, readable by its owner only: logs name commands."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600), "ab")


def remove_stale_temps(path: Path) -> None:
    """Remove temp files a killed writer of ``path`` left behind.

    Call it only where no other writer of ``path`` can be running (a worker at its start,
    the supervisor holding its lock): the temp files of a live writer look the same.
    """
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_json_atomic(path: Path, value: Any, *, keep_previous: bool = False) -> None:
    data = json.dumps(value, indent=1, sort_keys=True).encode() + b"\n"
    write_atomic(path, data, keep_previous=keep_previous)


class Unreadable(Exception):
    """Neither the file nor its previous copy could be read."""


def _load(path: Path) -> Any:
    return json_input.loads(path.read_bytes())


def read_json_with_fallback(
    path: Path, parse: Callable[[Any], T] = lambda value: value, load: Callable[[Path], Any] = _load
) -> tuple[T, str | None]:
    """Read a JSON file written by :func:`write_json_atomic` with ``keep_previous``.

    ``parse`` turns the JSON value into what the caller wants (raising TypeError or
    ValueError if it cannot): a copy that parses badly counts as unreadable too, so valid
    JSON of the wrong shape (``[]``) falls back to the previous copy like a torn one.
    Returns ``(value, warning)``: ``warning`` is None when the newest copy was good, else
    a sentence saying that the previous copy was used and why.
    """
    problems = []
    for candidate in (path, previous_path(path)):
        try:
            return parse(load(candidate)), (
                None if candidate == path else f"{path} was unreadable ({problems[0]}); "
                f"using the previous snapshot {candidate.name}"
            )
        except FileNotFoundError:
            problems.append("missing")
        except (OSError, ValueError, TypeError, RecursionError) as exc:
            problems.append(str(exc).replace(f"{candidate}: ", "") or type(exc).__name__)
    raise Unreadable(f"{path}: {problems[0]}; previous copy: {problems[1]}")
