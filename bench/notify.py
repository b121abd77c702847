"""Notifications: from an agent entering ``needs_approval`` to the webhook receiving it.

``python -m bench --only notify`` (superv only).  A scripted program under ``--agent
aider`` prints aider's approval prompt when told to (a screen rule makes it
``needs_approval``), and a real local HTTP server stands in for the webhook.  Two figures
per cycle: from ``superv send`` starting (so it includes that CLI's own start, the
program drawing the prompt, the worker's screen rule, the supervisor's 0.4 s settle time
and the POST) to the webhook's receipt; and from the activity change (the notice's
``time``, stamped by the worker when it saw the prompt) to the receipt.  Between cycles
the program prints other text, so the session is working again and the next prompt is
news.
"""

from __future__ import annotations

import json
import os
import queue
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.harness import REPO, Config, Result, tagged_env

sys.path.insert(0, str(REPO / "tests"))  # the HTTP sink lives with the tests that use it
from notify_helpers import http_sink

PROGRAM = r"""
while read -r what; do
  case "$what" in
    ask) printf '\033[2J\033[HApply these changes? (Y)es/(N)o ' ;;
    *) printf '\033[2J\033[Hworking on %s\n' "$what" ;;
  esac
done
"""


def _superv(env: dict[str, str], *args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "supervisor", *args], env=env,
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    if proc.returncode:
        raise RuntimeError(f"superv {' '.join(args)}: {proc.stderr.strip()}")


def _activity(name: str) -> str:
    from supervisor import control

    sessions = control.request("ls")["sessions"]
    return str(next(s for s in sessions if s["name"] == name)["activity"])


def measure(root: Path, cycles: int) -> tuple[list[float], list[float]]:
    with http_sink() as (base, got):
        config = root / "config"
        (config / "superv").mkdir(parents=True)
        (config / "superv" / "config.toml").write_text(
            f'[notify]\non = ["needs_approval"]\nwebhook = "{base}/hook"\n')
        env = tagged_env("notify", {"SUPERV_HOME": str(root / "sv"),
                                    "SUPERV_RUNTIME_DIR": str(root / "run"),
                                    "XDG_CONFIG_HOME": str(config)})
        os.environ["SUPERV_HOME"] = env["SUPERV_HOME"]  # for the in-process ls
        os.environ["SUPERV_RUNTIME_DIR"] = env["SUPERV_RUNTIME_DIR"]
        _superv(env, "start", "--agent", "aider", "asker", "--", "sh", "-c", PROGRAM)
        from_send, from_change = [], []
        for i in range(cycles):
            sent = time.time()
            _superv(env, "send", "--enter", "asker", "ask")
            item = got.get(timeout=30)
            body: dict[str, Any] = json.loads(item.body)
            assert body["reason"] == "needs_approval", body
            from_send.append(item.at - sent)
            from_change.append(item.at - body["time"])
            _superv(env, "send", "--enter", "asker", f"step {i}")
            deadline = time.time() + 30
            while _activity("asker") == "needs_approval":
                if time.time() > deadline:
                    raise RuntimeError("the session never left needs_approval")
                time.sleep(0.02)
            try:
                extra = got.get_nowait()
                raise RuntimeError(f"an extra notification: {extra.body!r}")
            except queue.Empty:
                pass
        _superv(env, "stop", "asker")
    return from_send, from_change


def ms(values: list[float]) -> str:
    return f"p50 {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms, n={len(values)}"


def run(cfg: Config, hosts: list[Any]) -> list[Result]:
    from_send, from_change = measure(cfg.scratch / "notify", 5 if cfg.quick else 20)
    return [
        Result("needs_approval -> webhook (from send)", "superv", statistics.median(from_send), "s",
               detail=ms(from_send), comparable=False,
               verified="the webhook got needs_approval once per prompt"),
        Result("needs_approval -> webhook (from the change)", "superv",
               statistics.median(from_change), "s", detail=ms(from_change), comparable=False,
               verified="includes the 0.4 s settle time"),
    ]
