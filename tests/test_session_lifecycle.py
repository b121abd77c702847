"""End to end, the lifecycle rules the supervisor carries out (supervisor/lifecycle.py
decides them; tests/test_lifecycle.py tests the decisions alone): resume the moment an end
is shown, a resume keeps the session's command, a refused stop changes nothing, and what
on-failure does after a crash and after a reboot."""

from __future__ import annotations

import json
import math
import os
import signal
import time

import pytest
from conftest import SupervEnv, wait_until
from test_cli import (
    ECHOER,
    TICKER,
    EventStream,
    alive,
    lock_holder,
    log_bytes,
    one_line_error,
    read_until,
    script,
    sessions,
    sigkill_and_wait,
    start,
    superv_proc,
    supervisor_log_events,
    wait_log,
    when,
)

from agent_worker import protocol as p
from agent_worker.atomic import read_json_with_fallback
from agent_worker.client import Connection, SessionClient
from agent_worker.snapshot import read_snapshot

pytestmark = pytest.mark.timeout(90)


def test_an_ended_session_is_resumable_the_moment_ls_shows_it_ended(superv_env: SupervEnv) -> None:
    senv = superv_env
    start(senv, "r", *script(senv, "echoer", ECHOER))
    wait_log(senv, "r", b"ready")
    # A client still reading keeps the ended worker lingering (up to a minute).
    watcher = superv_proc(senv, "attach", "-r", "r")
    try:
        read_until(watcher.stdout, b"ready")
        old_worker = sessions(senv)["r"]["worker_pid"]
        senv.superv("send", "--enter", "r", "exit 5", check=True)
        wait_until(lambda: sessions(senv)["r"]["state"] == "exited 5", message="ls to show the end")
        assert alive(old_worker), "the ended worker was meant to linger"
        resumed = senv.superv("resume", "r")
        assert resumed.returncode == 0, resumed.stderr
        now = sessions(senv)["r"]
        assert now["state"] == "running" and now["worker_pid"] != old_worker
        assert not alive(old_worker)
        wait_until(lambda: log_bytes(senv, "r").count(b"ready") == 2, message="the second run")
    finally:
        watcher.kill()
        watcher.communicate(timeout=10)


def test_resume_keeps_the_command_the_session_was_started_with(superv_env: SupervEnv) -> None:
    senv = superv_env
    argv = ["sh", "-c", "echo first-run"]
    start(senv, "keep", *argv, opts=("--resume-cmd", "sh -c 'echo resumed-run; exec sleep 100'"))
    wait_until(lambda: sessions(senv)["keep"]["state"] == "exited 0")
    # (Once its worker is gone: resuming at once is the test above.)
    wait_until(lambda: not (senv.run / "sessions" / "keep.sock").exists(), timeout=15)
    senv.superv("resume", "keep", check=True)
    wait_log(senv, "keep", b"resumed-run\r\n")
    assert sessions(senv)["keep"]["command"] == argv
    spec = json.loads((senv.session_dir("keep") / "spec.json").read_text())
    assert spec["argv"] == argv
    assert spec["resumed_argv"] == ["sh", "-c", "echo resumed-run; exec sleep 100"]
    record = json.loads(senv.superv("export", "--format", "jsonl", "keep", check=True)
                        .stdout.splitlines()[0])
    assert record["command"] == argv and record["resumed_command"] == spec["resumed_argv"]
    assert record["state"] == "running"


def test_a_refused_stop_leaves_the_restart_policy_alone(superv_env: SupervEnv) -> None:
    senv = superv_env
    senv.env["SUPERV_RESTART_BACKOFF"] = "0.1"
    start(senv, "keeper", *script(senv, "ticker", TICKER), opts=("--restart", "always"))
    wait_log(senv, "keeper", b"tick 1")
    for grace in ("-1", "1e12", "inf", "nan", "soon"):
        line = one_line_error(senv.superv("stop", "--grace", grace, "keeper"), 2)
        assert "grace" in line, line
    # The same from a client that skips the CLI's check.
    for grace in (-1, 1e12, float("inf"), float("nan"), "10", None):
        with Connection.open(senv.run / "supervisor.sock") as conn:
            conn.send(p.Request({"op": "stop", "name": "keeper", "grace": grace}))
            reply = conn.receive()
        if isinstance(reply, p.Error) and isinstance(grace, float) and not math.isfinite(grace):
            continue  # the codec may refuse a number JSON cannot carry before we see it
        assert isinstance(reply, p.Reply) and not reply.body["ok"], (grace, reply)
        assert reply.body.get("usage") and "grace" in reply.body["error"]
    assert sessions(senv)["keeper"]["state"] == "running"
    # The policy still holds: a crash is restarted.
    senv.superv("kill", "-s", "KILL", "keeper", check=True)
    wait_until(lambda: supervisor_log_events(senv, "started", "keeper")[1:], timeout=20,
               message="keeper restarted after its crash")
    # Read as the supervisor reads it: a save renames registry.json to .prev before the new
    # copy takes its place, so a plain read can meet no file at all (it did, once).
    registry, _ = read_json_with_fallback(senv.home / "registry.json")
    assert not any(e["user_stopped"] for e in registry["sessions"])


CHATTY = """\
import time
for i in range(40000):
    print(f"line {i:06} " + "y" * 60, flush=i % 1000 == 0)
print("chatted", flush=True)
time.sleep(1000)
"""


def test_an_end_the_welcome_tells_counts_at_once(superv_env: SupervEnv) -> None:
    # The agent ends while no supervisor watches; its worker lingers, for a client that
    # has not read its output yet (it never will).  The next supervisor's watch connection
    # comes after the end, so no ``exited`` event comes: only its Welcome says so, and
    # that must count at once, not when the worker goes (a minute later).
    senv = superv_env
    senv.env["SUPERV_RESTART_BACKOFF"] = "0.3"
    start(senv, "late", *script(senv, "chatty", CHATTY), opts=("--restart", "on-failure"))
    wait_log(senv, "late", b"chatted")
    listed = sessions(senv)["late"]
    hello = p.Hello(p.Start.OFFSET, 0, read_only=True)
    with SessionClient.open(senv.run / "sessions" / "late.sock", hello):
        sigkill_and_wait(lock_holder(senv))
        os.kill(listed["agent_pid"], signal.SIGTERM)
        wait_until(lambda: read_snapshot(senv.session_dir("late"))[0].state == "killed SIGTERM",
                   message="the worker to record its agent's end")
        assert alive(listed["worker_pid"]), "the worker was meant to linger for its reader"
        sessions(senv)  # a new supervisor, which finds the worker alive and its agent ended
        wait_until(lambda: supervisor_log_events(senv, "started", "late")[1:], timeout=20,
                   message="the restart, before the lingering worker goes by itself")
    assert supervisor_log_events(senv, "adopted", "late")
    (announced,) = supervisor_log_events(senv, "restarting", "late")
    started = when(supervisor_log_events(senv, "started", "late")[1])
    assert started - when(announced) >= float(announced["delay"]) == 0.3


def test_on_failure_brings_back_a_crash_but_not_a_reboot(superv_env: SupervEnv) -> None:
    senv = superv_env
    senv.env["SUPERV_RESTART_BACKOFF"] = "0.1"
    for name in ("crashes", "rebooted"):
        start(senv, name, *script(senv, "ticker", TICKER), opts=("--restart", "on-failure"))
        wait_log(senv, name, b"tick 1")
    listed = sessions(senv)

    # Its worker dies on this boot: interrupted counts as a failure, and it comes back.
    sigkill_and_wait(listed["crashes"]["worker_pid"])
    wait_until(lambda: supervisor_log_events(senv, "started", "crashes")[1:], timeout=20,
               message="the crashed session to be restarted")
    assert b"[superv: restarted (attempt 1) after interrupted" in log_bytes(senv, "crashes")

    # The other one ran on a boot that is over (its processes died with it).
    sigkill_and_wait(lock_holder(senv))
    sigkill_and_wait(listed["rebooted"]["worker_pid"])  # first: it must not see its agent end
    if alive(listed["rebooted"]["agent_pid"]):
        sigkill_and_wait(listed["rebooted"]["agent_pid"])
    for path in (senv.home / "registry.json", senv.session_dir("rebooted") / "state.json"):
        data = json.loads(path.read_text())
        for record in data.get("sessions", [data]):
            if record["name"] == "rebooted":
                record["worker_boot" if "sessions" in data else "boot_id"] = "an-earlier-boot"
        path.write_text(json.dumps(data))
    after = sessions(senv)  # the new supervisor decides at its start, before it answers
    assert after["rebooted"]["state"] == "interrupted"
    time.sleep(1)  # ten backoffs: the absence of a restart is the point
    assert supervisor_log_events(senv, "restarting", "rebooted") == []
    assert sessions(senv)["rebooted"]["state"] == "interrupted"
    assert after["crashes"]["state"] == "running"
    # It is resumable by hand, as the README says.
    senv.superv("resume", "rebooted", check=True)
    assert sessions(senv)["rebooted"]["state"] == "running"


def test_a_stall_is_reported_once_per_stretch_without_output(superv_env: SupervEnv) -> None:
    senv = superv_env
    senv.env["SUPERV_STALL_AFTER"] = "1"
    start(senv, "probe", *script(senv, "ticker", TICKER))  # never quiet: never stalled
    events = EventStream(senv)
    try:
        events.subscribe("probe")
        start(senv, "quiet", "sh", "-c", "echo one; sleep 2.5; echo two; exec sleep 100")

        def stalls() -> list[dict]:
            events.pull(0.1)
            return [e for e in events.seen if e.get("event") == "stalled"]

        wait_until(lambda: len(stalls()) >= 2, timeout=20, message="two stalls of quiet")
        time.sleep(1.5)  # three rechecks: the absence of a repeat is the point
        found = stalls()
        assert [e["session"] for e in found] == ["quiet", "quiet"], found
        assert all(e["idle"] >= 1 for e in found)
        assert b"two" in log_bytes(senv, "quiet")  # the second stall came after new output
    finally:
        events.close()


@pytest.mark.parametrize("registry", [
    "[]", '{"sessions": "abc"}', "{", '{"sessions": [[], {"name": 5}, {"name": "a", "restarts": "x"}]}',
])
def test_a_malformed_registry_costs_nothing_its_session_files_can_tell(
        superv_env: SupervEnv, registry: str) -> None:
    senv = superv_env
    start(senv, "a", *script(senv, "ticker", TICKER))
    start(senv, "b", "sh", "-c", "echo done")
    wait_until(lambda: sessions(senv)["b"]["state"] == "exited 0")
    worker = sessions(senv)["a"]["worker_pid"]
    sigkill_and_wait(lock_holder(senv))
    for name in ("registry.json", "registry.json.prev"):
        (senv.home / name).write_text(registry)
    (senv.session_dir("b") / "state.json").write_text("[]")  # and one bad snapshot
    (senv.session_dir("b") / "state.json.prev").unlink(missing_ok=True)
    after = sessions(senv)
    assert after["a"]["state"] == "running" and after["a"]["worker_pid"] == worker
    assert set(after) == {"a", "b"}
    assert "registry_warning" in (senv.home / "supervisor.log").read_text()
