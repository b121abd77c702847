"""Fault suite: every session file malformed in every way, the supervisor restarted.

One session's ``spec.json`` or ``state.json`` (its previous copy gone too), or the home's
``registry.json``, is replaced by garbage, a truncated copy, nothing, the wrong JSON type,
wrong field types, a huge value or deep nesting; then the supervisor is restarted.  The
other session must be untouched (same worker, running, its screen and log served), ``ls``
must answer, and every command about the broken session must end with at most one line
on stderr, never a traceback.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import time
from collections.abc import Callable
from pathlib import Path

import fault_report
import pytest
from conftest import SupervEnv, wait_until
from test_cli import alive, lock_holder, sessions

pytestmark = pytest.mark.timeout(240)

AGENT = ["sh", "-c", "echo up; exec sleep 1000"]


def malformations(original: bytes) -> dict[str, bytes]:
    """Every way a JSON file can be wrong, made from a good copy of it."""
    value = json.loads(original)
    wrong_fields = {k: (["x"] if not isinstance(v, list) else 12) for k, v in value.items()} \
        if isinstance(value, dict) else {"x": 1}
    return {
        "garbage": b"\x00\xff\xfe garbage \x9c" * 20,
        "truncated": original[: len(original) // 2],
        "empty": b"",
        "a list": b"[]",
        "a string": b'"abc"',
        "a number": b"1e999",
        "wrong field types": json.dumps(wrong_fields).encode(),
        "huge": json.dumps({"name": "x" * (8 << 20)}).encode(),
        "deep": b"[" * 200_000 + b"]" * 200_000,
    }


def one_line_at_most(proc, what: str) -> str | None:
    """None if ``proc`` ended cleanly (0, or 1/2 with one line on stderr), else why not."""
    err = proc.stderr.strip()
    if "Traceback" in err or len(err.splitlines()) > 1:
        return f"{what}: exit {proc.returncode}, stderr {err[-300:]!r}"
    # (doctor says what is wrong on stdout, with exit 1)
    if proc.returncode not in (0, 1, 2) or (proc.returncode and not err and what[-6:] != "doctor"):
        return f"{what}: exit {proc.returncode} with stderr {err!r}"
    return None


def commands_about(senv: SupervEnv, case: str, commands: tuple[tuple[str, ...], ...], *,
                   must_succeed: bool = False) -> list[str]:
    problems = []
    for args in commands:
        proc = senv.superv(*args, timeout=30)
        if (problem := one_line_at_most(proc, f"{case}: superv {' '.join(args)}")):
            problems.append(problem)
        elif must_succeed and proc.returncode != 0:
            problems.append(f"{case}: superv {' '.join(args)} failed: {proc.stderr.strip()!r}")
    return problems


def restart_supervisor(senv: SupervEnv) -> bool:
    """Stop the supervisor (the next command starts it); False if it had died already."""
    old = lock_holder(senv)
    if not alive(old):
        return False
    os.kill(old, signal.SIGTERM)  # the workers keep running, as after an upgrade
    wait_until(lambda: not alive(old), timeout=20, message="the supervisor to exit")
    return True


def bystander_untouched(senv: SupervEnv, case: str, before: dict, names: tuple[str, ...]) -> list[str]:
    """``ls`` answers, and ``names`` are running with the workers they had ``before``."""
    ls = senv.superv("ls", "--json", timeout=30)
    if ls.returncode != 0:
        return [f"{case}: ls exited {ls.returncode}: {ls.stderr.strip()[-200:]!r}"]
    now = {s["name"]: s for s in json.loads(ls.stdout)}
    problems = []
    for name in names:
        got = now.get(name)
        if not got or got["state"] != "running" or got["worker_pid"] != before[name]["worker_pid"]:
            problems.append(f"{case}: {name} is {got and (got['state'], got['worker_pid'])}")
    return problems


def finish(senv: SupervEnv, before: dict, what: str, ways: int, problems: list[str]) -> None:
    for name, info in before.items():
        assert alive(info["worker_pid"]), f"{name}'s worker died"
    problems += commands_about(senv, "after all", (("peek", "bystander"), ("logs", "bystander")),
                               must_succeed=True)
    fault_report.note(f"malformed {what}: {ways} ways, supervisor restarted; {len(problems)} problems")
    fault_report.add("bad inputs tried", ways)
    fault_report.add("faults injected", ways)
    assert not problems, "\n".join(problems)


def index_malformations(original: bytes) -> dict[str, bytes]:
    """Every way the log's time index (16-byte records: offset u64, time f64) can be wrong."""
    record = struct.Struct("!Qd")
    return {
        "garbage": b"\x00\xff\xfe garbage \x9c" * 20,
        "truncated": original[: len(original) - 5],
        "empty": b"",
        "huge": os.urandom(8 << 20),
        "offsets past the log": record.pack(1 << 60, time.time()) * 3,
        "offsets going back": record.pack(50, 1.0) + record.pack(10, 2.0) + record.pack(0, 3.0),
        "times not numbers": record.pack(0, float("nan")) + record.pack(1, float("inf")),
    }


# Each session file, how to break it, and the commands that read it (besides ls, peek, doctor).
SESSION_FILES: tuple[tuple[str, Callable[[bytes], dict[str, bytes]], tuple[str, ...]], ...] = (
    ("spec.json", malformations, ("export",)),
    ("state.json", malformations, ("export",)),
    ("output.idx", index_malformations, ("export", "logs --since 1h")),
)


def test_malformed_session_files_cost_their_own_session_only(superv_env: SupervEnv) -> None:
    """One victim session per file and malformation, all broken at once, one restart: each
    costs its own session at most, and the bystander nothing."""
    senv = superv_env
    senv.superv("start", "bystander", "--", *AGENT, check=True)
    senv.superv("start", "model", "--", *AGENT, check=True)
    model = senv.session_dir("model")
    wait_until(lambda: all((model / f).exists() for f, _, _ in SESSION_FILES), message="its files")
    victims = {}  # name: (file, bad contents, commands)
    for file_name, make_ways, commands in SESSION_FILES:
        for how, data in make_ways((model / file_name).read_bytes()).items():
            victims[f"v-{file_name.split('.')[0]}-{how.replace(' ', '-')}"] = (file_name, data, commands)
    for name in victims:
        senv.superv("start", name, "--", *AGENT, check=True)
    before = sessions(senv)
    assert restart_supervisor(senv)
    for name, (file_name, data, _) in victims.items():
        path = senv.session_dir(name) / file_name
        path.write_bytes(data)
        Path(str(path) + ".prev").unlink(missing_ok=True)
    problems = bystander_untouched(senv, f"session files broken {len(victims)} ways", before,
                                   ("bystander", "model"))
    for name, (file_name, _, commands) in victims.items():
        problems += commands_about(senv, f"{file_name} of {name}",
                                   tuple((*command.split(), name) for command in commands))
    problems += commands_about(senv, "session files broken", (("ls",), ("doctor",), ("peek", name)))
    ways = ", ".join(f"{f} {sum(1 for v in victims.values() if v[0] == f)}" for f, _, _ in SESSION_FILES)
    finish(senv, before, f"session files ({ways})", len(victims), problems)


def test_malformed_registry_loses_no_session(superv_env: SupervEnv) -> None:
    """The registry is the supervisor's own: each malformation in turn, then a restart;
    every session is still there, running under the worker it had."""
    senv = superv_env
    for name in ("victim", "bystander"):
        senv.superv("start", name, "--", *AGENT, check=True)
    before = sessions(senv)
    path = senv.home / "registry.json"
    original = path.read_bytes()
    ways = malformations(original)
    problems: list[str] = []
    for how, data in ways.items():
        if not restart_supervisor(senv):
            problems.append(f"before registry.json {how}: the supervisor had died")
        path.write_bytes(data)
        Path(str(path) + ".prev").unlink(missing_ok=True)
        problems += bystander_untouched(senv, f"registry.json {how}", before, ("victim", "bystander"))
    finish(senv, before, "registry.json", len(ways), problems)


def test_resume_and_rm_of_a_session_whose_files_were_tampered_with(superv_env: SupervEnv) -> None:
    """A spec.json that cannot be read: resume says what to do (exit 1, not a usage error).
    A symlink put in place of a session's directory: rm removes the link, not what it
    names, and the session is gone for good (not back after the supervisor restarts)."""
    senv = superv_env
    for name in ("broken", "linked"):
        senv.superv("start", name, "--", "true", check=True)
    wait_until(lambda: all(sessions(senv)[n]["state"] == "exited 0" for n in ("broken", "linked")),
               message="both ended")
    spec = senv.session_dir("broken") / "spec.json"
    spec.write_text("{")
    Path(str(spec) + ".prev").unlink(missing_ok=True)
    proc = senv.superv("resume", "broken")
    assert proc.returncode == 1 and not one_line_at_most(proc, "resume"), proc
    assert "mend it from its .prev copy" in proc.stderr, proc.stderr

    real = senv.root / "elsewhere"
    senv.session_dir("linked").rename(real)
    senv.session_dir("linked").symlink_to(real)
    senv.superv("rm", "linked", check=True)
    assert not os.path.lexists(senv.session_dir("linked")) and (real / "spec.json").exists()
    assert restart_supervisor(senv)
    assert "linked" not in sessions(senv)
