"""``superv export [--format text|markdown|jsonl] NAME``: the session's record.

``text`` is the output with escapes stripped; ``markdown`` adds a header of facts and
fences the output; ``jsonl`` is one JSON object per line, first the session's facts, then
one per line of output with its log offset and (from the log's time index) its time.
"""

from __future__ import annotations

import argparse
import bisect
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from agent_worker.log import LogReader
from agent_worker.session_files import BadFile, read_spec
from agent_worker.snapshot import read_snapshot
from supervisor.errors import CliError
from supervisor.plain import PlainText
from supervisor.registry import state_from_files
from supervisor.sessions import checked_name, session_directory
from supervisor.visible import visible

CHUNK = 1 << 20


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser("export", help="the session's record for humans or tools")
    parser.add_argument("--format", choices=["text", "markdown", "jsonl"], default="text")
    parser.add_argument("name")
    return parser


def facts(directory: Path) -> dict[str, Any]:
    try:
        spec = read_spec(directory)
    except (OSError, BadFile) as exc:
        raise CliError(f"cannot export {directory.name}: {exc}; 'superv logs {directory.name}' "
                       "still shows its output") from None
    info: dict[str, Any] = {"name": spec.name, "command": spec.argv, "cwd": spec.cwd,
                            "created_at": spec.created_at, "restart": spec.restart}
    if spec.resumed_argv:
        info["resumed_command"] = spec.resumed_argv
    try:
        snap, _ = read_snapshot(directory)
    except Exception:
        snap = None
    else:
        info.update(started_at=snap.started_at, ended_at=snap.ended_at, log_end=snap.log_end)
        # activity: which agent, and the conversation superv would resume
        info.update(agent=spec.agent, conversation_id=snap.conversation_id,
                    transcript=snap.transcript)
    info["state"] = state_from_files(snap)
    return info


def plain_lines(reader: LogReader):
    """(offset of the line's first byte, text) for each line of the log, escapes stripped."""
    plain = PlainText()
    pos, size, carry, carry_at = 0, reader.size(), b"", 0
    while pos < size:
        data = reader.read(pos, min(CHUNK, size - pos))
        if not data:
            break
        text = carry + plain.feed(data, final=pos + len(data) >= size)
        *lines, carry = text.split(b"\n")
        for line in lines:
            yield carry_at, line.decode("utf-8", "replace")
            carry_at = pos  # approximate: later lines of a chunk start within it
        pos += len(data)
    if carry:
        yield carry_at, carry.decode("utf-8", "replace")


def run(args: argparse.Namespace) -> int:
    name = checked_name(args.name)
    directory = session_directory(name)
    reader = LogReader(directory)
    out = sys.stdout
    info = facts(directory)
    if args.format == "jsonl":
        index = reader.index()
        offsets = [o for o, _ in index]
        out.write(json.dumps({"type": "session", **info}) + "\n")
        for offset, line in plain_lines(reader):
            i = bisect.bisect_right(offsets, offset) - 1
            when = index[i][1] if i >= 0 else None
            out.write(json.dumps({"type": "output", "offset": offset, "time": when,
                                  "text": line}) + "\n")
        return 0
    if args.format == "markdown":
        def stamp(t: float | None) -> str:
            return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else "-"

        out.write(f"# superv session `{name}`\n\n")
        # The facts came from the user and the agent: escapes shown, never acted on.
        out.write(f"- command: `{visible(shlex.join(info['command']))}`\n"
                  f"- cwd: `{visible(info['cwd'])}`\n")
        out.write(f"- state: {info['state']}\n- created: {stamp(info['created_at'])}\n")
        out.write(f"- ended: {stamp(info.get('ended_at'))}\n")
        if info.get("conversation_id"):
            out.write(f"- conversation: `{visible(str(info['conversation_id']))}` "
                      f"(`{visible(str(info.get('transcript')))}`)\n")
        out.write("\n````text\n")
    for _, line in plain_lines(reader):
        out.write(line + "\n")
    if args.format == "markdown":
        out.write("````\n")
    return 0
