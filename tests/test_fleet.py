"""The fleet (issue 11 item 4): ``superv ls --all`` over the config file's hosts, ``superv
events HOST:`` and ``superv approve HOST:NAME``, over two real sshds on 127.0.0.1, each a
"host" with its own SUPERV_HOME; one of them is frozen, then stopped, mid-test."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from conftest import SupervEnv, isolated_env, wait_until
from ssh_fixtures import session_env, superv_installed  # noqa: F401  (the fixture)
from sshd import VENV_BIN, SshServer

SUPERV = str(VENV_BIN / "superv")
pytestmark = pytest.mark.timeout(120)


@attrs.define
class Fleet:
    laptop: dict[str, str]  # the environment of the superv under test
    boxes: dict[str, SupervEnv]  # each host's own SUPERV_HOME, by its ssh alias
    servers: dict[str, SshServer]

    def superv(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([SUPERV, *args], env=self.laptop, capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)


def host_config(server: SshServer, alias: str) -> str:
    """The server's ``box`` entry of its ssh config, under ``alias``."""
    entry = server.config.read_text().split("\n\n")[0]
    return entry.replace("Host box", f"Host {alias}", 1) + "\n\n"


@pytest.fixture
def fleet(superv_env: SupervEnv, superv_installed: Path) -> Iterator[Fleet]:  # noqa: F811
    with isolated_env() as one, isolated_env() as two:
        boxes = {"one": one, "two": two}
        servers: dict[str, SshServer] = {}
        try:
            for alias, box in boxes.items():
                servers[alias] = SshServer(box.root / "sshd", session_env(box)).start()
            ssh_config = superv_env.root / "ssh_config"
            ssh_config.write_text("".join(host_config(s, a) for a, s in servers.items()))
            config = superv_env.root / "xdg" / "superv" / "config.toml"
            config.parent.mkdir(parents=True)
            config.write_text('hosts = ["one", "two"]\n')
            laptop_home = superv_env.root / "laptop"
            laptop_home.mkdir()
            laptop = {**superv_env.env, "SUPERV_SSH_CONFIG": str(ssh_config),
                      "XDG_CONFIG_HOME": str(config.parent.parent), "HOME": str(laptop_home)}
            laptop.pop("SSH_AUTH_SOCK", None)
            yield Fleet(laptop, boxes, servers)
        finally:
            for server in servers.values():
                server.stop()


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()]


def test_ls_all_lists_every_host_and_a_stuck_one_slows_no_other(fleet: Fleet,
                                                                 superv_env: SupervEnv) -> None:
    superv_env.superv("start", "mine", "--", "sleep", "600", check=True)
    fleet.boxes["one"].superv("start", "alpha", "--", "sleep", "600", check=True)
    fleet.boxes["two"].superv("start", "beta", "--", "sleep", "600", check=True)

    listed = fleet.superv("ls", "--all")
    assert listed.returncode == 0, listed.stderr
    table = rows(listed.stdout)
    assert table[0][:3] == ["HOST", "NAME", "STATE"]
    own = table[1][0]
    assert [(r[0], r[1], r[2]) for r in table[1:]] == [
        (own, "mine", "running"), ("one", "alpha", "running"), ("two", "beta", "running")]
    as_json = json.loads(fleet.superv("ls", "--all", "--json").stdout)
    assert sorted((s["host"], s["name"]) for s in as_json["sessions"]) == [
        ("one", "alpha"), ("two", "beta"), (own, "mine")]
    assert [h["problem"] for h in as_json["hosts"]] == [None, None, None]

    # Host two's sshd frozen: it accepts the TCP connection and never says a word.
    server = fleet.servers["two"]
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        started = time.monotonic()
        stuck = fleet.superv("ls", "--all", "--timeout", "3")
        took = time.monotonic() - started
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert stuck.returncode == 0, stuck.stderr
    table = rows(stuck.stdout)
    assert [r[:3] for r in table[1:3]] == [[own, "mine", "running"], ["one", "alpha", "running"]]
    assert table[3][:3] == ["two", "-", "unreachable"] and "no answer in 3 s" in stuck.stdout
    assert took < 3 + 5, f"ls --all took {took:.1f} s with a 3 s per-host timeout"

    server.stop()  # host two gone: refused at once
    gone = fleet.superv("ls", "--all", "--json")
    assert gone.returncode == 0, gone.stderr
    hosts = json.loads(gone.stdout)["hosts"]
    assert hosts[1] == {"host": "one", "problem": None}
    assert hosts[2]["host"] == "two" and "cannot" in hosts[2]["problem"], hosts


def test_ls_all_says_which_remote_command_a_host_lacks(fleet: Fleet) -> None:
    laptop = {**fleet.laptop, "SUPERV_REMOTE_COMMAND": "/nowhere/superv"}
    listed = subprocess.run([SUPERV, "ls", "--all", "--json"], env=laptop, capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert listed.returncode == 0, listed.stderr
    problems = {h["host"]: h["problem"] for h in json.loads(listed.stdout)["hosts"][1:]}
    assert problems == {
        host: f"remote command '/nowhere/superv' not found on {host}: check SUPERV_REMOTE_COMMAND"
        for host in ("one", "two")}, problems


def test_ls_all_without_hosts_lists_this_box(superv_env: SupervEnv, tmp_path: Path) -> None:
    superv_env.superv("start", "solo", "--", "sleep", "600", check=True)
    env = {**superv_env.env, "XDG_CONFIG_HOME": str(tmp_path)}  # no config file at all
    listed = subprocess.run([SUPERV, "ls", "--all"], env=env, capture_output=True, text=True,
                            timeout=30, stdin=subprocess.DEVNULL)
    assert listed.returncode == 0, listed.stderr
    table = rows(listed.stdout)
    assert table[0][0] == "HOST" and [r[1] for r in table[1:]] == ["solo"]
    bad = subprocess.run([SUPERV, "ls", "--all", "box:"], env=env, capture_output=True,
                         text=True, timeout=30, stdin=subprocess.DEVNULL)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1


def test_events_and_approve_over_ssh(fleet: Fleet) -> None:
    events = subprocess.Popen([SUPERV, "events", "--json", "one:"], env=fleet.laptop,
                              stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    try:
        assert events.stdout is not None
        # Start sessions until the stream (once connected) reports one: no guessed delay.
        seen: list[dict[str, object]] = []
        deadline = time.monotonic() + 60
        n = 0
        while not any(e.get("event") == "started" for e in seen):
            assert time.monotonic() < deadline, "no started event came through ssh"
            fleet.boxes["one"].superv("start", f"s{n}", "--", "sleep", "600", check=True)
            n += 1
            while select.select([events.stdout], [], [], 2)[0]:
                line = events.stdout.readline()
                assert line, "superv events one: ended"
                seen.append(json.loads(line))
                if seen[-1].get("event") == "started":
                    break
        assert str(seen[-1]["session"]).startswith("s")
    finally:
        events.terminate()
        events.wait(timeout=10)

    refused = fleet.superv("approve", "one:s0")
    assert refused.returncode == 1
    assert refused.stderr == ("superv: s0 takes no answers from outside (approve and deny "
                              "answer running Claude Code, Codex, aider and Gemini sessions; "
                              "others: superv attach one:s0)\n")  # as run from here
    missing = fleet.superv("deny", "two:nosuch")
    assert (missing.returncode, missing.stderr) == (
        1, "superv: no session named nosuch: 'superv ls two:' lists them\n")


def _session(box: SupervEnv, name: str) -> dict[str, object]:
    listed = json.loads(box.superv("ls", "--json", check=True).stdout)
    return next(s for s in listed if s["name"] == name)


def test_send_kill_stop_resume_take_host_name(fleet: Fleet, tmp_path: Path) -> None:
    one = fleet.boxes["one"]
    # Echoes what it reads; says so on SIGUSR1; the shell's own marker file proves no
    # word of ours was run by a shell on the box.
    script = ("trap 'echo got usr1' USR1; while :; do read -r line && echo \"read: $line\"; "
              "sleep 0.05; done")
    one.superv("start", "c", "--", "sh", "-c", script, check=True)
    pwned = tmp_path / "pwned"
    text = ["-dash", f"$(touch {pwned})", "'a b'", ";", "ok"]
    sent = fleet.superv("send", "--enter", "one:c", "--", *text)
    assert sent.returncode == 0, sent.stderr
    wanted = "read: -dash $(touch " + str(pwned) + ") 'a b' ; ok"
    # (from the log: a screen line wraps at the terminal's width)
    wait_until(lambda: wanted in one.superv("logs", "--plain", "c").stdout, timeout=20)
    assert not pwned.exists()

    killed = fleet.superv("kill", "-s", "USR1", "one:c")
    assert killed.returncode == 0, killed.stderr
    wait_until(lambda: "got usr1" in one.superv("peek", "c").stdout, timeout=20)

    stopped = fleet.superv("stop", "--grace", "2", "one:c")
    assert stopped.returncode == 0, stopped.stderr
    assert stopped.stdout.startswith("c: ") and _session(one, "c")["state"] != "running"
    again = fleet.superv("stop", "one:c")  # the box's own refusal, passed through
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "c" in again.stderr

    resumed = fleet.superv("resume", "one:c")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed c" in resumed.stdout and _session(one, "c")["state"] == "running"
    assert fleet.superv("send", "one:c", "hi", "--enter").returncode == 0
    wait_until(lambda: "read: hi" in one.superv("peek", "c").stdout, timeout=20)
    # Bytes that are not UTF-8 reach the box's session as those bytes.
    sent = fleet.superv("send", "--enter", "one:c", os.fsdecode(b"caf\xe9"))
    assert sent.returncode == 0, sent.stderr
    wait_until(lambda: b"read: caf\xe9" in (one.session_dir("c") / "output.log").read_bytes(),
               timeout=20)

    # A bad name is refused here, before any connection; nothing pressed on box two.
    for verb in (["send", "two:-x", "hi"], ["stop", "two:a/b"], ["kill", "two:..."],
                 ["resume", "two:"]):
        bad = fleet.superv(*verb)
        assert bad.returncode != 0 and bad.stderr.count("\n") == 1, (verb, bad.stderr)


def test_a_changed_host_key_refuses_stop_and_send(fleet: Fleet, tmp_path: Path) -> None:
    from sshd import keygen

    one = fleet.boxes["one"]
    one.superv("start", "k", "--", "sleep", "600", check=True)
    server = fleet.servers["one"]
    imposter = keygen(tmp_path / "imposter", "imposter")
    changed = tmp_path / "changed_known_hosts"
    changed.write_text(f"[127.0.0.1]:{server.port} {imposter}\n")
    laptop = {**fleet.laptop, "SUPERV_KNOWN_HOSTS": str(changed)}
    for verb in (["stop", "one:k"], ["send", "one:k", "x"], ["kill", "one:k"], ["resume", "one:k"]):
        done = subprocess.run([SUPERV, *verb], env=laptop, capture_output=True, text=True,
                              timeout=60, stdin=subprocess.DEVNULL)
        assert done.returncode == 1 and "host key of one has CHANGED" in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1
    assert _session(one, "k")["state"] == "running"
