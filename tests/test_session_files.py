"""One malformed session file costs its own session at most (issue 14 item 5), and the one
reader of each session file (issue 9 item 3)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
from conftest import SupervEnv, wait_until

from agent_worker import session_files
from agent_worker.atomic import Unreadable, previous_path
from agent_worker.procfs import is_running, read_stat
from agent_worker.snapshot import Snapshot
from agent_worker.spec import SessionSpec

pytestmark = pytest.mark.timeout(60)

DEEP = b"[" * 100_000 + b"]" * 100_000
GOOD_SPEC = SessionSpec(name="s", argv=["sleep", "1"], cwd="/", env={"A": "b"})
MALFORMED = {
    "garbage": b"\x00\xff not json",
    "truncated": json.dumps(GOOD_SPEC.to_json()).encode()[:40],
    "empty": b"",
    "list": b"[]",
    "wrong type": json.dumps({**GOOD_SPEC.to_json(), "argv": "sleep 1"}).encode(),
    "wrong inner type": json.dumps({**GOOD_SPEC.to_json(), "env": {"A": 1}}).encode(),
    "bad policy": json.dumps({**GOOD_SPEC.to_json(), "restart": "sometimes"}).encode(),
    "deep": DEEP,
    "huge": b'{"name": "' + b"x" * (session_files.MAX_JSON_BYTES + 10) + b'"}',
}


@pytest.mark.parametrize("kind", sorted(MALFORMED))
def test_every_malformed_spec_is_one_bad_file_error(tmp_path: Path, kind: str) -> None:
    (tmp_path / session_files.SPEC).write_bytes(MALFORMED[kind])
    with pytest.raises(session_files.BadFile) as caught:
        session_files.read_spec(tmp_path)
    assert str(caught.value).startswith(str(tmp_path / "spec.json"))
    assert session_files.problem(tmp_path).startswith("spec.json: ")


def test_a_good_spec_reads_back(tmp_path: Path) -> None:
    GOOD_SPEC.write(tmp_path)
    assert session_files.read_spec(tmp_path) == GOOD_SPEC
    assert session_files.problem(tmp_path) is None
    with pytest.raises(FileNotFoundError):
        session_files.read_spec(tmp_path / "nowhere")


def snapshot(seq: int) -> Snapshot:
    return Snapshot(name="s", worker_pid=1, worker_start=2, agent_pid=3, argv=["x"], cwd="/",
                    started_at=1.0, state="running", seq=seq)


@pytest.mark.parametrize("kind", ["list", "deep", "wrong type", "garbage"])
def test_a_malformed_snapshot_falls_back_to_the_previous_one(tmp_path: Path, kind: str) -> None:
    # Before: valid JSON of the wrong shape ([]) was returned as the snapshot, and broke
    # whoever used it (the supervisor did not start).
    snapshot(1).write(tmp_path)
    snapshot(2).write(tmp_path)
    wrong = json.dumps({**snapshot(3).to_json(), "seq": "3"}).encode()
    bad = wrong if kind == "wrong type" else MALFORMED[kind]
    (tmp_path / session_files.STATE).write_bytes(bad)
    snap, warning = session_files.read_state(tmp_path)
    assert snap.seq == 1 and warning and "state.json was unreadable" in warning
    previous_path(tmp_path / session_files.STATE).write_bytes(b"[]")
    with pytest.raises(Unreadable, match="previous copy: a list, not an object"):
        session_files.read_state(tmp_path)
    assert session_files.problem(tmp_path) == "spec.json: missing"  # the first problem
    GOOD_SPEC.write(tmp_path)
    assert session_files.problem(tmp_path).startswith("state.json: ")


def test_the_one_proc_stat_reader_handles_any_command_name(tmp_path: Path) -> None:
    odd = tmp_path / "a) b (c"
    odd.symlink_to("/bin/sleep")
    proc = subprocess.Popen([str(odd), "30"])
    try:
        wait_until(lambda: (read_stat(proc.pid) or (0,))[0] in ("S", "R"), message="sleep to run")
        stat = read_stat(proc.pid)
        assert stat is not None and stat.ppid == os.getpid() and stat.start_time > 0
        assert is_running(proc.pid)
    finally:
        proc.kill()
    wait_until(lambda: not is_running(proc.pid), message="the zombie to count as gone")
    proc.wait()
    assert read_stat(proc.pid) is None


def _spoil(senv: SupervEnv, name: str, file: str, data: bytes) -> None:
    path = senv.session_dir(name) / file
    path.write_bytes(data)
    if file == "state.json":
        previous_path(path).write_bytes(data)


@pytest.mark.parametrize(("file", "data"), [("spec.json", b"[]"), ("spec.json", DEEP),
                                            ("spec.json", b"{\"name\": "), ("state.json", b"[]")])
def test_one_bad_file_costs_only_its_session(superv_env: SupervEnv, file: str, data: bytes) -> None:
    # Before: [] as one spec.json made 'ls' fail for everyone, a deep one closed it silently.
    senv = superv_env
    senv.superv("start", "bad", "--", "true", check=True)
    senv.superv("start", "good", "--", "sleep", "60", check=True)
    wait_until(lambda: "exited 0" in senv.superv("ls").stdout, message="bad to end")
    _spoil(senv, "bad", file, data)
    if file == "state.json":
        # A snapshot is read when the supervisor starts: restart it on the broken file.
        pid = int((senv.home / "supervisor.lock").read_text())
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not is_running(pid), message="the supervisor to die")
    listed = senv.superv("ls", check=True).stdout
    rows = {line.split()[0]: line for line in listed.splitlines()[1:]}
    assert "running" in rows["good"]
    assert "bad" in rows
    if file == "spec.json":
        assert "unreadable" in rows["bad"] and "spec.json" in rows["bad"]
        exported = senv.superv("export", "bad")
        assert exported.returncode == 1 and exported.stderr.count("\n") == 1
        assert "cannot export bad" in exported.stderr and "Traceback" not in exported.stderr
    data_ls = json.loads(senv.superv("ls", "--json", check=True).stdout)
    assert {s["name"] for s in data_ls} == {"bad", "good"}
    doctor = json.loads(senv.superv("doctor", "--json").stdout)
    check = next(c for c in doctor if c["name"] == "session-files")
    assert not check["ok"] and "bad (" + file in check["detail"] and "good" not in check["detail"]
    senv.superv("export", "good", check=True)
    senv.superv("send", "good", "hi", check=True)
