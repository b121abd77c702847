"""Running superv as another user, for the tests that prove another uid is refused.

The tests run as root.  The other user is created with ``useradd`` on first use.  Our
interpreter lives under /root, which another uid cannot enter, so the command runs in a
Python that imports superv as root and then drops to the other uid (setgroups, setgid,
setuid) before it does anything: every file and socket access is checked by the kernel
against the other uid, exactly as for a real login of that user.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
import textwrap

import pytest

OTHER_USER = "superv-test-other"


def other_uid() -> int:
    """The other user's uid, creating the user if needed (fails the test if it cannot)."""
    if os.getuid() != 0:
        pytest.fail("these tests must run as root: they create a second user")
    try:
        return pwd.getpwnam(OTHER_USER).pw_uid
    except KeyError:
        pass
    made = subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", OTHER_USER],
                          capture_output=True, text=True, check=False)
    if made.returncode not in (0, 9):  # 9: it exists (made by a test running beside us)
        pytest.fail(f"useradd failed: {made.stderr.strip()}")
    return pwd.getpwnam(OTHER_USER).pw_uid


# Imports all of superv as root, then becomes the uid in argv[1]; what follows runs as it.
AS_OTHER_PRELUDE = textwrap.dedent("""
    import importlib, os, pkgutil, sys
    import agent_worker, supervisor
    # Everything superv may import lazily, while we may still read our own interpreter.
    for package in (agent_worker, supervisor):
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name not in ("agent_worker.__main__", "supervisor.__main__"):
                importlib.import_module(info.name)
    import json, selectors, termios, tty, shlex, bisect, signal
    uid = int(sys.argv[1])
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    os.chdir("/")
""")
_AS_OTHER = AS_OTHER_PRELUDE + "from supervisor.cli import main\nsys.exit(main(sys.argv[2:]))\n"


def run_as_other(env: dict[str, str], *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """``superv ARGS`` as the other user, with ``env`` (pointing at root's home)."""
    return subprocess.run([sys.executable, "-c", _AS_OTHER, str(other_uid()), *args], env=env,
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
