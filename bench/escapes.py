"""``python -m bench.escapes [MB]``: how fast superv reads terminal escapes.

Not a peer comparison (nothing else runs this code): CPU time of each reader of
``agent_worker.escapes`` over ~10 MB of output like a session records -- an agent TUI's
frames (synchronized updates, a spinner in the title, SGR colour runs, cursor moves, box
drawing, one device-attributes query per start-up) between runs of plain build lines.
Best of five, in MB/s of output.
"""

from __future__ import annotations

import random
import sys
import time
from collections.abc import Callable

from agent_worker.escapes import Tokenizer
from agent_worker.screen import ScreenModel
from agent_worker.terminal_queries import QueryAnswerer
from supervisor.plain import PlainText
from supervisor.terminal import ShownModes

CHUNK = 65536  # what a log read or a PTY read hands over at a time


def recorded_like(size: int, seed: int = 7) -> bytes:
    rng = random.Random(seed)
    start_up = (
        b"\x1b7\x1b[r\x1b8\x1b[?25l\x1b[?2004h\x1b[?1004h\x1b[c"
        b"\x1b[38;5;174mWelcome\x1b[9Gto\x1b[12GClaude\x1b[19GCode\x1b[39m\r\r\n"
    )
    spinner = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
    out, total, frame = [start_up], len(start_up), 0
    while total < size:
        parts = [b"\x1b[?2026h\x1b]0;" + spinner[frame % 10].encode() + b" agent\x07"]
        for row in range(rng.randint(3, 12)):
            parts.append(b"\x1b[%d;1H\x1b[2K" % (row + 5))
            for _ in range(rng.randint(2, 8)):
                colour = b"\x1b[38;5;%dm" % rng.randint(0, 255)
                parts.append(colour + b"word " * rng.randint(1, 6) + b"\x1b[39m")
            parts.append("│ ─ ✳ ".encode())
        parts.append(b"\x1b[1m\x1b[2mstatus\x1b[22m\x1b[?25h\x1b[?2026l")
        lines = b"".join(
            b"%06d compiling src/module_%d.py ... ok [%d ms]\r\n" % (n, n % 97, n % 1000)
            for n in range(frame * 40, frame * 40 + 40)
        )
        for piece in (b"".join(parts), lines):
            out.append(piece)
            total += len(piece)
        frame += 1
    return b"".join(out)


def best_of(runs: int, fn: Callable[[], object]) -> float:
    best = float("inf")
    for _ in range(runs):
        t = time.process_time()
        fn()
        best = min(best, time.process_time() - t)
    return best


def main(argv: list[str]) -> int:
    megabytes = float(argv[0]) if argv else 10.0
    data = recorded_like(int(megabytes * 1_000_000))
    chunks = [data[i : i + CHUNK] for i in range(0, len(data), CHUNK)]
    screen_part = chunks[: max(1, len(chunks) // 10)]  # the model is slow: a tenth of it

    def tokenize(**options: bool) -> Callable[[], object]:
        def run() -> None:
            tokens = Tokenizer(**options)
            for chunk in chunks:
                for _ in tokens.feed(chunk.decode("latin-1")):
                    pass

        return run

    def each(make: Callable[[], Callable[[bytes], object]], part: list[bytes]) -> Callable[[], object]:
        def run() -> None:
            feed = make()
            for chunk in part:
                feed(chunk)

        return run

    def answer() -> Callable[[bytes], object]:
        answerer = QueryAnswerer()
        return lambda chunk: answerer.feed(chunk, lambda: (0, 0))

    cases: list[tuple[str, Callable[[], object], list[bytes]]] = [
        ("tokenizer, every token", tokenize(), chunks),
        ("tokenizer, sequences and controls", tokenize(text=False), chunks),
        ("tokenizer, sequences only", tokenize(text=False, controls=False), chunks),
        ("screen model (parse + draw)", each(lambda: ScreenModel(40, 120).feed, screen_part), screen_part),
        ("worker's query answers", each(answer, chunks), chunks),
        ("attach client's mode tracking", each(lambda: ShownModes().feed, chunks), chunks),
        ("logs --plain", each(lambda: PlainText().feed, chunks), chunks),
    ]
    print(f"{len(data) / 1e6:.1f} MB of recorded-like output, CPU time, best of 5")
    for label, fn, part in cases:
        size = sum(map(len, part)) / 1e6
        print(f"  {label:32} {size / best_of(5, fn):8.1f} MB/s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
