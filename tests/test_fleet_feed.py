"""The overview's feed of a fleet host: one ``superv events --json --lists`` carries the
host's sessions and its events, in the order its supervisor saw them (no change falls
between the list and the events), over one SSH connection per host; a host whose superv
predates ``--lists`` is shown as needing an upgrade."""

from __future__ import annotations

import json
import os
import re
import select
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import SupervEnv
from ssh_fixtures import superv_installed  # noqa: F401  (the fixture)
from test_fleet import Fleet, fleet  # noqa: F401  (the fixture)
from tmux_helpers import SUPERV, Tmux

from supervisor.overview.model import RELIST

pytestmark = pytest.mark.timeout(120)


class Stream:
    """A ``superv events --json --lists`` child, read a line at a time from its pipe (our
    own buffer: a file object's would hide lines from select)."""

    def __init__(self, env: SupervEnv) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "supervisor", "events", "--json", "--lists"], env=env.env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.buffer = b""

    def line(self, deadline: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            assert left > 0 and select.select([fd], [], [], left)[0], "no line in time"
            data = os.read(fd, 1 << 16)
            assert data, f"the stream ended: {self.proc.stderr.read() if self.proc.stderr else b''!r}"
            self.buffer += data
        line, self.buffer = self.buffer.split(b"\n", 1)
        body = json.loads(line)
        assert isinstance(body, dict)
        return body

    def ask(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"ls\n")
        self.proc.stdin.flush()


def test_a_change_as_the_subscription_starts_is_never_lost(superv_env: SupervEnv) -> None:
    superv_env.superv("start", "first", "--", "sleep", "600", check=True)
    names = [f"s{i}" for i in range(8)]

    def start_them() -> None:
        for name in names:
            superv_env.superv("start", name, "--", "sleep", "600", check=True)

    # Streams begin while sessions are being created, so some of them begin in the
    # middle of a change: each must learn of every session, from its first list or from
    # an event after it (the old overview listed separately and could miss one).
    starter = threading.Thread(target=start_them)
    streams = []
    starter.start()
    try:
        while starter.is_alive() and len(streams) < 12:
            streams.append(Stream(superv_env))
            time.sleep(0.1)  # spread over the starts: not a synchronisation
    finally:
        starter.join(timeout=60)
    try:
        assert len(streams) >= 3
        deadline = time.monotonic() + 60
        for stream in streams:
            first = stream.line(deadline)
            assert first["event"] == "sessions", first
            known = {s["name"] for s in first["sessions"]}
            assert "first" in known
            while not known >= set(names):
                body = stream.line(deadline)
                if body.get("event") in RELIST:
                    known.add(body["session"])
        # Asked on stdin, a fresh list comes in the same stream, with everything.
        probe = streams[0]
        probe.ask()
        body = probe.line(deadline)
        while body["event"] != "sessions":
            body = probe.line(deadline)
        assert {s["name"] for s in body["sessions"]} == {"first", *names}
        # Its stdin's end (the overview gone) ends it.
        assert probe.proc.stdin is not None
        probe.proc.stdin.close()
        assert probe.proc.wait(timeout=20) == 0
    finally:
        for stream in streams:
            stream.proc.kill()
            stream.proc.wait(timeout=10)


def test_lists_wants_json(superv_env: SupervEnv) -> None:
    done = superv_env.superv("events", "--lists")
    assert done.returncode == 2 and done.stderr == "superv: --lists goes with --json\n"


def test_the_overview_keeps_one_ssh_connection_per_host(fleet: Fleet,  # noqa: F811
                                                        superv_env: SupervEnv) -> None:
    superv_env.superv("start", "mine", "--", "sleep", "600", check=True)  # its supervisor up
    one, two = fleet.boxes["one"], fleet.boxes["two"]
    one.superv("start", "alpha", "--", "sleep", "600", check=True)
    two.superv("start", "beta", "--", "sleep", "600", check=True)
    term = Tmux(fleet.laptop, superv_env.root)
    try:
        keep = " ".join(f"{k}={shlex.quote(v)}" for k, v in fleet.laptop.items()
                        if k in ("SUPERV_SSH_CONFIG", "XDG_CONFIG_HOME", "HOME"))
        pane = "main"
        status = term.new_command(pane, f"env {keep} {SUPERV} top")
        term.wait_for(pane, lambda s: " alpha " in s and " beta " in s, timeout=30)
        # A session created on host one is an event that needs a fresh list: asked for
        # and answered on the same connection.
        one.superv("start", "gamma", "--", "sleep", "600", check=True)
        screen = term.wait_for(pane, " gamma ", timeout=20)
        assert re.search(r"^one\s+gamma\s+generic", screen, re.M), screen
        for alias in ("one", "two"):
            logins = [ln for ln in fleet.servers[alias].log_lines if "Accepted publickey" in ln]
            assert len(logins) == 1, (alias, logins)
            assert len(fleet.servers[alias].connections()) == 1
        # One superv child per host below the overview (no ls beside it).
        shell = term.pane_pid(pane)
        overview = subprocess.run(["pgrep", "-P", str(shell)], capture_output=True, text=True,
                                  check=True).stdout.strip()
        found = subprocess.run(["pgrep", "-P", str(overview)], capture_output=True, text=True)
        kids = [Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[3:]
                for pid in found.stdout.split()]
        assert sorted(kids) == [[b"events", b"--json", b"--lists", f"{h}:".encode(), b""]
                                for h in ("one", "two")], kids
        term.keys(pane, "q")
        assert term.wait_status(status) == 0
    finally:
        term.kill_server()


OLD_SUPERV = """#!/bin/sh
# A superv from before events --lists, as its argument parser answers the overview.
echo "superv: unrecognized arguments: --lists (see 'superv events --help')" >&2
exit 2
"""


def test_a_host_whose_superv_predates_lists_is_shown_as_needing_an_upgrade(
        fleet: Fleet, superv_env: SupervEnv, tmp_path: Path) -> None:  # noqa: F811
    old = tmp_path / "old-superv"
    old.write_text(OLD_SUPERV)
    old.chmod(0o755)
    laptop = {**fleet.laptop, "SUPERV_REMOTE_COMMAND": str(old)}
    term = Tmux(laptop, superv_env.root)
    try:
        keep = " ".join(f"{k}={shlex.quote(v)}" for k, v in laptop.items()
                        if k in ("SUPERV_SSH_CONFIG", "XDG_CONFIG_HOME", "HOME",
                                 "SUPERV_REMOTE_COMMAND"))
        pane = "main"
        status = term.new_command(pane, f"env {keep} {SUPERV} top")
        screen = term.wait_for(pane, lambda s: s.count("its superv is too old") == 2, timeout=30)
        assert re.search(r"^one\s+\(unreachable: its superv is too old for the overview", screen,
                         re.M), screen
        term.keys(pane, "q")
        assert term.wait_status(status) == 0
    finally:
        term.kill_server()
