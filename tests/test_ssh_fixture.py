"""The test sshd itself: what its sessions start with.

Its sessions must not read this machine's user's shell startup files: root's ``.bashrc``
here runs ``pyenv init``, which waits up to 60 s for pyenv's rehash lock, and a rehash
killed with its ssh session leaves that lock behind, so every later ssh login in every
test started a minute late (a first connect timed out under load).
"""

from __future__ import annotations

import os
import subprocess

import pytest
from ssh_fixtures import sshd, sshd_factory, superv_installed  # noqa: F401
from sshd import SshServer


@pytest.mark.timeout(60)
def test_the_box_user_has_a_home_of_its_own(sshd: SshServer) -> None:  # noqa: F811
    proc = subprocess.run(sshd.ssh_argv('echo "$HOME"; echo "${PYENV_ROOT:-unset}"'),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=50)
    assert proc.returncode == 0, proc.stderr
    home, pyenv = proc.stdout.splitlines()
    assert home == str(sshd.box_home) != os.path.expanduser("~")
    assert pyenv == "unset", "the box's shell read this machine's startup files"
