"""How fast the session worker drains its PTY, next to a bare read loop, in one run.

    .venv/bin/python -m bench.worker_drain [--mb 60] [--rounds 3]

Workload: ``cat`` of a file of numbered 100-byte lines (60 MB by default), started by
``sh`` once we type ``go`` (so process start-up is outside the clock).  Three hosts,
interleaved round by round, median reported:

- ``bare-cooked``: ``openpty`` + a blocking ``os.read`` loop, the PTY in cooked mode (the
  same line discipline work as the worker's PTY): the ceiling a host can reach.
- ``bare-raw``: the same with the PTY in raw mode (no ``\\n`` -> ``\\r\\n``).
- ``superv``: ``python -m agent_worker`` with the log on disk and one client attached
  from offset 0 over its Unix socket; the clock stops when the client has received
  the last byte.
- ``superv-nocli``: the same with no client attached (the log only), to tell the
  worker's own cost from the cost of a third busy process on the machine.
- ``superv-aider``: ``superv-nocli`` with the session's agent kind ``aider`` instead of
  ``generic``: its screen rules are checked as the output flows (the activity monitor's
  cost on the drain; ``claude`` has the same kind of rules, and hooks that this workload
  does not call).

Also: the RSS / PSS / USS of an idle worker (its agent waiting on input).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tty
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from agent_worker import protocol as p  # noqa: E402
from agent_worker import session_files  # noqa: E402
from agent_worker.client import Connection  # noqa: E402
from agent_worker.spec import SessionSpec, agent_environment  # noqa: E402

SCRIPT = "stty -echo; read x; exec cat {path}"


def make_lines(path: Path, size: int) -> int:
    body = b"abcdefghijklmnopqrstuvwxyz0123456789" * 3
    count = size // 100
    with path.open("wb", buffering=1 << 22) as out:
        for first in range(0, count, 100_000):
            out.write(b"".join(b"%09d %s\n" % (i, body[:89])
                               for i in range(first, min(count, first + 100_000))))
    return count * 100


def bare(path: Path, expected: int, raw: bool) -> float:
    master, slave = os.openpty()
    if raw:
        tty.setraw(slave)
    proc = subprocess.Popen(["sh", "-c", SCRIPT.format(path=path)], stdin=slave, stdout=slave,
                            stderr=slave, start_new_session=True)
    os.close(slave)
    try:
        time.sleep(0.2)  # let sh reach `read` (stty -echo first): outside the clock
        t0 = time.perf_counter()
        os.write(master, b"go\n")
        got = 0
        while True:
            try:
                data = os.read(master, 65536)
            except OSError as exc:
                if exc.errno != errno.EIO:
                    raise
                break
            if not data:
                break
            got += len(data)
        took = time.perf_counter() - t0
    finally:
        os.close(master)
        proc.wait()
    want = expected if raw else expected + expected // 100  # cooked: \n -> \r\n
    if got != want:
        raise SystemExit(f"bare-{'raw' if raw else 'cooked'}: got {got} bytes, expected {want}")
    return took


class Env:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = dict(os.environ)
        self.env.update(SUPERV_HOME=str(root / "home"), SUPERV_RUNTIME_DIR=str(root / "run"),
                        PYTHONPATH=str(REPO))
        os.environ.update(SUPERV_HOME=self.env["SUPERV_HOME"],
                          SUPERV_RUNTIME_DIR=self.env["SUPERV_RUNTIME_DIR"])
        self._n = 0

    def start(self, argv: list[str], agent: str = "generic"
              ) -> tuple[str, subprocess.Popen[bytes], dict[str, object]]:
        from agent_worker import paths

        self._n += 1
        name = f"drain{self._n}"
        directory = paths.session_dir(name)
        directory.mkdir(parents=True)
        SessionSpec(name=name, argv=argv, cwd=str(self.root), agent=agent,
                    env=agent_environment(self.env, {}, name), rows=40, cols=120).write(directory)
        proc = subprocess.Popen([sys.executable, "-m", "agent_worker", name], env=self.env,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                start_new_session=True)
        assert proc.stdout is not None
        if not select.select([proc.stdout], [], [], 20)[0]:
            raise SystemExit("worker did not start")
        ready = json.loads(proc.stdout.readline())
        proc.stdout.close()
        if not ready.get("ok"):
            raise SystemExit(f"worker failed: {ready}")
        return name, proc, ready

    def stop(self, proc: subprocess.Popen[bytes], ready: dict[str, object]) -> None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(ready["agent_pid"]), signal.SIGKILL)  # type: ignore[call-overload]


def superv(env: Env, path: Path, expected: int, client: bool = True, agent: str = "generic"
           ) -> float:
    """Time from ``go`` to the last byte at the client (or, without a client, in the log:
    polled every 5 ms, which is within the noise of a 1 s run)."""
    from agent_worker import paths

    name, proc, ready = env.start(["sh", "-c", SCRIPT.format(path=path)], agent)
    try:
        conn = Connection.open(paths.session_socket(name), timeout=30)
        conn.hello(p.Hello(p.Start.OFFSET, 0, 40, 120))
        time.sleep(0.2)  # as for bare: sh reaches `read`
        want = expected + expected // 100
        log_file = paths.session_dir(name) / session_files.LOG
        t0 = time.perf_counter()
        conn.send(p.Input(b"go\n"))
        if client:
            got = 0
            while got < want:
                msg = conn.receive()
                if isinstance(msg, p.Output):
                    got += len(msg.data)
        else:
            conn.send(p.Detach())  # types ``go`` and leaves at once
            while log_file.stat().st_size < want:
                time.sleep(0.005)
        took = time.perf_counter() - t0
        conn.close()
    finally:
        env.stop(proc, ready)
    return took


def memory(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            out["rss_kb"] = int(line.split()[1])
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key = line.split(":")[0]
        if key in ("Pss", "Private_Clean", "Private_Dirty"):
            out[key] = int(line.split()[1])
    out["uss_kb"] = out.pop("Private_Clean", 0) + out.pop("Private_Dirty", 0)
    out["pss_kb"] = out.pop("Pss", 0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=60)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="svd-", dir="/tmp"))
    try:
        path = root / "lines.txt"
        size = make_lines(path, args.mb * 1_000_000)
        env = Env(root)
        times: dict[str, list[float]] = {
            "bare-cooked": [], "bare-raw": [], "superv": [], "superv-nocli": [],
            "superv-aider": []}
        for _ in range(args.rounds):
            times["bare-cooked"].append(bare(path, size, raw=False))
            times["bare-raw"].append(bare(path, size, raw=True))
            times["superv"].append(superv(env, path, size))
            times["superv-nocli"].append(superv(env, path, size, client=False))
            times["superv-aider"].append(superv(env, path, size, client=False, agent="aider"))
        med = {k: statistics.median(v) for k, v in times.items()}
        print(f"workload: cat of {size / 1e6:.0f} MB of 100-byte lines, {args.rounds} rounds, "
              "median")
        for host, took in med.items():
            ratio = med["bare-cooked"] / took
            runs = " ".join(f"{t:.2f}" for t in times[host])
            print(f"  {host:12s} {took:6.2f} s  {size / took / 1e6:6.1f} MB/s  "
                  f"{ratio:5.2f}x of bare-cooked   (runs: {runs})")
        _, proc, ready = env.start(["sh", "-c", "read x"])
        try:
            time.sleep(1.0)
            mem = memory(proc.pid)
        finally:
            env.stop(proc, ready)
        print(f"idle worker: RSS {mem['rss_kb'] / 1024:.1f} MB, PSS {mem['pss_kb'] / 1024:.1f} MB,"
              f" USS {mem['uss_kb'] / 1024:.1f} MB")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
