"""``superv notify test``: send a test notification through every configured route.

Each route (webhook, ntfy, command) is tried here, from this process, with the config
file's settings, and one line per route says what happened; exit 1 if any failed or none
is configured.  The bell is rung by attach clients, so it is only reported.
"""

from __future__ import annotations

import argparse
import sys
import time

from supervisor.errors import CliError


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("notify", help="notifications: 'superv notify test' tries every route")
    parser.add_argument("action", choices=["test"], help="test: send a test notification")
    parser.add_argument("--session", default="test", help="the session name the test names")
    return parser


def run(args: argparse.Namespace) -> int:
    from supervisor import config as cfg

    try:
        conf = cfg.load()
    except cfg.ConfigError as exc:
        raise CliError(str(exc)) from None
    settings = conf.notify
    if not settings.routes():
        raise CliError(f"no notification route is configured: set notify.webhook, notify.ntfy, "
                       f"notify.command or notify.bell in {conf.path}")
    import trio

    from supervisor.notify import message, routes
    from supervisor.notify.notifier import Notifier

    event = {"session": args.session, "time": time.time(), "activity": "test",
             "attention": "superv notify test"}
    item = message.notice(settings.host, event, "test", None)
    failed = 0

    async def main() -> None:
        nonlocal failed
        for name, deliver in Notifier.deliveries(settings, item, retries=1):
            try:
                print(f"ok    {name}: {await deliver()}", flush=True)
            except routes.RouteError as exc:
                failed += 1
                print(f"FAIL  {name}: {exc}", flush=True)

    trio.run(main)
    if settings.bell:
        print("ok    bell: on (attached clients ring on each notification)")
    if failed:
        sys.stderr.write(f"superv: {failed} notification route(s) failed\n")
    return 1 if failed else 0
