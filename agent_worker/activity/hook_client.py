"""The hook program: ``python -I -S hook_client.py SOCKET SESSION`` with the event on stdin
(Claude Code's hooks), or as one more argument (Codex's ``notify``).

Claude Code runs it for every hook event and waits for it (for PreToolUse, before the tool
runs), so it must cost next to nothing and never block, slow or break the agent:

- standard library only, run without ``site`` and importing almost nothing: not even
  ``json`` (the worker parses; importing json costs more than the rest of the run) nor
  ``socket`` (its enums cost ~20 ms under load; ``_socket`` is the C module beneath it);
- a short timeout on every step, and exit status 0 whatever happens (a hook's non-zero
  status means something to Claude Code; ours has nothing to say to it).

It sends ``{"session": SESSION, "payload": <the event as it came>}``, closes its side, and
prints a refusal, if the worker sends one, on stderr.
"""

import _socket
import sys

CONNECT_TIMEOUT = 0.25
REPLY_TIMEOUT = 1.0
MAX_PAYLOAD = 1 << 20  # agent_worker.activity.hooks.MAX_PAYLOAD (no import: it would cost)
OK = b'{"ok": true}'
# A PermissionRequest the worker holds for superv approve/deny (agent_worker.activity.approvals
# .HELD and .MAX_WAIT, not imported: it would cost): then one more line, the decision to
# print, or the end of the call when the wait runs out (the worker ends it).
HELD = b'{"ok": true, "held": true}'
HELD_TIMEOUT = 3600.0 + 5


def trimmed(raw: bytes) -> bytes:
    """An oversized event (a Write of a big file) without the bulk of its tool fields."""
    import json

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
    if len(argv) not in (3, 4):
        sys.stderr.write("usage: hook_client.py SOCKET SESSION [EVENT-JSON] < event.json\n")
        return 0
    # Claude Code writes the event on stdin; Codex's notify passes it as the last argument.
    raw = argv[3].encode() if len(argv) == 4 else sys.stdin.buffer.read(MAX_PAYLOAD + 1)
    if len(raw) > MAX_PAYLOAD:
        while sys.stdin.buffer.read(1 << 16):
            pass  # drain, so the agent's write never blocks on us
        raw = trimmed(raw)
    # The session name is validated ([A-Za-z0-9._-]): it needs no JSON escaping.
    call = b'{"session": "' + argv[2].encode() + b'", "payload": ' + (raw.strip() or b"null") + b"}"
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(CONNECT_TIMEOUT)
        sock.connect(argv[1])
        sock.settimeout(REPLY_TIMEOUT)
        sock.sendall(call)
        sock.shutdown(_socket.SHUT_WR)
        reply = sock.recv(4096)
        first, _, decision = reply.partition(b"\n")
        if first == HELD:
            sock.settimeout(HELD_TIMEOUT)
            while b"\n" not in decision and (chunk := sock.recv(4096)):
                decision += chunk
            # A decision (superv approve/deny) is Claude Code's answer to the prompt; none
            # (the wait ran out, the worker went): the prompt stays for the person.
            if decision.strip():
                sys.stdout.write(decision.decode("utf-8", "replace").strip() + "\n")
            return 0
    except OSError:
        return 0  # no receiver (the worker is gone or busy): the agent carries on
    finally:
        sock.close()
    if reply.strip() != OK:
        sys.stderr.write("superv hook: " + reply.decode("utf-8", "replace").strip() + "\n")
    return 0


if __name__ == "__main__":
    try:
        code = main(sys.argv)
    except BaseException:  # never a traceback, never a non-zero status into the agent
        code = 0
    sys.exit(code)
