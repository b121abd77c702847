"""The CLI's side of the supervisor's control socket, and starting it on demand.

The first command that needs the supervisor starts it if nobody answers.  Two commands
doing this at once each start one, but only one can take the home's lock; the other
exits at once, and both commands then talk to the winner.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from typing import Any

from agent_worker import paths
from agent_worker import protocol as p
from agent_worker.atomic import open_private_log
from agent_worker.client import Connection, ConnectionClosed
from supervisor.errors import CliError

START_TIMEOUT = 15.0


def connect(autostart: bool = True) -> Connection:
    path = paths.supervisor_socket()
    try:
        return Connection.open(path)
    except (FileNotFoundError, ConnectionRefusedError):
        if not autostart:
            raise CliError(
                f"the supervisor is not running for {paths.state_home()}: "
                "any superv command that needs it starts it, or run 'superv daemon'"
            ) from None
    except OSError as exc:
        raise CliError(f"cannot reach the supervisor at {path}: {exc}") from None
    start_daemon()
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            return Connection.open(path)
        except (FileNotFoundError, ConnectionRefusedError):
            if time.monotonic() > deadline:
                raise CliError(
                    f"the supervisor did not start; see {paths.state_home() / 'supervisor.log'}"
                ) from None
            time.sleep(0.02)


def start_with_systemd() -> bool:
    """If ``superv service install`` set up the unit, start it; True if systemd did.

    A daemon started by the CLI next to an installed unit would take the home's lock and
    make systemd's own starts fail, and its workers would live in the login session.
    """
    from supervisor import service_unit

    if not service_unit.unit_path().exists():
        return False
    try:
        service_unit.systemctl("start", service_unit.UNIT_NAME)  # Type=notify: waits for READY
    except service_unit.ServiceError:
        return False
    return True


def start_daemon() -> None:
    """Start ``superv daemon`` detached, and wait until it serves or loses the race."""
    if start_with_systemd():
        return
    home = paths.state_home()
    paths.ensure_private_dir(home)
    read_end, write_end = os.pipe()
    with open_private_log(home / "supervisor.log") as daemon_log:
        subprocess.Popen(
            [sys.executable, "-m", "supervisor", "daemon", "--ready-fd", str(write_end)],
            stdin=subprocess.DEVNULL,
            stdout=daemon_log,
            stderr=daemon_log,
            pass_fds=(write_end,),
            start_new_session=True,
            cwd="/",
        )
    os.close(write_end)
    try:
        # "ready", or end of file if this daemon lost the race to another one.
        select.select([read_end], [], [], START_TIMEOUT)
    finally:
        os.close(read_end)


def request(op: str, autostart: bool = True, **fields: Any) -> dict[str, Any]:
    """Send one request; return the reply's body, or raise CliError with its error."""
    with connect(autostart) as conn:
        try:
            conn.sock.settimeout(None if op in ("stop",) else 60)
            conn.send(p.Request({"op": op, **fields}))
            reply = conn.receive()
        except (ConnectionClosed, OSError) as exc:
            raise CliError(f"the supervisor closed the connection: {exc}") from None
    if isinstance(reply, p.Error):
        raise CliError(reply.message)
    if not isinstance(reply, p.Reply):
        raise CliError(f"unexpected answer from the supervisor: {type(reply).__name__}")
    if not reply.body.get("ok"):
        raise CliError(str(reply.body.get("error", "request failed")), 2 if reply.body.get("usage") else 1)
    return reply.body
