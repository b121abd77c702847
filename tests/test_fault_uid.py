"""Fault suite: another uid (created by the test) is refused everywhere, in one line.

Our home and runtime directory are opened up (0755, sockets 0666) so that every attempt
gets past the file permissions and reaches superv's own peer-uid check: a real second
user on a box where someone loosened the modes.  Every command the CLI has, the
``attach --stdio`` bridge and the raw worker and control sockets are tried as that user.
Each must be refused (exit 1 or 2 and exactly one line on stderr, or one Error frame on a
socket), and our session must not notice: same worker, same log, no file of theirs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import fault_report
import pytest
from conftest import SupervEnv, wait_until
from other_user import AS_OTHER_PRELUDE, other_uid
from test_cli import sessions
from worker_helpers import session_socket

from agent_worker import protocol as p

pytestmark = pytest.mark.timeout(180)

COMMANDS = [
    ["ls"], ["ls", "--json"], ["start", "theirs", "--", "true"], ["attach", "-r", "mine"],
    ["attach", "mine"], ["send", "mine", "hi"], ["kill", "mine"], ["stop", "mine"],
    ["resume", "mine"], ["rm", "mine"], ["prune"], ["peek", "mine"], ["logs", "mine"],
    ["logs", "-f", "mine"], ["export", "mine"], ["events"], ["daemon"],
]

# As the other user: import all of superv while we may still read our interpreter (under
# /root), drop to the other uid, then run each command in a fork of that process (one
# interpreter start for all of them, instead of one each), or probe a raw socket.
_AS_OTHER = AS_OTHER_PRELUDE + textwrap.dedent("""
    import json, socket
    from supervisor.cli import main

    def run(args):
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.dup2(out_w, 1)
            os.dup2(err_w, 2)
            null = os.open("/dev/null", os.O_RDONLY)
            os.dup2(null, 0)
            try:
                code = main(args)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code or 0)
        os.close(out_w)
        os.close(err_w)
        out = b"".join(iter(lambda: os.read(out_r, 65536), b""))
        err = b"".join(iter(lambda: os.read(err_r, 65536), b""))
        _, status = os.waitpid(pid, 0)
        return {"args": args, "code": os.waitstatus_to_exitcode(status),
                "stdout": out.hex(), "stderr": err.decode(errors="replace")}

    def probe(path, payload):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(path)
        try:
            s.sendall(bytes.fromhex(payload))
        except OSError:
            pass
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
        except ConnectionResetError:
            pass
        return got.hex()

    jobs = json.loads(sys.argv[2])
    print(json.dumps([run(job["args"]) if "args" in job else probe(job["path"], job["payload"])
                      for job in jobs]))
""")


def as_other(env: dict[str, str], jobs: list[dict]) -> list:
    """Run ``jobs`` (``{"args": [...]}`` for a command, ``{"path", "payload"}`` for a socket
    probe) as the other user; their results, in order."""
    proc = subprocess.run([sys.executable, "-c", _AS_OTHER, str(other_uid()), json.dumps(jobs)],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def frames(data_hex: str) -> list:
    decoder = p.Decoder()
    decoder.feed(bytes.fromhex(data_hex))
    try:
        return list(decoder)
    except p.ProtocolError as exc:
        return [exc]


def refused_in_one_line(result: dict) -> str | None:
    """None if the command was refused in one line; else what went wrong."""
    lines = result["stderr"].splitlines()
    if result["code"] not in (1, 2) or len(lines) != 1 or not lines[0].startswith("superv: "):
        return f"exit {result['code']}, stderr {result['stderr'][-400:]!r}, stdout {result['stdout'][:200]}"
    return None


@pytest.fixture
def opened_home(superv_env: SupervEnv) -> SupervEnv:
    senv = superv_env
    senv.superv("start", "mine", "--", "sh", "-c", "echo mine-up; exec sleep 1000", check=True)
    wait_until(lambda: b"mine-up" in (senv.session_dir("mine") / "output.log").read_bytes(),
               message="our session's output")
    for top in (senv.home, senv.run):
        for path in [top.parent, *(d for d, _, _ in os.walk(top))]:
            if str(path).startswith(str(senv.root)):
                os.chmod(path, 0o755)
    for sock in (senv.run / "supervisor.sock", session_socket(senv, "mine")):
        os.chmod(sock, 0o666)
    return senv


EXPLAINED = ("refused", "permission denied", "not yours", "belongs to uid")


def test_refusals_of_send_and_peek_say_why(opened_home: SupervEnv) -> None:
    # Ten times each: which of the worker's Error and its close the client meets first is a
    # race (before the client read a refusal after EPIPE, 17 of 40 tries said why); all must.
    results = as_other(opened_home.env, 10 * [{"args": ["send", "mine", "hi"]}, {"args": ["peek", "mine"]}])
    for result in results:
        assert refused_in_one_line(result) is None, result
        assert any(word in result["stderr"] for word in EXPLAINED), result["stderr"]


def test_another_uid_is_refused_everywhere_in_one_line(opened_home: SupervEnv) -> None:
    senv = opened_home
    uid = other_uid()
    before = sessions(senv)["mine"]
    log_before = (senv.session_dir("mine") / "output.log").read_bytes()
    sockets = {"worker socket": (str(session_socket(senv, "mine")), p.encode(p.Hello(p.Start.OFFSET))),
               "control socket": (str(senv.run / "supervisor.sock"), p.encode(p.Request({"op": "ls"})))}
    jobs = [{"args": c} for c in [*COMMANDS, ["attach", "--stdio", "mine"]]]
    jobs += [{"path": path, "payload": payload.hex()} for path, payload in sockets.values()]
    results = as_other(senv.env, jobs)
    problems = []
    for result in results[: len(COMMANDS)]:
        if (problem := refused_in_one_line(result)):
            problems.append(f"superv {' '.join(result['args'])}: {problem}")
    # The SSH bridge: its refusal is one Error frame on stdout (exit 0 when the worker
    # refused and the bridge passed the worker's Error on, by design).
    bridge = results[len(COMMANDS)]
    got = frames(bridge["stdout"])
    if not (len(got) == 1 and isinstance(got[0], p.Error) and bridge["code"] in (0, 1)
            and "Traceback" not in bridge["stderr"]):
        problems.append(f"attach --stdio: exit {bridge['code']}, frames {got}, "
                        f"stderr {bridge['stderr'][-300:]!r}")
    # The raw sockets: exactly one Error frame, which says why.
    for what, answer in zip(sockets, results[len(COMMANDS) + 1 :], strict=True):
        got = frames(answer)
        if not (len(got) == 1 and isinstance(got[0], p.Error) and f"uid {uid}" in got[0].message):
            problems.append(f"{what}: {got}")
    tried = len(COMMANDS) + 3
    fault_report.note(f"another uid ({uid}): {tried} commands and sockets tried, "
                      f"{tried - len(problems)} refused in one line")
    fault_report.add("bad inputs tried", tried)
    fault_report.add("errors answered", tried - len(problems))
    # Our session noticed nothing.
    after = sessions(senv)["mine"]
    assert (after["state"], after["worker_pid"]) == ("running", before["worker_pid"]), after
    assert (senv.session_dir("mine") / "output.log").read_bytes() == log_before
    theirs = [os.path.join(d, f) for top in (senv.home, senv.run) for d, _, fs in os.walk(top)
              for f in fs if os.lstat(os.path.join(d, f)).st_uid == uid]
    assert not theirs, f"files made by the other uid: {theirs}"
    assert not problems, "\n".join(problems)
