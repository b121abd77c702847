"""Reaching one session from the CLI: its worker's socket when it runs, its files always.

Commands that show or drive a session (attach, peek, send, kill, logs) talk to the
worker directly, so they work while the supervisor is down.
"""

from __future__ import annotations

from pathlib import Path

from agent_worker import paths, session_files
from agent_worker import protocol as p
from agent_worker.client import ConnectionClosed, SessionClient
from agent_worker.conversation import SessionInfo
from supervisor.errors import CliError


def checked_name(name: str) -> str:
    try:
        return paths.validate_name(name)
    except paths.PathError as exc:
        raise CliError(str(exc), 2) from None


class NotRunning(CliError):
    """The session exists but its worker is gone: its files still tell everything."""


def session_directory(name: str) -> Path:
    directory = paths.session_dir(checked_name(name))
    try:
        (directory / session_files.SPEC).stat()
    except PermissionError:
        raise CliError(permission_denied(directory)) from None
    except OSError:
        raise CliError(f"no session named {name}: 'superv ls' lists them") from None
    return directory


def permission_denied(path: Path | str) -> str:
    """The one line for a file or socket of superv's that this user may not use."""
    return (f"permission denied: {path} is not yours (superv's files and sockets belong to "
            "the user who started the session; run superv as that user)")


def ended_state(name: str) -> str:
    from supervisor.replay import session_facts

    session_directory(name)
    return str(session_facts(name)["state"])


def open_worker(name: str, hello: p.Hello) -> tuple[SessionClient, SessionInfo]:
    """Connect to ``name``'s worker and say hello; CliError if it is not running."""
    session_directory(name)
    try:
        conn = SessionClient.open(paths.session_socket(name), hello)
    except (FileNotFoundError, ConnectionRefusedError):
        raise NotRunning(
            f"session {name} is not running ({ended_state(name)}): "
            f"'superv logs {name}' shows its output, 'superv resume {name}' runs it again"
        ) from None
    except OSError as exc:
        raise CliError(f"cannot reach session {name}: {exc}") from None
    try:
        return conn, conn.welcome()
    except ConnectionRefusedError as exc:
        conn.close()
        raise CliError(f"session {name} refused: {exc}") from None
    except (ConnectionClosed, p.ProtocolError) as exc:
        conn.close()
        raise CliError(f"session {name} did not answer as a superv worker: {exc}") from None
    except Exception:
        conn.close()
        raise


def refuse_ended(name: str, info: SessionInfo) -> None:
    """CliError if the agent has ended (its worker lingers a moment for its clients)."""
    if not info.running:
        raise CliError(
            f"session {name} is not running ({info.state}): 'superv resume {name}' runs it again"
        )
