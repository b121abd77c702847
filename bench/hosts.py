"""Session hosts driven the way a user drives them: dtach, tmux, screen and superv.

Each host instance gets its own private directory (sockets, config) and its own
``BENCH_TAG``, and :meth:`Host.close` stops it politely and then sweeps every process
carrying the tag, server included, so that a failed workload leaves nothing behind.

The raw-PTY baseline is not a host: it is the session's program in a PTY read directly
by the benchmark, see :func:`raw_session`.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.harness import (
    COLS,
    REPO,
    ROWS,
    RUN_TAG,
    BenchError,
    Terminal,
    sweep,
    tagged_env,
    wait_for,
)

_counter = 0


class Host:
    name = "?"

    def __init__(self, scratch: Path) -> None:
        global _counter
        _counter += 1
        self.tag = f"{RUN_TAG}-{self.name}-{_counter}"
        self.dir = Path(tempfile.mkdtemp(prefix=f"{self.name[:2]}", dir=scratch))
        os.chmod(self.dir, 0o700)
        self.env = tagged_env(self.tag, self.extra_env())
        self.sessions: list[str] = []

    @classmethod
    def unavailable(cls, attach: bool = True) -> str | None:
        """Why this host cannot run here (``attach``: with a client attached), or None."""
        return None

    def extra_env(self) -> dict[str, str]:
        return {}

    def run(self, argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            argv,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            cwd=self.dir,
        )
        if proc.returncode != 0:
            raise BenchError(f"{' '.join(argv[:4])}... exited {proc.returncode}: {proc.stderr.strip()}")
        return proc

    def start(self, sid: str, argv: list[str]) -> None:
        """Start a detached session running ``argv``; return once it runs."""
        raise NotImplementedError

    def attach_argv(self, sid: str) -> list[str]:
        raise NotImplementedError

    def attach(self, sid: str) -> Terminal:
        """Run the attach command in a new terminal we own (120x40)."""
        return Terminal(self.attach_argv(sid), self.env, cwd=str(self.dir))

    def stop_politely(self) -> None:
        pass

    def close(self) -> None:
        try:
            with contextlib.suppress(Exception):
                self.stop_politely()
        finally:
            sweep("BENCH_TAG", self.tag)
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> Host:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _missing(binary: str) -> str | None:
    return None if shutil.which(binary) else f"{binary} is not installed (run bench/setup as root)"


class Dtach(Host):
    name = "dtach"

    @classmethod
    def unavailable(cls, attach: bool = True) -> str | None:
        return _missing("dtach")

    def sock(self, sid: str) -> str:
        return str(self.dir / f"{sid}.sock")

    def start(self, sid: str, argv: list[str]) -> None:
        # -n: create the session without attaching; -z: no suspend key, like the others.
        self.run(["dtach", "-n", self.sock(sid), "-z", *argv])
        wait_for(lambda: Path(self.sock(sid)).exists(), 10, f"dtach socket {sid}")
        self.sessions.append(sid)

    def attach_argv(self, sid: str) -> list[str]:
        # -r none: dtach has no screen to restore; the default Ctrl-L redraw would be typed
        # into the benchmark's program as input.
        return ["dtach", "-a", self.sock(sid), "-r", "none", "-z"]


class Tmux(Host):
    name = "tmux"

    @classmethod
    def unavailable(cls, attach: bool = True) -> str | None:
        return _missing("tmux")

    def tmux(self) -> list[str]:
        # Its own server socket and no config file: nothing from the user's tmux leaks in.
        return ["tmux", "-S", str(self.dir / "tmux.sock"), "-f", "/dev/null"]

    def start(self, sid: str, argv: list[str]) -> None:
        # With more than one argument tmux executes the command directly, without a shell.
        self.run([*self.tmux(), "new-session", "-d", "-s", sid, "-x", str(COLS), "-y", str(ROWS), *argv])
        self.sessions.append(sid)

    def attach_argv(self, sid: str) -> list[str]:
        return [*self.tmux(), "attach-session", "-t", sid]

    def stop_politely(self) -> None:
        if self.sessions:
            subprocess.run([*self.tmux(), "kill-server"], env=self.env, capture_output=True, timeout=10)


class Screen(Host):
    name = "screen"

    @classmethod
    def unavailable(cls, attach: bool = True) -> str | None:
        return _missing("screen")

    def extra_env(self) -> dict[str, str]:
        screens = self.dir / "screens"
        screens.mkdir(mode=0o700)
        (self.dir / "screenrc").write_text("")
        # Its own socket directory: `screen -ls` here sees only this run's sessions.
        return {"SCREENDIR": str(screens)}

    def screen(self) -> list[str]:
        # An empty user screenrc; Debian's /etc/screenrc still applies, as for any user.
        return ["screen", "-c", str(self.dir / "screenrc")]

    def start(self, sid: str, argv: list[str]) -> None:
        self.run([*self.screen(), "-dmS", sid, *argv])
        screens = self.dir / "screens"
        wait_for(lambda: any(p.name.endswith(f".{sid}") for p in screens.iterdir()), 10, f"screen {sid}")
        self.sessions.append(sid)

    def attach_argv(self, sid: str) -> list[str]:
        return [*self.screen(), "-r", sid]

    def stop_politely(self) -> None:
        for sid in self.sessions:
            subprocess.run(
                [*self.screen(), "-S", sid, "-X", "quit"],
                env=self.env,
                capture_output=True,
                timeout=10,
            )


class Superv(Host):
    """superv through its CLI, as a user runs it.

    Until ``superv start`` exists, sessions can still be started by running the worker
    directly (``python -m agent_worker NAME`` after writing its spec, which is what the
    supervisor does), so that worker memory and snapshot cost can be measured early.
    """

    name = "superv"

    @staticmethod
    @functools.cache
    def has_cli() -> bool:
        """Whether ``superv start`` and ``superv attach`` exist and parse, asked once per run.

        Asking the CLI itself (not looking for files) keeps a half-built tree from counting
        as available; asking once keeps a tree that changes mid-run from mixing modes.
        """
        script = Path(sys.executable).parent / "superv"
        superv = [str(script)] if script.exists() else [sys.executable, "-m", "supervisor"]
        env = tagged_env(f"{RUN_TAG}-probe")
        return all(
            subprocess.run(
                [*superv, command, "--help"],
                env=env,
                capture_output=True,
                timeout=30,
                stdin=subprocess.DEVNULL,
            ).returncode
            == 0
            for command in ("start", "attach")
        )

    @classmethod
    def unavailable(cls, attach: bool = True) -> str | None:
        if not (REPO / "agent_worker/__main__.py").exists():
            return "not built yet (agent_worker/__main__.py missing)"
        if attach and not cls.has_cli():
            return "not built yet (`superv start/attach --help` fail)"
        return None

    def extra_env(self) -> dict[str, str]:
        return {
            "SUPERV_HOME": str(self.dir / "home"),
            "SUPERV_RUNTIME_DIR": str(self.dir / "run"),
        }

    @property
    def home(self) -> Path:
        return self.dir / "home"

    def superv(self) -> list[str]:
        # The console script a user runs, if installed; else the same code by module.
        script = Path(sys.executable).parent / "superv"
        return [str(script)] if script.exists() else [sys.executable, "-m", "supervisor"]

    def start(self, sid: str, argv: list[str]) -> None:
        if self.has_cli():
            self.run([*self.superv(), "start", sid, "--", *argv])
        else:
            self.start_worker_directly(sid, argv)
        self.sessions.append(sid)

    def start_worker_directly(self, sid: str, argv: list[str]) -> None:
        from agent_worker.spec import SessionSpec

        directory = self.session_dir(sid)
        directory.mkdir(parents=True, exist_ok=True)
        SessionSpec(name=sid, argv=argv, cwd=str(self.dir), env=dict(self.env), rows=ROWS, cols=COLS).write(
            directory
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "agent_worker", sid],
            env=self.env,
            cwd=self.dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        assert proc.stdout is not None
        ready = proc.stdout.readline()
        proc.stdout.close()
        if b'"ok": true' not in ready:
            raise BenchError(f"agent_worker {sid} did not start: {ready!r}")

    # Options for ``superv attach`` (the drain bench asks for ``--exact``: it checks every
    # byte, and by default a client behind by more than 0.5 s is skipped to the screen).
    attach_options: tuple[str, ...] = ()

    def attach_argv(self, sid: str) -> list[str]:
        return [*self.superv(), "attach", *self.attach_options, sid]

    def session_dir(self, sid: str) -> Path:
        return self.home / "sessions" / sid

    def stop_politely(self) -> None:
        # Processes the daemon starts keep SUPERV_HOME even if they drop BENCH_TAG.
        sweep("SUPERV_HOME", str(self.home))


class SupervPythonLoop(Superv):
    """superv with its hot path's Python loop only (``SUPERV_HOT_PATH=python``, as where
    the native lane could not be built): what the lane buys, measured in the same run."""

    name = "superv-py"

    def extra_env(self) -> dict[str, str]:
        return {**super().extra_env(), "SUPERV_HOT_PATH": "python"}


PEERS: list[type[Host]] = [Dtach, Tmux, Screen]
ALL_HOSTS: list[type[Host]] = [*PEERS, Superv]


def raw_session(argv: list[str], scratch: Path) -> Terminal:
    """The baseline: ``argv`` in a cooked PTY that the benchmark reads itself."""
    return Terminal(argv, tagged_env(f"{RUN_TAG}-raw"), cwd=str(scratch), raw=False)
