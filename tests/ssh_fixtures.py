"""pytest fixtures for a real OpenSSH server; import them into a test module to use them.

``sshd`` is a started :class:`sshd.SshServer` whose sessions share the test's
``superv_env`` (SUPERV_HOME, SUPERV_RUNTIME_DIR, PYTHONPATH), so a ``superv`` run by sshd
sees the sessions the test started.  ``sshd_factory`` starts more, with another PATH (for
"superv is not installed there").  Teardown kills every sshd and everything below it.
If sshd is missing the fixture fails: these tests must not silently skip.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import REPO, SupervEnv
from sshd import VENV_BIN, SshServer

SshFactory = Callable[..., SshServer]


def session_env(senv: SupervEnv) -> dict[str, str]:
    return {
        "SUPERV_HOME": str(senv.home),
        "SUPERV_RUNTIME_DIR": str(senv.run),
        "PYTHONPATH": str(REPO),
    }


@pytest.fixture(scope="session")
def superv_installed() -> Path:
    """The ``superv`` script sshd's sessions run: the checkout, installed in editable mode."""
    script = VENV_BIN / "superv"
    if not script.exists():
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
             "-e", str(REPO)],
            check=True,
            timeout=300,
        )
    assert script.exists(), f"{script} is missing after 'pip install -e .'"
    return script


@pytest.fixture
def sshd_factory(superv_env: SupervEnv, superv_installed: Path) -> Iterator[SshFactory]:
    started: list[SshServer] = []

    def start(path: str | None = None) -> SshServer:
        root = superv_env.root / f"ssh{len(started)}"
        server = SshServer(root, session_env(superv_env), path=path)
        started.append(server)
        return server.start()

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def sshd(sshd_factory: SshFactory) -> SshServer:
    return sshd_factory()
