"""The hook program: ``python -I -S hook_client.py SOCKET SESSION`` with the event on stdin.

Claude Code runs it for every hook event and waits for it (for PreToolUse, before the tool
runs), so it must cost next to nothing and never block, slow or break the agent:
standard library only (run without ``site``, no package import), a short timeout on every
step, and exit status 0 whatever happens (a hook's non-zero status means something to
Claude Code; ours has nothing to say to it).  It sends one line, ``{"session": SESSION,
"payload": <the event>}``, and prints a refusal, if any, on stderr.
"""

import json
import socket
import sys

CONNECT_TIMEOUT = 0.25
REPLY_TIMEOUT = 1.0
MAX_PAYLOAD = 1 << 20  # agent_worker.activity.hooks.MAX_PAYLOAD (no import: it would cost)


def trimmed(raw: bytes) -> bytes:
    """An oversized event (a Write of a big file) without the bulk of its tool fields."""
    try:
        payload = json.loads(raw)
    except ValueError:
        return raw[:MAX_PAYLOAD]  # garbage stays garbage: the worker refuses it
    for key in ("tool_input", "tool_response"):
        value = payload.get(key) if isinstance(payload, dict) else None
        if isinstance(value, dict):
            payload[key] = {k: v[:1000] for k, v in value.items() if isinstance(v, str)}
    return json.dumps(payload).encode()[:MAX_PAYLOAD]


def main(argv: list) -> int:
    if len(argv) != 3:
        print("usage: hook_client.py SOCKET SESSION < event.json", file=sys.stderr)
        return 0
    raw = sys.stdin.buffer.read(MAX_PAYLOAD + 1)
    if len(raw) > MAX_PAYLOAD:
        sys.stdin.buffer.read()  # drain, so the agent's write never blocks on us
        raw = trimmed(raw + b"")
    session = argv[2]
    line = b'{"session": ' + json.dumps(session).encode() + b', "payload": '
    try:
        body = raw.decode("utf-8")
        json.loads(body)
        line += raw.strip() + b"}\n"
    except ValueError:
        line += json.dumps(raw.decode("utf-8", "replace")).encode() + b"}\n"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(argv[1])
        sock.settimeout(REPLY_TIMEOUT)
        sock.sendall(line)
        sock.shutdown(socket.SHUT_WR)
        reply = sock.recv(4096)
    except OSError:
        return 0  # no receiver (the worker is gone or busy): the agent carries on
    finally:
        sock.close()
    try:
        answer = json.loads(reply)
    except ValueError:
        return 0
    if isinstance(answer, dict) and answer.get("error"):
        print(f"superv hook: {answer['error']}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    try:
        code = main(sys.argv)
    except BaseException:  # never a traceback, never a non-zero status into the agent
        code = 0
    sys.exit(code)
