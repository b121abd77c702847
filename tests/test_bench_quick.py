"""The benchmarks' quick mode runs, and every workload checked what arrived.

Nothing here is about speed: ``python -m bench --quick`` exits non-zero when a workload
could not run or the bytes that reached a client were not the bytes sent, and this test
also checks that each workload produced rows and that no peer was silently skipped.
About 100 s on a loaded 2-core machine (the slow-link scenarios are ~20 s of it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(240)
def test_bench_quick(tmp_path: Path) -> None:
    missing = [tool for tool in ("dtach", "tmux", "screen", "mosh-server") if not shutil.which(tool)]
    if missing:
        pytest.fail(f"{', '.join(missing)} missing: run bench/setup as root")
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=230,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    rows = json.loads(out.read_text())["results"]
    workloads = {row["workload"].split(",")[0].split(" ")[0] for row in rows}
    assert {"drain", "echo", "attach", "memory/session", "snapshot", "reconnect", "slowlink"} <= workloads
    slow_hosts = {row["host"] for row in rows if row["workload"].startswith("slowlink")}
    assert slow_hosts == {"superv", "tmux", "mosh"}, slow_hosts
    for row in rows:
        assert row["ok"], row
        if row["host"] in ("raw-pty", "dtach", "tmux", "screen", "mosh"):
            assert not row["skipped"] and row["value"] is not None, row
            assert row["verified"], row
