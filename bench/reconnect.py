"""Reconnect time after a dropped SSH connection: a hook until the SSH attach exists.

The plan, once ``supervisor/remote_attach.py`` (``superv attach HOST:NAME``) lands: start
a loopback ``sshd`` on 127.0.0.1 with its own host key and authorized_keys (see GUIDE,
"Facts measured"), attach to a session that prints a numbered line every 10 ms, kill the
per-connection ``sshd`` child, and time from the kill until the first line printed after
the drop appears on the client's terminal; verify that the numbered lines seen are
consecutive (none lost, none shown twice).  Peers: ``ssh -t host tmux attach`` has no
reconnect of its own, so the row compares with nothing; mosh/Eternal Terminal are not
installed here.
"""

from __future__ import annotations

from bench.harness import REPO, Config, Result
from bench.hosts import Host


def run(cfg: Config, hosts: list[type[Host]]) -> list[Result]:
    if not (REPO / "supervisor" / "remote_attach.py").exists():
        return [
            Result(
                "reconnect over ssh",
                "superv",
                None,
                "s",
                skipped=True,
                note="not yet measured: supervisor/remote_attach.py does not exist yet",
            )
        ]
    return [
        Result(
            "reconnect over ssh",
            "superv",
            None,
            "s",
            skipped=True,
            note="not yet measured: remote_attach.py exists; bench/reconnect.py still to write",
        )
    ]
