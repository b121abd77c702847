"""The overview over the fleet, through tmux: two "hosts" (two real sshds on 127.0.0.1,
each with its own SUPERV_HOME) beside this box; one host is stopped mid-test and shown as
unreachable while the other's sessions stay and change."""

from __future__ import annotations

import re
import shlex

import pytest
from conftest import SupervEnv
from ssh_fixtures import superv_installed  # noqa: F401  (the fixture)
from test_fleet import Fleet, fleet  # noqa: F401  (the fixture)
from tmux_helpers import SUPERV, Tmux

pytestmark = pytest.mark.timeout(120)


def line_of(screen: str, name: str) -> str:
    return next((ln for ln in screen.splitlines() if f" {name} " in ln), "")


def test_overview_shows_every_host_and_one_that_goes_away(fleet: Fleet,  # noqa: F811
                                                          superv_env: SupervEnv) -> None:
    superv_env.superv("start", "mine", "--", "sleep", "600", check=True)
    one, two = fleet.boxes["one"], fleet.boxes["two"]
    go = one.root / "go"
    one.superv("start", "alpha", "--", "sh", "-c",
               f"echo hi; while [ ! -e {go} ]; do sleep 0.1; done; while :; do echo busy; sleep 0.2; done",
               check=True)
    two.superv("start", "beta", "--", "sleep", "600", check=True)
    term = Tmux(fleet.laptop, superv_env.root)
    try:
        keep = " ".join(f"{k}={shlex.quote(v)}" for k, v in fleet.laptop.items()
                        if k in ("SUPERV_SSH_CONFIG", "XDG_CONFIG_HOME", "HOME"))
        pane = "main"
        status = term.new_command(pane, f"env {keep} {SUPERV} top")
        screen = term.wait_for(pane, lambda s: " alpha " in s and " beta " in s and " mine " in s,
                               timeout=30)
        assert re.search(r"^one\s+alpha\s+generic", screen, re.M), screen
        assert re.search(r"^two\s+beta\s+generic", screen, re.M), screen
        # A remote session's change arrives over its host's events stream.
        term.wait_for(pane, lambda s: re.search(r"(idle|done)", line_of(s, "alpha")), timeout=20)
        go.touch()
        term.wait_for(pane, lambda s: "working" in line_of(s, "alpha"), timeout=20)
        # Host two goes away: shown as such; one and this box carry on.
        fleet.servers["two"].stop()
        screen = term.wait_for(pane, re.compile(r"^two\s+\(unreachable", re.M), timeout=20)
        assert " beta " not in screen and " alpha " in screen and " mine " in screen
        # Keys act on a remote row through its host: select alpha (peek's title names the
        # selected row), stop it, resume it.
        for move in ("j", "k", "k", ""):  # down first, then up: wherever it was
            term.keys(pane, "p")
            title = term.wait_for(pane, re.compile(r"^peek \S+ \(any key", re.M), timeout=20)
            term.keys(pane, "p")  # p again leaves the preview (Escape waits for ESCDELAY)
            term.wait_for(pane, lambda s: "ATTENTION" in s, timeout=10)
            if "peek one:alpha " in title:
                break
            if move:
                term.keys(pane, move)
        assert "peek one:alpha " in title, title
        term.keys(pane, "s")
        term.keys(pane, "y")
        term.wait_for(pane, "stop one:alpha: done", timeout=30)
        term.wait_for(pane, lambda s: "ended" in line_of(s, "alpha"), timeout=20)
        assert one.superv("ls", check=True).stdout.count("running") == 0
        term.keys(pane, "r")
        term.wait_for(pane, "resume one:alpha: done", timeout=30)
        term.wait_for(pane, lambda s: "working" in line_of(s, "alpha"), timeout=20)
        term.keys(pane, "q")
        assert term.wait_status(status) == 0
    finally:
        term.kill_server()
