"""Notifications: the config file, what a change means, the debounce, and delivery by
webhook, ntfy and a command from a real supervisor following a scripted agent."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import SupervEnv, wait_until
from notify_helpers import Received, http_sink
from ssh_fixtures import sshd, sshd_factory, superv_installed  # noqa: F401
from sshd import SshServer
from test_remote_attach import SUPERV as REMOTE_SUPERV
from test_remote_attach import Tmux as RemoteTmux
from test_remote_attach import client_env
from tmux_helpers import HEIGHT, Tmux

from agent_worker.activity import approvals, hook_client
from supervisor import config as cfg
from supervisor.notify import message
from supervisor.notify.attach_notices import render as render_notice


def write_config(senv: SupervEnv, text: str) -> Path:
    config_home = senv.root / "config"
    (config_home / "superv").mkdir(parents=True, exist_ok=True)
    path = config_home / "superv" / "config.toml"
    path.write_text(text)
    senv.env["XDG_CONFIG_HOME"] = str(config_home)
    return path


# ---- the config file -----------------------------------------------------------------


@pytest.mark.parametrize("text, error", [
    ('[notify]\nwebhok = "http://x"', "notify.webhok: unknown key"),
    ('[notify]\nwebhook = "ftp://x/y"', "notify.webhook: 'ftp://x/y' is not an http(s) URL"),
    ('[notify]\nntfy = "http://h:99999/t"', "notify.ntfy: 'http://h:99999/t' has a bad port"),
    ('[notify]\non = ["needs_approval", "nap"]', "notify.on: 'nap' is not one of"),
    ('[notify]\ncommand = "notify-send hi"', "notify.command: must be a non-empty list"),
    ('[notify]\nbell = "yes"', "notify.bell: must be true or false"),
    ('[notify]\ncommand_timeout = 0', "notify.command_timeout: must be a number"),
    ('[notify]\nquiet_turn = "10"', "notify.quiet_turn: must be a number"),
    ('[notify.session.x]\nonn = []', "notify.session.x.onn: unknown key"),
    ('hosts = "box"', "hosts: must be a list"),
    ('hosts = ["box", "box"]', "hosts: names a host twice"),
    ('hosts = ["-oProxyCommand=x"]', "hosts: '-oProxyCommand=x' is not a host name"),
    # '$' matched before a final newline: these were accepted, and broke ls --all's table.
    ('hosts = ["box\\n"]', "hosts: 'box\\n' is not a host name"),
    ('[notify]\nhost = "box\\n"', "notify.host: must be a host name"),
    ('[notify]\nwebhook = "http://h/a\\nb"', "notify.webhook: 'http://h/a\\nb' is not an http(s) URL"),
    ('colour = 1', "colour: unknown key"),
    ('[notify', "not valid TOML"),
])
def test_a_bad_config_is_one_line_naming_the_key(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(text)
    with pytest.raises(cfg.ConfigError) as caught:
        cfg.load(path)
    assert error in str(caught.value)
    assert "\n" not in str(caught.value)


def test_a_good_config_with_overrides(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('hosts = ["box", "me@gpu"]\n[notify]\nwebhook = "https://h/x?k=1"\n'
                    'bell = true\nhost = "box"\n[notify.agent.claude]\non = ["error"]\n'
                    '[notify.session.quiet]\non = []\n')
    conf = cfg.load(path)
    assert conf.hosts == ("box", "me@gpu")
    n = conf.notify
    assert n.routes() == ["webhook", "bell"]
    assert n.wants("idle", "a", None) and n.wants("idle", "a", "codex")
    assert not n.wants("idle", "a", "claude") and n.wants("error", "a", "claude")
    assert not n.wants("error", "quiet", "claude")
    assert cfg.load(tmp_path / "none.toml").notify.routes() == []


# ---- what a change means, and the debounce ---------------------------------------------


def test_changes_and_their_lines() -> None:
    approval = {"event": "activity", "session": "fix-tests", "activity": "needs_approval",
                "previous": "working", "attention": "Bash: rm -rf build"}
    assert message.change_of(approval) == "needs_approval"
    assert message.line("box", "fix-tests", "needs_approval", approval) == \
        "box:fix-tests needs approval: Bash: rm -rf build"
    limit = {"event": "activity", "activity": "idle", "previous": "working",
             "attention": "turn failed: rate_limit"}
    assert message.change_of(limit) == "error"
    assert message.line("box", "s", "error", limit) == "box:s turn failed: rate_limit"
    assert message.change_of({"event": "activity", "activity": "idle", "previous": "working"}) == "idle"
    assert message.change_of({"event": "activity", "activity": "idle", "previous": "starting"}) is None
    exited = {"event": "exited", "state": "exited 3"}
    assert message.change_of(exited) == "ended"
    assert message.line("box", "s", "ended", exited) == "box:s ended: exited 3"
    assert message.change_of({"event": "stalled", "idle": 300}) == "stalled"
    assert message.change_of({"event": "attached"}) is None
    gave_up = {"event": "restart_limit", "restarts": 5}
    assert message.change_of(gave_up) == "error"
    assert message.line("box", "s", "error", gave_up) == "box:s keeps failing: not restarted after 5 restarts"
    failed = {"event": "launch_failed", "error": "no such program: clade"}
    assert message.line("box", "s", "error", failed) == "box:s failed to start: no such program: clade"
    held = {"event": "log_write_failed", "error": "[Errno 28] No space left on device"}
    assert message.change_of(held) == "error"
    assert message.line("box", "s", "error", held) == (
        "box:s is held: the disk refused its log ([Errno 28] No space left on device); "
        "nothing is lost, it goes on once there is room")
    assert message.change_of({**held, "ongoing": True}) is None  # told before a restart
    assert message.change_of({"event": "log_write_resumed"}) is None


def test_a_flicker_sends_nothing_and_a_lasting_change_once() -> None:
    d = message.Debouncer(settle=0.5)
    d.activity("s", ("idle", None), {"n": 1}, now=0.0)
    d.activity("s", None, None, now=0.2)  # back to working within the settle time
    assert d.due(10.0) == [] and d.next_due() is None
    d.activity("s", ("needs_approval", "Bash: ls"), {"n": 2}, now=1.0)
    assert d.due(1.4) == []
    assert d.due(1.5) == [{"n": 2}]
    d.activity("s", ("needs_approval", "Bash: ls"), {"n": 3}, now=2.0)  # the same again
    assert d.due(9.0) == []
    d.activity("s", ("needs_approval", "Bash: rm"), {"n": 4}, now=3.0)  # another request
    assert d.due(9.0) == [{"n": 4}]


def test_a_quiet_time_pause_is_a_finished_turn_only_after_real_work() -> None:
    q = message.QuietTurns()
    q.see("s", "working", "output", 0.0, 10)
    q.see("s", "idle", "output", 2.0, 10)  # printed once, paused
    assert not q.turn_ended("s", 2.0, 10)
    for t in range(3, 30, 3):  # a line every 3 s: short pauses do not restart the count
        q.see("s", "working", "output", float(t), 10)
        q.see("s", "idle", "output", t + 2.0, 10)
    assert q.turn_ended("s", 29.0, 10)
    q.see("s", "working", "output", 45.0, 10)  # after a long pause: a new stretch of work
    q.see("s", "idle", "output", 47.0, 10)
    assert not q.turn_ended("s", 47.0, 10)
    q.see("s", "needs_input", "terminal", 48.0, 10)  # an exact signal: counting starts again
    assert not q.turn_ended("s", 60.0, 10)
    d = message.Debouncer(settle=0.4)
    d.activity("s", ("idle", None), {"n": 1}, now=0.0, settle=10)
    assert d.due(9.9) == [] and d.due(10.0) == [{"n": 1}]


# ---- a real supervisor, a scripted agent, a real HTTP server ---------------------------


_held: list[Received] = []


def _next(got: queue.Queue[Received], path: str, timeout: float = 20) -> Received:
    """The next request to ``path``; the others are held for their own turn."""
    deadline = time.monotonic() + timeout
    while True:
        for item in _held:
            if item.path == path:
                _held.remove(item)
                return item
        _held.append(got.get(timeout=max(0.01, deadline - time.monotonic())))


@pytest.mark.timeout(90)
def test_webhook_and_ntfy_get_each_lasting_change(superv_env: SupervEnv, tmp_path: Path) -> None:
    senv = superv_env
    go = tmp_path / "go"
    with http_sink() as (base, got):
        record = tmp_path / "command.jsonl"
        ours = tuple(k for k in senv.env if k.startswith("SUPERV_"))  # the test environment's
        program = ("import json, os, sys; open(sys.argv[1], 'a').write(json.dumps({'stdin': "
                   "sys.stdin.read(), 'env': {k: v for k, v in os.environ.items() "
                   f"if k.startswith('SUPERV_') and k not in {ours!r}}}}}) + '\\n')")
        command = json.dumps([sys.executable, "-c", program, str(record)])
        write_config(senv, f'[notify]\non = ["needs_input", "idle", "ended"]\nhost = "box"\n'
                           f'webhook = "{base}/hook"\nntfy = "{base}/topic?auth=secret"\n'
                           f'command = {command}\nquiet_turn = 2.5\n')
        # The demo agent prints a line every 3 s: quiet time calls it idle after each one,
        # for a second.  Those pauses are not finished turns: it must send nothing.
        demo = Path(__file__).parent.parent / "scripts" / "demo-agent"
        senv.superv("start", "demo", "--", sys.executable, str(demo), check=True)
        # Works for 3 s, goes quiet (a turn finished), then asks with a BEL, then ends.
        script = (f"for i in 1 2 3 4 5 6 7 8 9 10; do echo working $i; sleep 0.3; done; "
                  f"while [ ! -e {go} ]; do sleep 0.05; done; "
                  f"printf 'Continue? \\a'; read answer; echo got $answer; exit 3")
        started = time.time()
        senv.superv("start", "g", "--", "sh", "-c", script, check=True)
        idle = _next(got, "/hook")
        quiet_at = time.time()
        body = json.loads(idle.body)
        assert idle.headers["Content-Type"] == "application/json"
        assert body == {"host": "box", "session": "g", "reason": "idle", "activity": "idle",
                        "attention": None, "message": "box:g finished its turn",
                        "agent": "generic", "time": body["time"]}
        assert started <= body["time"] <= time.time()
        # Told once the quiet had lasted quiet_turn, after the tracker's 2 s of quiet.
        assert quiet_at - started >= 3.0 + 2.0 + 2.5 - 0.5, quiet_at - started
        ran = json.loads(wait_until(lambda: record.exists() and record.read_text()).splitlines()[0])
        assert json.loads(ran["stdin"]) == body  # the same JSON on the command's stdin
        assert ran["env"] == {"SUPERV_HOST": "box", "SUPERV_SESSION": "g", "SUPERV_REASON": "idle",
                              "SUPERV_ACTIVITY": "idle", "SUPERV_ATTENTION": "",
                              "SUPERV_MESSAGE": "box:g finished its turn", "SUPERV_AGENT": "generic"}
        ntfy = _next(got, "/topic?auth=secret")
        assert ntfy.body == b"box:g finished its turn"
        assert (ntfy.headers["Title"], ntfy.headers["Priority"], ntfy.headers["Tags"]) == \
            ("superv box:g", "default", "robot")

        go.touch()
        asking = json.loads(_next(got, "/hook").body)
        assert (asking["reason"], asking["activity"]) == ("needs_input", "needs_input")
        assert asking["message"].startswith("box:g needs input")
        ntfy = _next(got, "/topic?auth=secret")
        assert ntfy.headers["Priority"] == "high" and ntfy.body.startswith(b"box:g needs input")

        senv.superv("send", "--enter", "g", "yes", check=True)
        ended = json.loads(_next(got, "/hook").body)
        assert (ended["reason"], ended["activity"], ended["message"]) == \
            ("ended", "ended", "box:g ended: exited 3")
        time.sleep(1.0)  # nothing else comes: the process's end is told once
        _next(got, "/topic?auth=secret")
        # The demo agent has paused after 4 lines, each pause past the old settle time.
        wait_until(lambda: "step 5:" in senv.superv("peek", "demo").stdout, timeout=30)
        rest = _held + [got.get() for _ in range(got.qsize())]
        assert rest == []


@pytest.mark.timeout(120)
def test_notify_test_reports_each_route(superv_env: SupervEnv) -> None:
    senv = superv_env
    with http_sink() as (base, got), http_sink(status=500) as (broken, _):
        write_config(senv, f'[notify]\nwebhook = "{base}/hook"\nntfy = "{broken}/t"\n'
                           f'command = ["false"]\nbell = true\nhost = "box"\n')
        proc = senv.superv("notify", "test")
        assert proc.returncode == 1
        lines = proc.stdout.splitlines()
        assert lines[0].startswith("ok    webhook: ") and "answered 200" in lines[0]
        assert lines[1] == f"FAIL  ntfy: {broken}/t answered 500"
        assert lines[2] == "FAIL  command: false exited 1"
        assert lines[3].startswith("ok    bell: on")
        assert proc.stderr == "superv: 2 notification route(s) failed\n"
        assert json.loads(got.get(timeout=5).body)["reason"] == "test"
    write_config(senv, "[notify]\nbel = true\n")
    proc = senv.superv("notify", "test")
    assert proc.returncode == 1 and proc.stderr.startswith("superv: config.toml: notify.bel: unknown key")
    doctor = senv.superv("doctor")
    assert "FAIL  config: config.toml: notify.bel: unknown key" in doctor.stdout
    write_config(senv, '[notify]\ncommand = ["no-such-notifier"]\n')
    assert "notify.command: no-such-notifier is not on PATH" in senv.superv("doctor").stdout


@pytest.mark.parametrize("text, error", [
    ('webhook = "http://[::1"', "notify.webhook: 'http://[::1' is not an http(s) URL"),
    ('ntfy = "https://[zz]/topic"', "notify.ntfy: 'https://[zz]/topic' is not an http(s) URL"),
    ('command = ["a\\u0000b"]', "notify.command: has a NUL character"),
    ('command = ["/bin/sh\\u0000x"]', "notify.command: has a NUL character"),
])
def test_a_bad_url_or_command_is_a_config_error_not_a_traceback(superv_env: SupervEnv, text: str,
                                                                 error: str) -> None:
    """Found when the file is read: notify test and doctor say it in one line (they
    printed a traceback from urlsplit or from a NUL in an argv)."""
    senv = superv_env
    write_config(senv, f"[notify]\n{text}\n")
    proc = senv.superv("notify", "test")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"superv: config.toml: {error}"), proc.stderr
    doctor = senv.superv("doctor")
    assert "Traceback" not in doctor.stdout + doctor.stderr, doctor.stderr
    assert f"FAIL  config: config.toml: {error}" in doctor.stdout


def _ls_times(senv: SupervEnv, n: int) -> list[float]:
    times = []
    for _ in range(n):
        t0 = time.monotonic()
        senv.superv("ls", check=True)
        times.append(time.monotonic() - t0)
    return sorted(times)


@pytest.mark.timeout(180)
def test_a_hung_or_failing_command_never_slows_the_supervisor(superv_env: SupervEnv,
                                                               tmp_path: Path) -> None:
    senv = superv_env
    pids = tmp_path / "pids"
    write_config(senv, f'[notify]\non = ["working", "idle"]\ncommand_timeout = 2\n'
                       f'command = ["sh", "-c", "echo $$ >> {pids}; cat > /dev/null; sleep 60"]\n')
    senv.superv("start", "quiet", "--", "sleep", "1000", check=True)
    before = _ls_times(senv, 20)
    # Works for a moment, goes quiet for 2 s, again and again: each change runs the command.
    senv.superv("start", "busy", "--", "sh", "-c",
                "while :; do echo tick; sleep 0.1; echo tock; sleep 2.6; done", check=True)
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) >= 2, timeout=30)
    during = _ls_times(senv, 20)
    p99_before, p99_during = before[-1], during[-1]
    assert p99_during < 2 * p99_before + 0.5, (before, during)
    # Each hung command was killed at its timeout, its whole group.
    first = int(pids.read_text().split()[0])
    wait_until(lambda: not os.path.exists(f"/proc/{first}"), timeout=10)
    log = (senv.home / "supervisor.log").read_text()
    assert log.count("notify_failed") == 1, log  # logged once, not once per notification
    assert "took longer than 2 s and was killed" in log


# ---- attached clients ----------------------------------------------------------------


def test_a_notice_is_rendered_safely_with_the_bell_asked_for() -> None:
    body = {"event": "notice", "message": "box:s needs approval: Bash: \x1b]0;pwned\x07ls",
            "bell": True}
    out = render_notice(body, 24, 80, term="xterm-256color")
    assert out.count(b"\x1b]") == 1  # the agent's OSC was defused, ours is the only one
    assert b"\x1b]9;box:s needs approval: Bash:  ]0;pwned ls\x1b\\" in out
    assert out.endswith(b"\x07")
    assert b"\x1b]777;notify;superv;box:s" in render_notice(body, 24, 80, term="foot")
    quiet = render_notice(dict(body, bell=False), 24, 20, term="xterm")
    assert b"\x07" not in quiet and b"\x1b]" not in quiet
    assert " box:s needs appro… ".encode() in quiet  # cut to the width


def two_sessions_b_asks_after(senv: SupervEnv, tmp_path: Path) -> Path:
    """Session a prints "I am A"; b rings a BEL (needs_input) once the returned file exists."""
    go = tmp_path / "go"
    write_config(senv, '[notify]\non = ["needs_input"]\nhost = "box"\n')
    senv.superv("start", "a", "--", "sh", "-c", "echo I am A; sleep 1000", check=True)
    senv.superv("start", "b", "--", "sh", "-c",
                f"while [ ! -e {go} ]; do sleep 0.05; done; printf 'Go on? \\a'; sleep 1000",
                check=True)
    return go


@pytest.mark.timeout(90)
def test_a_client_attached_to_a_sees_bs_notice(superv_env: SupervEnv, tmp_path: Path) -> None:
    senv = superv_env
    go = two_sessions_b_asks_after(senv, tmp_path)
    tmux = Tmux(senv.env, tmp_path)
    try:
        tmux.new_session("t")
        tmux.type("t", "$SUPERV attach a")
        tmux.wait_for("t", "I am A")
        go.touch()
        screen = tmux.wait_for("t", lambda s: s.split("\n")[HEIGHT - 1].startswith(" box:b needs input"),
                               timeout=20)
        assert "I am A" in screen
        # Shown for a moment, then the status line is cleared.
        tmux.wait_for("t", lambda s: "box:b" not in s, timeout=15)
        tmux.keys("t", "C-\\")
        tmux.wait_for("t", "[detached from a]")
    finally:
        tmux.kill_server()


def _following_events(senv: SupervEnv) -> bool:
    """Whether a ``superv events --json`` runs in this home (the remote client's channel)."""
    for pid in senv.pids():
        with contextlib.suppress(OSError):
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if b"events" in argv and b"--json" in argv:
                return True
    return False


@pytest.mark.timeout(120)
def test_a_remote_client_attached_to_a_sees_bs_notice(
    superv_env: SupervEnv, sshd: SshServer, tmp_path: Path  # noqa: F811
) -> None:
    senv = superv_env
    go = two_sessions_b_asks_after(senv, tmp_path)
    tmux = RemoteTmux(senv.root, client_env(senv, sshd))
    try:
        tmux.type(f"{REMOTE_SUPERV} attach box:a")
        tmux.wait("I am A")
        wait_until(lambda: _following_events(senv), timeout=15, message="the events channel")
        go.touch()
        tmux.wait(r"(?m)^ box:b needs input", timeout=20)
        wait_until(lambda: "box:b" not in tmux.screen(), timeout=15, message="the notice cleared")
        tmux.key("C-\\")
        tmux.wait(r"detached from")
    finally:
        tmux.kill()


@pytest.mark.timeout(120)
def test_every_change_from_a_hooked_agent_reaches_the_webhook(superv_env: SupervEnv,
                                                              tmp_path: Path) -> None:
    """A claude-kind session whose "agent" is a silent script; the test plays Claude Code's
    part through the real hook client, one hook at a time, each change left to settle."""
    from agent_worker.activity.hooks import CLIENT

    senv = superv_env
    senv.env["SUPERV_STALL_AFTER"] = "2"
    with http_sink() as (base, got):
        write_config(senv, f'[notify]\nhost = "box"\nwebhook = "{base}/hook"\n'
                           f'on = ["working", "needs_approval", "needs_input", "idle", "ended", '
                           f'"stalled", "error"]\n')
        agent = tmp_path / "claude"  # takes our --settings and says nothing
        agent.write_text("#!/bin/sh\nread x\nexit 0\n")
        agent.chmod(0o755)
        senv.superv("start", "e", "--", str(agent), check=True)
        stalled = json.loads(_next(got, "/hook").body)  # it printed nothing for 2 s
        assert (stalled["reason"], stalled["message"]) == ("stalled", "box:e stalled: no output for 2 s")
        sock = str(hook_socket_path(senv))

        held: list[subprocess.Popen[bytes]] = []

        def hook(payload: dict[str, object]) -> dict[str, object]:
            proc = subprocess.Popen([sys.executable, "-I", "-S", str(CLIENT), sock, "e",
                                     json.dumps(payload)], env=senv.env)
            if payload["hook_event_name"] == "PermissionRequest":
                # Claude Code runs it beside its prompt; the worker holds it for superv
                # approve/deny until the prompt is gone (the next change lets it go).
                held.append(proc)
            else:
                assert proc.wait(timeout=10) == 0
            return json.loads(_next(got, "/hook").body)

        steps = [
            ({"hook_event_name": "UserPromptSubmit", "prompt": "clean"}, "working", "box:e is working"),
            ({"hook_event_name": "PermissionRequest", "tool_name": "Bash",
              "tool_input": {"command": "rm -rf build"}},
             "needs_approval", "box:e needs approval: Bash: rm -rf build"),
            ({"hook_event_name": "PostToolUse", "tool_name": "Bash"}, "working", "box:e is working"),
            ({"hook_event_name": "Stop"}, "idle", "box:e finished its turn"),
            ({"hook_event_name": "UserPromptSubmit", "prompt": "more"}, "working", "box:e is working"),
            ({"hook_event_name": "PreToolUse", "tool_name": "AskUserQuestion",
              "tool_input": {"questions": [{"question": "Which one?"}]}},
             "needs_input", "box:e needs input: Which one?"),
            ({"hook_event_name": "UserPromptSubmit", "prompt": "a"}, "working", "box:e is working"),
            ({"hook_event_name": "StopFailure", "error": "rate_limit"},
             "error", "box:e turn failed: rate_limit"),
        ]
        for payload, reason, line in steps:
            body = hook(payload)
            assert (body["reason"], body["message"], body["agent"]) == (reason, line, "claude"), payload
        assert [proc.wait(timeout=10) for proc in held] == [0]
        # A flicker: an approval answered within the settle time is never sent.
        assert hook({"hook_event_name": "UserPromptSubmit", "prompt": "b"})["reason"] == "working"
        asking = {"hook_event_name": "PermissionRequest", "tool_name": "Bash",
                  "tool_input": {"command": "ls"}}
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as call:  # as the client does
            call.settimeout(10)
            call.connect(sock)
            call.sendall(json.dumps({"session": "e", "payload": asking}).encode())
            call.shutdown(socket.SHUT_WR)
            assert call.recv(4096) == approvals.HELD + b"\n"  # taken and held: fast
            answered = {"hook_event_name": "PostToolUse", "tool_name": "Bash"}
            assert hook_client.main(["hook", sock, "e", json.dumps(answered)]) == 0  # in-process
            assert call.recv(4096) == b""  # let go without a decision
        assert hook({"hook_event_name": "Stop"})["reason"] == "idle"
        senv.superv("send", "--enter", "e", "bye", check=True)
        ended = json.loads(_next(got, "/hook").body)
        assert (ended["reason"], ended["message"]) == ("ended", "box:e ended: exited 0")


def hook_socket_path(senv: SupervEnv) -> Path:
    """The session's hook socket, as the worker names it (in this test's runtime dir)."""
    code = "import sys; from agent_worker.activity.monitor import hook_socket; print(hook_socket('e'))"
    out = subprocess.run([sys.executable, "-c", code], env=senv.env, capture_output=True,
                         text=True, check=True, timeout=30).stdout.strip()
    return Path(out)


@pytest.mark.timeout(90)
def test_a_config_broken_while_running_is_logged_once_and_the_last_good_one_kept(
    superv_env: SupervEnv,
) -> None:
    senv = superv_env
    with http_sink() as (base, got):
        path = write_config(senv, f'[notify]\non = ["idle"]\nwebhook = "{base}/hook"\n'
                                  'quiet_turn = 0.5\n')
        senv.superv("start", "g", "--", "sh", "-c",
                    "echo a; sleep 0.3; echo b; read x; echo c; sleep 0.3; echo d; read y",
                    check=True)
        assert json.loads(_next(got, "/hook").body)["reason"] == "idle"
        path.write_text('[notify]\non = ["idle"]\nwebhook = "gopher://x"\n')
        senv.superv("send", "--enter", "g", "go", check=True)
        assert json.loads(_next(got, "/hook").body)["reason"] == "idle"  # the last good config
        log = (senv.home / "supervisor.log").read_text()
        assert log.count("config_invalid") == 1, log
        assert "notify.webhook: 'gopher://x' is not an http(s) URL" in log
        assert senv.superv("ls").returncode == 0


@pytest.mark.timeout(90)
def test_a_stopped_supervisor_does_not_delay_an_attach(superv_env: SupervEnv, tmp_path: Path) -> None:
    senv = superv_env
    senv.superv("start", "a", "--", "sh", "-c", "echo I am A; sleep 1000", check=True)
    daemon = next(pid for pid in senv.pids()
                  if b"daemon" in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0"))
    tmux = Tmux(senv.env, tmp_path)
    os.kill(daemon, signal.SIGSTOP)  # it accepts connections (the kernel does) and answers none
    try:
        tmux.new_session("t")
        tmux.type("t", "$SUPERV attach a")
        tmux.wait_for("t", "I am A", timeout=5)  # the events request is not waited for
        tmux.keys("t", "C-\\")
        tmux.wait_for("t", "[detached from a]")
    finally:
        os.kill(daemon, signal.SIGCONT)
        tmux.kill_server()
