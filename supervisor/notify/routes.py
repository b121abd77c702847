"""Delivery of one notification by each route: webhook, ntfy, a command.

HTTP is the standard library's ``http.client`` run in a worker thread (a small limiter of
its own, so a hung endpoint never takes trio's threads from the supervisor), with a
timeout per try and retries with doubling backoff.  The command runs under
``trio.run_process`` with the notice JSON on stdin and ``SUPERV_*`` variables, killed at its
timeout.  Each function returns one line saying what happened, or raises
:class:`RouteError` with one line saying what went wrong.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import subprocess
import urllib.parse
from typing import Any

import trio

HTTP_TIMEOUT = 5.0  # seconds per try
RETRIES = 3  # tries after the first
BACKOFF = 0.5  # seconds before the first retry; doubles
_limiter: trio.CapacityLimiter | None = None


class RouteError(Exception):
    """A delivery that failed, after its retries; one line."""


def _threads() -> trio.CapacityLimiter:
    global _limiter
    if _limiter is None:
        _limiter = trio.CapacityLimiter(4)
    return _limiter


def webhook_request(item: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    return json.dumps(item).encode(), {"Content-Type": "application/json"}


def ntfy_request(item: dict[str, Any]) -> tuple[bytes, dict[str, str]]:
    """ntfy's plain-text publish: the line as the body, Title/Priority/Tags as headers."""
    urgent = item.get("reason") in ("needs_approval", "needs_input", "error")
    headers = {
        # ntfy takes RFC 2047 for non-ASCII headers; host and session names are ASCII.
        "Title": f"superv {item.get('host')}:{item.get('session')}",
        "Priority": "high" if urgent else "default",
        "Tags": "warning" if urgent else "robot",
        "Content-Type": "text/plain; charset=utf-8",
    }
    return str(item.get("message", "")).encode(), headers


def _post_once(url: str, body: bytes, headers: dict[str, str], timeout: float) -> int:
    parts = urllib.parse.urlsplit(url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname or "", parts.port, timeout=timeout)
    try:
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        conn.request("POST", target, body=body, headers={"User-Agent": "superv", **headers})
        response = conn.getresponse()
        response.read(65536)
        return response.status
    finally:
        conn.close()


async def post(url: str, body: bytes, headers: dict[str, str], *, retries: int = RETRIES,
               timeout: float = HTTP_TIMEOUT) -> str:
    """POST with retries (a 5xx, 429 or a network error is retried; another 4xx is final)."""
    delay = BACKOFF
    problem = ""
    shown = _shown(url)
    for attempt in range(retries + 1):
        if attempt:
            await trio.sleep(delay)
            delay *= 2
        try:
            status = await trio.to_thread.run_sync(_post_once, url, body, headers, timeout,
                                                   limiter=_threads(), abandon_on_cancel=True)
        except (OSError, http.client.HTTPException) as exc:
            problem = f"{shown}: {exc.__class__.__name__}: {exc}".rstrip(": ")
            continue
        if 200 <= status < 300:
            return f"{shown} answered {status}"
        problem = f"{shown} answered {status}"
        if 400 <= status < 500 and status != 429:
            break
    raise RouteError(problem)


def _shown(url: str) -> str:
    """The URL without its credentials or query (an ntfy token, a webhook secret)."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host += f":{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}"


def command_environment(item: dict[str, Any]) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("host", "session", "reason", "activity", "attention", "message", "agent"):
        env[f"SUPERV_{key.upper()}"] = "" if item.get(key) is None else str(item[key])
    return env


async def _kill_group(process: trio.Process) -> None:
    # Its own session (start_new_session): the whole group goes, a shell's children too.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


async def run_command(argv: tuple[str, ...], item: dict[str, Any], timeout: float) -> str:
    """Run the user's command with the notice on stdin; killed after ``timeout`` seconds."""
    stdin = json.dumps(item).encode() + b"\n"
    try:
        with trio.fail_after(timeout):
            done = await trio.run_process(list(argv), stdin=stdin, check=False,
                                          stdout=subprocess.DEVNULL, capture_stderr=True,
                                          env=command_environment(item),
                                          start_new_session=True, deliver_cancel=_kill_group)
    except trio.TooSlowError:
        raise RouteError(f"{argv[0]} took longer than {timeout:g} s and was killed") from None
    except OSError as exc:
        raise RouteError(f"{argv[0]}: {exc.strerror or exc}") from None
    if done.returncode != 0:
        said = (done.stderr or b"").decode(errors="replace").strip().splitlines()
        raise RouteError(f"{argv[0]} exited {done.returncode}" + (f": {said[-1][:200]}" if said else ""))
    return f"{argv[0]} exited 0"
