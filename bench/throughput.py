"""Drain throughput with one client attached.

The session runs a small shell script that first answers pings (so we know the client is
attached and the round trip works), then waits for ``go``, prints a start marker, the
payload and an end marker, and idles.  The clock starts when we type ``go`` into the
client's terminal and stops when the end marker has been read from it: the whole trip
from the user's keyboard to the last byte on the user's screen.

Payloads: numbered 100-byte lines (``cat`` of a file) and ``yes | head -c N``.

What is verified:
- raw-pty, dtach, superv pass bytes through, so the bytes between the markers must be the
  payload exactly (with the PTY's ``\\n`` -> ``\\r\\n``).
- tmux and screen re-render the screen, and may skip output a slow client has not yet
  drawn, so for them: the end marker was shown, the last line was shown, and how many of
  the distinct numbered lines appeared in the client's stream (reported, not required).
"""

from __future__ import annotations

import time

from bench.harness import (
    LINE_NUMBER,
    RUN_ID,
    BenchError,
    Config,
    Result,
    Terminal,
    fmt_bytes,
    lines_file,
    log,
    visible_text,
)
from bench.hosts import ALL_HOSTS, Host, Superv, raw_session

PASS_THROUGH = {"raw-pty", "dtach", "superv"}


def script(nonce: str, generator: str) -> list[str]:
    return [
        "sh",
        "-c",
        # stty -echo: the pings we type are not echoed, so the stream holds only answers.
        "stty -echo; "
        'while read x; do [ "$x" = go ] && break; echo "ack-$x"; done; '
        f"echo BENCH-START-{nonce}; {generator}; echo BENCH-END-{nonce}; exec cat >/dev/null",
    ]


def wait_attached(term: Terminal, timeout: float = 20) -> None:
    """Type pings until one is answered through the client."""
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        n += 1
        term.write(b"p%d\r" % n)
        try:
            term.read_until(b"ack-p%d" % n, min(1.0, max(0.01, deadline - time.monotonic())))
            return
        except BenchError:
            if time.monotonic() > deadline:
                raise


def measure(
    term: Terminal, host: str, nonce: str, expected: bytes | None, lines: int | None, timeout: float
) -> tuple[float, str]:
    """Type ``go``; return (seconds until the end marker arrived, what was verified)."""
    wait_attached(term)
    term.drain(0.05)
    mark = len(term.buf)
    t0 = time.monotonic()
    term.write(b"go\r")
    end = term.read_until(f"BENCH-END-{nonce}".encode(), timeout, start=mark, what="the end marker")
    elapsed = time.monotonic() - t0
    stream = bytes(term.buf[mark:end])
    start_marker = f"BENCH-START-{nonce}\r\n".encode()
    if host in PASS_THROUGH and expected is not None:
        first = stream.find(start_marker)
        if first < 0:
            raise BenchError("start marker missing from a pass-through stream")
        body = stream[first + len(start_marker) : len(stream) - len(f"BENCH-END-{nonce}")]
        if body != expected:
            at = next((i for i, (a, b) in enumerate(zip(body, expected, strict=False)) if a != b), None)
            raise BenchError(
                f"wrong bytes: {len(body)} arrived, {len(expected)} sent; first difference at "
                f"{at if at is not None else min(len(body), len(expected))}"
            )
        return elapsed, f"exact: all {fmt_bytes(len(expected))} byte for byte (\\n as \\r\\n)"
    if lines is None:
        return (
            elapsed,
            f"end marker shown ({fmt_bytes(len(stream))} of redraw; identical lines cannot be counted)",
        )
    text = visible_text(stream)
    seen = {int(m.group(1)) for m in LINE_NUMBER.finditer(text)}
    if lines - 1 not in seen:
        raise BenchError(f"the last line {lines - 1} was never shown")
    return elapsed, f"end marker + last line shown; {len(seen)}/{lines} lines drawn"


def run(cfg: Config, hosts: list[type[Host]]) -> list[Result]:
    size = 10_000_000 if cfg.quick else 60_000_000
    yes_size = 4_000_000 if cfg.quick else 30_000_000
    path, count = lines_file(cfg, size)
    payload = path.read_bytes()
    cases = [
        (
            f"drain {fmt_bytes(size)} lines",
            f"cat {path}",
            payload.replace(b"\n", b"\r\n"),
            count,
            size,
        ),
        (
            f"drain {fmt_bytes(yes_size)} yes",
            f"yes | head -c {yes_size}",
            b"y\r\n" * (yes_size // 2),
            None,
            yes_size,
        ),
    ]
    del payload
    results = []
    for label, generator, expected, lines, nbytes in cases:
        # Generous: a tenth of the slowest rate we have seen on these machines.
        timeout = 30 + nbytes / 300_000
        for host_name, host_cls in [
            ("raw-pty", None),
            *[(h.name, h) for h in hosts if h in ALL_HOSTS],
        ]:
            nonce = f"{RUN_ID}{len(results)}"
            argv = script(nonce, generator)
            result = Result(label, host_name, None, "s", baseline=host_cls is None)
            results.append(result)
            if host_cls is not None and (why := host_cls.unavailable()):
                result.skipped, result.note = True, why
                continue
            log(f"{label}: {host_name}")
            try:
                if host_cls is None:
                    with raw_session(argv, cfg.scratch) as term:
                        elapsed, verified = measure(term, host_name, nonce, expected, lines, timeout)
                else:
                    with host_cls(cfg.scratch) as host:
                        if isinstance(host, Superv):
                            host.attach_options = ("--exact",)  # every byte, to check
                        host.start("tp", argv)
                        with host.attach("tp") as term:
                            elapsed, verified = measure(term, host_name, nonce, expected, lines, timeout)
            except (BenchError, OSError) as exc:
                result.ok, result.note = False, str(exc)[:300]
                continue
            result.value = elapsed
            result.detail = f"{nbytes / elapsed / 1e6:.1f} MB/s"
            result.verified = verified
    return results
