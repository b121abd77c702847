"""The CLI's side of the supervisor's control socket, and starting it on demand.

The first command that needs the supervisor starts it if nobody answers
(:mod:`supervisor.autostart`).  Two commands doing this at once each start one, but only
one can take the home's lock; the other exits, and both commands then talk to the winner.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent_worker import paths
from agent_worker import protocol as p
from agent_worker.client import Connection, ConnectionClosed
from supervisor.autostart import start_daemon
from supervisor.errors import CliError


def connect(autostart: bool = True) -> Connection:
    try:
        path = paths.check_socket_path(paths.supervisor_socket())
    except paths.PathError as exc:
        raise CliError(str(exc)) from None
    conn = _open(path)
    if conn is not None:
        return conn
    if not autostart:
        raise CliError(
            f"the supervisor is not running for {paths.state_home()}: "
            "any superv command that needs it starts it, or run 'superv daemon'"
        )
    # Once start_daemon returns, a supervisor listens or none will: one attempt tells.
    reason = start_daemon()
    conn = _open(path)
    if conn is None:
        raise CliError(
            f"the supervisor did not start: {reason}" if reason else
            f"the supervisor did not start; see {paths.state_home() / 'supervisor.log'}"
        )
    return conn


def _open(path: Path) -> Connection | None:
    """A connection, or None if nobody listens at ``path``; CliError for anything else."""
    try:
        return Connection.open(path)
    except (FileNotFoundError, ConnectionRefusedError):
        return None
    except PermissionError:
        raise CliError(f"cannot reach the supervisor at {path}: permission denied (another "
                       "user's?): run superv as that user, or set SUPERV_RUNTIME_DIR to a "
                       "directory of your own") from None
    except NotADirectoryError:
        raise CliError(f"cannot reach the supervisor at {path}: {path.parent} is not a "
                       "directory: set SUPERV_RUNTIME_DIR to a directory") from None
    except OSError as exc:
        raise CliError(f"cannot reach the supervisor at {path}: {exc.strerror or exc}") from None


class TooLarge(CliError):
    """A request over the frame limit; the command says what made it large."""


def send_first(conn: Connection, message: p.Message) -> p.Message:
    """Send the first request on ``conn`` and return the answer; CliError for an Error.

    A supervisor that refuses us (another uid) sends an Error and closes at once, so our
    send may fail with EPIPE while its Error waits, unread, in our receive buffer.
    """
    sent: OSError | None = None
    try:
        conn.send(message)
    except OSError as exc:
        sent = exc
    try:
        answer = conn.receive()
    except (ConnectionClosed, OSError, p.ProtocolError) as exc:
        raise CliError(f"the supervisor closed the connection: {sent or exc}") from None
    if isinstance(answer, p.Error):
        raise CliError(answer.message)
    return answer


def request(op: str, autostart: bool = True, **fields: Any) -> dict[str, Any]:
    """Send one request; return the reply's body, or raise CliError with its error."""
    message = p.Request({"op": op, **fields})
    try:
        p.encode(message)
    except p.ProtocolError:
        raise TooLarge("the request is over the 1 MiB one request may carry", 2) from None
    with connect(autostart) as conn:
        conn.sock.settimeout(None if op in ("stop",) else 60)
        reply = send_first(conn, message)
    if not isinstance(reply, p.Reply):
        raise CliError(f"unexpected answer from the supervisor: {type(reply).__name__}")
    if not reply.body.get("ok"):
        raise CliError(str(reply.body.get("error", "request failed")), 2 if reply.body.get("usage") else 1)
    return reply.body
