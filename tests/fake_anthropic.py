"""A small fake of the Anthropic Messages API, so the real Claude Code CLI runs offline.

A real HTTP server on 127.0.0.1 (a thread of the test process).  Claude Code posts to
``/v1/messages?beta=true`` and reads the answer as server-sent events (``message_start``,
``content_block_start``/``_delta``/``_stop``, ``message_delta``, ``message_stop``).  What
the fake answers is scripted by the test, keyed on the text of the last user prompt:

- ``Text("...")``: a plain answer;
- ``Text("...", delay=S)``: the same, streamed slowly (one word per ``delay`` seconds), so
  a test can see the agent "working";
- ``ToolUse("Bash", {"command": ...})``: a ``tool_use`` block, which makes Claude Code
  show its approval prompt; after the tool ran, the next request (a ``tool_result``) is
  answered with ``after_tool``.

Every request is recorded (``requests``), so a test can check what Claude sent: after a
``--resume`` its first request must carry the earlier messages.

Run by hand: ``python tests/fake_anthropic.py [PORT]`` serves the default answer ("ok").
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs

MODEL = "claude-sonnet-4-5"


@attrs.frozen
class Text:
    text: str
    delay: float = 0.0  # seconds between streamed words: a slow answer


@attrs.frozen
class ToolUse:
    name: str
    input: dict[str, Any]
    after_tool: Text = Text("The command ran.")


Answer = Text | ToolUse


def prompt_text(message: dict[str, Any]) -> str:
    """The text a user message carries (its tool results do not count)."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    return "\n".join(
        str(block.get("text", "")) for block in content
        if isinstance(block, dict) and block.get("type") == "text"
    )


def has_tool_result(message: dict[str, Any]) -> bool:
    content = message.get("content")
    return isinstance(content, list) and any(
        isinstance(b, dict) and b.get("type") == "tool_result" for b in content
    )


@attrs.define
class FakeAnthropic:
    """The server and its script; use as a context manager (``with FakeAnthropic() as api``)."""

    default: Answer = Text("ok")
    script: list[tuple[str, Answer]] = attrs.Factory(list)
    requests: list[dict[str, Any]] = attrs.Factory(list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = attrs.Factory(threading.Lock)
    _changed: threading.Condition = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._changed = threading.Condition(self._lock)

    # ---- the test's side ---------------------------------------------------------------

    def on(self, trigger: str, answer: Answer) -> None:
        """Answer ``answer`` when the last user prompt contains ``trigger``."""
        with self._lock:
            self.script.append((trigger, answer))

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def conversation_requests(self) -> list[dict[str, Any]]:
        """The recorded requests of the main conversation (streamed, with tools)."""
        with self._lock:
            return [r for r in self.requests if r.get("stream") and r.get("tools")]

    def wait_for_request(self, predicate: Any, timeout: float = 30.0) -> dict[str, Any]:
        """The first recorded request matching ``predicate``; waits for it to arrive."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for request in self.requests:
                    if predicate(request):
                        return request
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"no matching request to the fake API in {timeout}s")
                self._changed.wait(left)

    def __enter__(self) -> FakeAnthropic:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, port: int = 0) -> None:
        fake = self

        class Handler(_Handler):
            api = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    # ---- the server's side -------------------------------------------------------------

    def record(self, body: dict[str, Any]) -> None:
        with self._changed:
            self.requests.append(body)
            self._changed.notify_all()

    def answer_for(self, body: dict[str, Any]) -> Answer:
        if not body.get("tools"):
            return Text("ok")  # a side request (a title, a quota check): not the conversation
        # Claude Code may append a system-role message after the user's: skip those.
        messages = [m for m in body.get("messages") or []
                    if isinstance(m, dict) and m.get("role") in ("user", "assistant")]
        last = messages[-1] if messages else {}
        with self._lock:
            if has_tool_result(last):
                # The answer after a tool ran: the ToolUse that asked for it says what.
                for message in reversed(messages[:-1]):
                    if message.get("role") == "user" and not has_tool_result(message):
                        answer = self._match(prompt_text(message))
                        if isinstance(answer, ToolUse):
                            return answer.after_tool
                        break
                return Text("The command ran.")
            return self._match(prompt_text(last))

    def _match(self, prompt: str) -> Answer:
        for trigger, answer in self.script:
            if trigger in prompt:
                return answer
        return self.default


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def stream_events(answer: Answer, model: str) -> Iterator[tuple[bytes, float]]:
    """The SSE byte chunks of one streamed answer, each with the pause before it."""
    message_id = f"msg_{uuid.uuid4().hex[:24]}"
    usage = {"input_tokens": 10, "output_tokens": 1, "cache_creation_input_tokens": 0,
             "cache_read_input_tokens": 0}
    yield sse("message_start", {"type": "message_start", "message": {
        "id": message_id, "type": "message", "role": "assistant", "model": model,
        "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}}), 0.0
    if isinstance(answer, ToolUse):
        tool_id = f"toolu_{uuid.uuid4().hex[:24]}"
        yield sse("content_block_start", {"type": "content_block_start", "index": 0,
              "content_block": {"type": "tool_use", "id": tool_id, "name": answer.name,
                                "input": {}}}), 0.0
        yield sse("content_block_delta", {"type": "content_block_delta", "index": 0,
              "delta": {"type": "input_json_delta",
                        "partial_json": json.dumps(answer.input)}}), 0.0
        stop_reason = "tool_use"
    else:
        yield sse("content_block_start", {"type": "content_block_start", "index": 0,
              "content_block": {"type": "text", "text": ""}}), 0.0
        words = answer.text.split(" ")
        for i, word in enumerate(words):
            piece = word if i == len(words) - 1 else word + " "
            yield sse("content_block_delta", {"type": "content_block_delta", "index": 0,
                  "delta": {"type": "text_delta", "text": piece}}), answer.delay
        stop_reason = "end_turn"
    yield sse("content_block_stop", {"type": "content_block_stop", "index": 0}), 0.0
    yield sse("message_delta", {"type": "message_delta",
          "delta": {"stop_reason": stop_reason, "stop_sequence": None},
          "usage": {"output_tokens": 5}}), 0.0
    yield sse("message_stop", {"type": "message_stop"}), 0.0


def whole_message(answer: Answer, model: str) -> dict[str, Any]:
    """A non-streamed answer (Claude Code's side requests, titles and the like)."""
    text = answer.text if isinstance(answer, Text) else "ok"
    return {"id": f"msg_{uuid.uuid4().hex[:24]}", "type": "message", "role": "assistant",
            "model": model, "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn", "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5}}


class _Handler(BaseHTTPRequestHandler):
    api: FakeAnthropic
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the test's output is for the test

    def _reply_json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._reply_json(404, {"type": "error", "error": {"type": "not_found_error",
                                                          "message": self.path}})

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("content-length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            self._reply_json(400, {"type": "error", "error": {"type": "invalid_request_error",
                                                              "message": "not JSON"}})
            return
        path = self.path.split("?", 1)[0]
        if path == "/v1/messages/count_tokens":
            self._reply_json(200, {"input_tokens": 10})
            return
        if path != "/v1/messages":
            self._reply_json(404, {"type": "error", "error": {"type": "not_found_error",
                                                              "message": self.path}})
            return
        body["_path"] = self.path
        body["_received_at"] = time.time()
        self.api.record(body)
        answer = self.api.answer_for(body)
        model = str(body.get("model") or MODEL)
        if not body.get("stream"):
            self._reply_json(200, whole_message(answer, model))
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for chunk, pause in stream_events(answer, model):
                if pause:
                    time.sleep(pause)
                self.wfile.write(chunk)
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # Claude Code went away mid-answer (an interrupt): nothing to do
        body["_answered_at"] = time.time()  # for the benchmark: when the answer was complete


if __name__ == "__main__":
    fake = FakeAnthropic()
    fake.on("slow", Text("one two three four five six seven eight nine ten", delay=0.5))
    fake.on("run", ToolUse("Bash", {"command": "touch made-by-tool", "description": "make a file"}))
    fake.start(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
    print(fake.url, flush=True)
    seen = 0
    try:
        while True:
            time.sleep(0.2)
            for r in fake.requests[seen:]:
                print(json.dumps({"path": r["_path"], "model": r.get("model"),
                                  "stream": r.get("stream"), "tools": len(r.get("tools") or []),
                                  "messages": len(r.get("messages") or []),
                                  "last": (r.get("messages") or [{}])[-1]})[:3000], flush=True)
            seen = len(fake.requests)
    except KeyboardInterrupt:
        pass
