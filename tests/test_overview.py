"""``superv top`` through tmux, as a person sees it: rows appear and change activity from
the events stream, Enter attaches and Ctrl-\\ comes back, q restores the terminal."""

from __future__ import annotations

import re

import pytest

from tests.conftest import SupervEnv
from tests.test_cli import term  # noqa: F401  (the fixture: a tmux server for the test)
from tests.tmux_helpers import PROMPT, SUPERV, Tmux


def row(screen: str, name: str) -> str:
    return next((ln for ln in screen.splitlines() if f" {name} " in ln), "")


@pytest.mark.timeout(90)
def test_overview_live_attach_detach_and_quit(superv_env: SupervEnv, term: Tmux) -> None:  # noqa: F811
    root = superv_env.root
    # "quiet" prints once and waits (quiet time: idle), then streams once go exists (working).
    superv_env.superv("start", "quiet", "--", "sh", "-c",
                      f"echo hello; while [ ! -e {root}/go ]; do sleep 0.1; done; "
                      "while :; do echo busy; sleep 0.2; done", check=True)
    pane = term.new_session("main")
    term.type(pane, f"{SUPERV} top")
    screen = term.wait_for(pane, "superv top: 1 sessions (live)")
    assert "ACTIVITY" in screen
    term.wait_for(pane, lambda s: re.search(r"quiet\s+generic\s+(idle|done)", row(s, "quiet")))
    # No attention line: the row ends with the last line it printed, not its command.
    term.wait_for(pane, lambda s: re.search(r"(idle|done)\s+\S+ hello$", row(s, "quiet")))
    # A session started after the overview appears from the events stream.
    superv_env.superv("start", "later", "--", "sh", "-c", "echo later; exec sleep 1000", check=True)
    term.wait_for(pane, "superv top: 2 sessions (live)")
    term.wait_for(pane, lambda s: re.search(r"(idle|done)\s+\S+ later$", row(s, "later")), timeout=20)
    (root / "go").touch()
    term.wait_for(pane, lambda s: "working" in row(s, "quiet"))
    # Enter attaches the selected session; Ctrl-\ detaches back to the overview.
    # Which row is selected: peek's title names it (the cursor follows its session when
    # the order changes, so it need not be the first line); p again leaves the preview.
    term.keys(pane, "p")
    title = term.wait_for(pane, re.compile(r"^peek (quiet|later) \(any key", re.M))
    target = "quiet" if "peek quiet " in title else "later"
    term.keys(pane, "p")
    term.wait_for(pane, "ATTENTION")
    term.keys(pane, "Enter")
    if target == "quiet":
        # Live output after the replay: the attach client is up and its terminal raw.
        shown = term.wait_for(pane, lambda s: "superv top" not in s and "busy" in s)
        term.wait_for(pane, lambda s: s.count("busy") >= min(shown.count("busy") + 2, 29))
    else:
        term.wait_for(pane, lambda s: "superv top" not in s and "later" in s)
    term.keys(pane, "C-\\")
    term.wait_for(pane, "superv top: 2 sessions (live)")
    # n starts a session: its name, then its command (as words, never through a shell).
    term.keys(pane, "n")
    term.wait_for(pane, "new session name:")
    term.type(pane, "fresh")
    term.wait_for(pane, "command for fresh:")
    term.type(pane, "sleep 600")
    term.wait_for(pane, lambda s: "superv top: 3 sessions (live)" in s and " fresh " in s)
    # a with nothing pending: superv approve's refusal on the bottom line, nothing else.
    term.keys(pane, "a")
    term.wait_for(pane, re.compile(r"^approve \S+: ", re.M))
    # s asks first; y stops the selected session, which then shows as ended.
    term.keys(pane, "s")
    term.wait_for(pane, re.compile(r"^stop \S+\? y/n", re.M))
    term.keys(pane, "y")
    term.wait_for(pane, lambda s: re.search(r"\bended\b", s) and ": done" in s, timeout=20)
    # q quits and gives the shell its normal screen back.
    term.keys(pane, "q")
    screen = term.wait_for(pane, lambda s: s.rstrip().endswith(PROMPT.rstrip()) and "ACTIVITY" not in s)
    # The shell's own screen is back, without the overview's nor the session's residue.
    assert "superv top" not in screen and "busy" not in screen
    term.type(pane, "stty -a | grep -o ' icanon\\| echo ' | tr -d ' ' | sort | tr '\\n' ,")
    term.wait_for(pane, "echo,icanon,")


def test_top_without_a_terminal_says_what_to_do(superv_env: SupervEnv) -> None:
    done = superv_env.superv("top")
    assert done.returncode == 2
    assert done.stderr == "superv: superv top needs a terminal (for a list: superv ls)\n"
