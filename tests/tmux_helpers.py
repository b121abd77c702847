"""A small tmux driver: a real terminal for end-to-end tests of ``superv attach``.

Each :class:`Tmux` runs its own tmux server (``tmux -L <unique name> -f /dev/null``), so
tests never see the user's tmux nor each other.  Panes run an interactive ``bash`` with a
recognisable prompt and the test's environment (its ``SUPERV_HOME`` and runtime dir); the
test types into them with ``send-keys`` and reads the screen with ``capture-pane``, polled
until the expected text appears.  ``kill_server`` ends the server and everything in it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

PROMPT = "tsh$ "
WIDTH, HEIGHT = 100, 30

# The superv CLI of this checkout, as a command line for a shell.
_SCRIPT = Path(sys.executable).parent / "superv"
SUPERV = shlex.quote(str(_SCRIPT)) if _SCRIPT.exists() else f"{shlex.quote(sys.executable)} -m supervisor"


class Tmux:
    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        self.name = f"svt-{uuid.uuid4().hex[:10]}"
        self.cwd = cwd
        self.env = dict(env)
        self.env.pop("TMUX", None)
        self.env["SUPERV"] = SUPERV
        self.env.pop("PROMPT_COMMAND", None)
        self.env["HISTFILE"] = "/dev/null"

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["tmux", "-L", self.name, "-f", "/dev/null", *args],
            env=self.env, capture_output=True, text=True, timeout=10, check=check,
        )

    def new_session(self, session: str, command: str | None = None) -> str:
        """A detached tmux session of WIDTHxHEIGHT running ``command`` (default: a shell).

        A pane outlives its command (``remain-on-exit``), so a capture after the command
        ended reads the pane, not a server that ended with its last pane.
        """
        keep = ("SUPERV_HOME", "SUPERV_RUNTIME_DIR", "PYTHONPATH", "PATH", "SUPERV", "HISTFILE")
        exports = [f"-e{key}={self.env[key]}" for key in keep if key in self.env]
        # tmux runs the command through a non-interactive bash, which unsets PS1: set it here.
        shell = command or f"exec env PS1={shlex.quote(PROMPT)} bash --norc --noprofile -i"
        self.tmux("new-session", "-d", "-s", session, "-x", str(WIDTH), "-y", str(HEIGHT),
                  "-c", str(self.cwd), *exports, shell)
        # No status bar: the pane is the whole terminal, as over SSH.
        self.tmux("set-option", "-t", session, "status", "off")
        self.tmux("set-option", "-t", session, "remain-on-exit", "on")
        self.tmux("resize-window", "-t", session, "-x", str(WIDTH), "-y", str(HEIGHT))
        if command is None:
            self.wait_for(session, lambda s: s.rstrip().endswith(PROMPT.rstrip()))
        return session

    def new_command(self, session: str, command: str) -> Path:
        """A session running ``command`` from a shell that writes its exit status to the
        file returned (:meth:`wait_status` reads it): a pane's last output can be lost
        when its terminal closes, and tmux does not always learn the status."""
        status = self.cwd / f"{self.name}-{session}.status"
        status.unlink(missing_ok=True)
        self.new_session(session, f"{command}; echo $? > {shlex.quote(str(status))}")
        return status

    @staticmethod
    def wait_status(status: Path, timeout: float = 10.0) -> int:
        """The exit status of a :meth:`new_command` once it has ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError, ValueError):
                return int(status.read_text())
            time.sleep(0.03)
        raise AssertionError(f"timed out after {timeout}s waiting for the command to end")

    def type(self, target: str, text: str, enter: bool = True) -> None:
        """Type ``text`` literally (then Enter)."""
        if text:
            self.tmux("send-keys", "-t", target, "-l", text)
        if enter:
            self.tmux("send-keys", "-t", target, "Enter")

    def keys(self, target: str, *keys: str) -> None:
        """Send tmux key names (``C-\\\\``, ``Enter``, ``q``...)."""
        self.tmux("send-keys", "-t", target, *keys)

    def capture(self, target: str) -> str:
        return self.tmux("capture-pane", "-p", "-t", target).stdout

    def lines(self, target: str) -> list[str]:
        return [line.rstrip() for line in self.capture(target).split("\n")]

    def pane_pid(self, target: str) -> int:
        return int(self.tmux("display-message", "-p", "-t", target, "#{pane_pid}").stdout)

    def wait_for(
        self,
        target: str,
        want: str | re.Pattern[str] | Callable[[str], object],
        timeout: float = 10.0,
    ) -> str:
        """Poll the pane until ``want`` (text, regex or predicate) holds; return the screen."""
        if isinstance(want, str):
            def check(screen: str) -> object:
                return want in screen
        elif isinstance(want, re.Pattern):
            def check(screen: str) -> object:
                return want.search(screen)
        else:
            check = want
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.capture(target)
            if check(screen):
                return screen
            time.sleep(0.03)
        raise AssertionError(f"timed out after {timeout}s waiting for {want!r} in pane "
                             f"{target}; it shows:\n{screen}")

    def kill_server(self) -> None:
        self.tmux("kill-server", check=False)
        # The socket file outlives the server; remove it so nothing accumulates.
        sock = Path(os.environ.get("TMUX_TMPDIR", "/tmp")) / f"tmux-{os.getuid()}" / self.name
        with contextlib.suppress(OSError):
            sock.unlink()
