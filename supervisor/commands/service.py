"""``superv service install|uninstall|status``: the systemd user unit for the supervisor.

``install`` writes ``~/.config/systemd/user/superv.service`` (``$XDG_CONFIG_HOME`` honoured)
with this installation's ``superv`` in ``ExecStart``, reloads the user manager, enables and
starts the unit, and checks lingering.  ``uninstall`` disables and stops it (workers keep
running: the unit uses ``KillMode=process``) and removes the file.  ``status`` shows the
unit and asks the supervisor itself.  Without a systemd user manager each says so on one
line and exits 1; ``install`` still leaves the unit file written.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from supervisor.errors import CliError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("service", help="install, remove or inspect the systemd user unit")
    parser.add_argument("action", choices=["install", "uninstall", "status"])
    return parser


def run(args: argparse.Namespace) -> int:
    from supervisor import service_unit as su

    try:
        return {"install": _install, "uninstall": _uninstall, "status": _status}[args.action]()
    except su.ServiceError as exc:
        raise CliError(str(exc)) from None


def _install() -> int:
    from supervisor import service_unit as su

    argv = su.daemon_argv()
    path = su.write_unit(su.render_unit(argv, su.pinned_environment()))
    print(f"wrote {path} (ExecStart={' '.join(argv)})")
    try:
        su.systemctl("daemon-reload")
        su.systemctl("enable", "--now", su.UNIT_NAME)
    except su.ServiceError as exc:
        raise CliError(f"could not enable {su.UNIT_NAME}: {exc}") from None
    print(f"enabled and started {su.UNIT_NAME}")
    linger = su.lingering()
    if linger.enabled:
        print(linger.detail)
        return 0
    # The unit is in place, but without lingering the user manager (and every session in
    # the service) is stopped at the last logout: that is a failed install, not a footnote.
    sys.stderr.write(
        f"superv: {linger.detail}: run '{su.linger_fix()}' so sessions survive logout\n"
    )
    return 1


def _uninstall() -> int:
    from supervisor import service_unit as su

    path = su.unit_path()
    if not path.exists():
        raise CliError(f"{su.UNIT_NAME} is not installed (no {path})")
    # Stop first: it is the step that needs the user manager, so without one nothing is
    # changed.  It stops the daemon only (KillMode=process): the workers keep running and
    # the next superv command starts a supervisor of its own that adopts them.
    su.systemctl("stop", su.UNIT_NAME)
    su.systemctl("disable", su.UNIT_NAME)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    su.systemctl("daemon-reload")
    print(f"stopped and disabled {su.UNIT_NAME}, removed {path}; sessions keep running")
    return 0


def _status() -> int:
    from supervisor import control
    from supervisor import service_unit as su
    from supervisor.cli import version

    path = su.unit_path()
    print(f"unit file: {path}" + ("" if path.exists() else " (not installed)"))
    try:
        ping = control.request("ping", autostart=False)
    except CliError as exc:
        ping = None
        print(f"supervisor: not answering ({exc})")
    else:
        mismatch = "" if ping.get("version") == version() else f" (this CLI is {version()})"
        print(f"supervisor: pid {ping.get('pid')}, version {ping.get('version')}{mismatch}, "
              f"{ping.get('sessions')} sessions, home {ping.get('home')}")
    unit = su.show_unit()
    print(f"unit: {unit.get('LoadState', '?')}, {unit.get('ActiveState', '?')} "
          f"({unit.get('SubState', '?')}), {unit.get('UnitFileState') or 'not enabled'}, "
          f"main pid {unit.get('MainPID', '?')}")
    if unit.get("StatusText"):
        print(f"status: {unit['StatusText']}")
    if unit.get("ActiveState") != "active" or ping is None:
        raise CliError(f"{su.UNIT_NAME} is not running: 'superv service install' sets it up, "
                       f"'journalctl --user -u {su.UNIT_NAME}' says why it stopped")
    return 0
