"""The supervisor's control socket answers every request, however malformed its numbers.

A real supervisor (started by the CLI) and raw frames on its Unix socket.
"""

from __future__ import annotations

import json
import socket
import struct

import pytest
from conftest import SupervEnv

from agent_worker import protocol as p
from agent_worker.spec import SessionSpec


def answers(senv: SupervEnv, body: bytes) -> list[p.Message]:
    """Send one Request frame with this raw JSON body; every frame until the close."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(20)
        sock.connect(str(senv.run / "supervisor.sock"))
        sock.sendall(struct.pack("!IB", 1 + len(body), p.Request.KIND) + body)
        decoder = p.Decoder()
        while chunk := sock.recv(65536):
            decoder.feed(chunk)
        return list(decoder)


@pytest.fixture
def daemon(superv_env: SupervEnv) -> SupervEnv:
    superv_env.superv("ls", check=True)  # starts the supervisor
    return superv_env


@pytest.mark.parametrize("rows", [b"1e999", b"-1e999", b"NaN", b"Infinity"])
def test_a_number_out_of_range_gets_an_error_not_silence(daemon: SupervEnv, rows: bytes) -> None:
    """Issue 14.4: ``"rows": 1e999`` raised OverflowError and closed with no reply."""
    body = b'{"op": "start", "name": "big", "argv": ["true"], "rows": ' + rows + b"}"
    got = answers(daemon, body)
    assert len(got) == 1 and isinstance(got[0], p.Error), got
    assert "out of range" in got[0].message
    assert daemon.superv("ls", check=True).returncode == 0


def test_a_huge_window_is_brought_into_range(daemon: SupervEnv) -> None:
    request = {"op": "start", "name": "wide", "argv": ["sleep", "30"], "rows": 10**30,
               "cols": 1e300, "cwd": str(daemon.root)}
    got = answers(daemon, json.dumps(request).encode())
    assert len(got) == 1 and isinstance(got[0], p.Reply) and got[0].body["ok"], got
    spec = SessionSpec.load(daemon.session_dir("wide"))
    assert (spec.rows, spec.cols) == (1000, 1000)
