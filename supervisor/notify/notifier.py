"""The supervisor's notifier: it follows the supervisor's own events and tells a person.

It is one more subscriber of the events the supervisor emits (what ``superv events``
streams), fed through a bounded memory channel that the supervisor fills without waiting:
a slow route can never slow the supervisor or a session.  Each lasting change (see
:class:`.message.Debouncer`) goes out by every configured route in a task of its own, at
most :data:`MAX_IN_FLIGHT` at a time (more are dropped and logged), and as a ``notice``
event on the supervisor's stream, which attach clients show on their status line.  A
route that fails is logged once, and again only after it has worked in between.

The config file is read again when it changes (its mtime and size), so editing it needs no
restart; a bad file is logged once and the last good one (or none) stays in force.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import structlog
import trio

from supervisor import config as cfg
from supervisor.notify import message, routes

log = structlog.get_logger("supervisor.notify")

MAX_IN_FLIGHT = 16


class Notifier:
    def __init__(self, emit: Callable[..., None], agent_of: Callable[[str], str | None],
                 path: os.PathLike[str] | None = None) -> None:
        self._emit = emit
        self._agent_of = agent_of
        self._path = path
        self._stamp: tuple[int, int] | None = None
        self._bad: str | None = None
        self.config = cfg.Config(cfg.config_path())
        self.debounce = message.Debouncer()
        self.quiet = message.QuietTurns()
        self.failing: set[str] = set()
        self.in_flight = 0
        self.send, self._receive = trio.open_memory_channel[dict[str, Any]](1024)

    # ---- the config, read again when it changes ------------------------------------------

    def current(self) -> cfg.Notify:
        path = self._path or cfg.config_path()
        try:
            st = os.stat(path)
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = (0, -1)
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self.config = cfg.load(path) if stamp[1] >= 0 else cfg.Config(path)
                self._bad = None
            except cfg.ConfigError as exc:
                if str(exc) != self._bad:
                    log.error("config_invalid", error=str(exc))
                self._bad = str(exc)
        return self.config.notify

    # ---- events in -----------------------------------------------------------------------

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            while True:
                due = self.debounce.next_due()
                wait = max(0.0, due - time.monotonic()) if due is not None else float("inf")
                try:
                    with trio.move_on_after(wait):
                        event = await self._receive.receive()
                        self.take(event)
                    for item in self.debounce.due(time.monotonic()):
                        self.dispatch(item)
                except Exception:
                    # A bug here must cost notifications, never the supervisor.
                    log.exception("notify_bug")

    def take(self, event: dict[str, Any]) -> None:
        session = str(event.get("session") or "")
        change = message.change_of(event)
        if not session or (change is None and event.get("event") != "activity"):
            return
        settings = self.current()
        agent = self._agent_of(session)
        wanted = change is not None and settings.wants(change, session, agent)
        item = message.notice(settings.host, event, change, agent) if wanted and change else None
        now = time.monotonic()
        if event.get("event") == "activity":
            settle = None
            length = settings.quiet_turn
            self.quiet.see(session, event.get("activity"), event.get("source"), now, length)
            if change == "idle" and event.get("source") == message.QUIET_SOURCE:
                # Only a pause after real work, that lasts, is a finished turn.
                settle = length
                if not self.quiet.turn_ended(session, now, length):
                    item = None
            key = (change, event.get("attention")) if item is not None and change else None
            self.debounce.activity(session, key, item, now, settle)
            return
        if change == "ended":
            self.debounce.final(session)
            self.quiet.forget(session)
        if item is not None:
            self.dispatch(item)  # an end or a stall is not a flicker: at once

    # ---- notifications out ---------------------------------------------------------------

    def dispatch(self, item: dict[str, Any]) -> None:
        settings = self.current()
        self._emit("notice", item["session"], host=item["host"], reason=item["reason"],
                   message=item["message"], bell=settings.bell)
        for name, deliver in self.deliveries(settings, item):
            if self.in_flight >= MAX_IN_FLIGHT:
                log.warning("notify_dropped", route=name, session=item["session"],
                            reason="too many notifications in flight")
                continue
            self.in_flight += 1
            self._nursery.start_soon(self._deliver, name, deliver)

    @staticmethod
    def deliveries(settings: cfg.Notify, item: dict[str, Any], retries: int = routes.RETRIES
                   ) -> list[tuple[str, Callable[[], Any]]]:
        """Each configured route's delivery of ``item``, as (name, coroutine function)."""
        out: list[tuple[str, Callable[[], Any]]] = []
        if settings.webhook:
            body, headers = routes.webhook_request(item)
            url = settings.webhook
            out.append(("webhook", lambda: routes.post(url, body, headers, retries=retries)))
        if settings.ntfy:
            text, ntfy_headers = routes.ntfy_request(item)
            topic = settings.ntfy
            out.append(("ntfy", lambda: routes.post(topic, text, ntfy_headers, retries=retries)))
        if settings.command:
            argv, timeout = settings.command, settings.command_timeout
            out.append(("command", lambda: routes.run_command(argv, item, timeout)))
        return out

    async def _deliver(self, name: str, deliver: Callable[[], Any]) -> None:
        try:
            outcome = await deliver()
        except routes.RouteError as exc:
            if name not in self.failing:
                log.warning("notify_failed", route=name, error=str(exc))
                self.failing.add(name)
        except Exception:
            log.exception("notify_route_bug", route=name)  # a bug here never takes us down
        else:
            if name in self.failing:
                log.info("notify_recovered", route=name, detail=outcome)
                self.failing.discard(name)
        finally:
            self.in_flight -= 1

