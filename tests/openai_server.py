"""A FAKE OpenAI-compatible chat server for tests: real HTTP on 127.0.0.1, no model behind it.

``FakeOpenAIServer`` answers ``POST /v1/chat/completions`` with a deterministic reply (by
default ``"echo: "`` plus the last user message), so a test can check what reached the LLM,
and records every request it receives. Point ``ChatOpenAI(base_url=server.base_url)`` or
``OPENAI_BASE_URL`` at it. Streaming is not implemented yet: a ``"stream": true`` request
gets a 400 that says so.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

Reply = Callable[[dict[str, Any]], str]


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


def message_text(message: dict[str, Any]) -> str:
    """The text of a chat message whose content is a string or a list of parts."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            part.get("text", "") for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


def echo_last_user_message(body: dict[str, Any]) -> str:
    """The default reply: ``"echo: "`` and the text of the last user message."""
    users = [m for m in body.get("messages", []) if m.get("role") == "user"]
    return "echo: " + (message_text(users[-1]) if users else "")


class FakeOpenAIServer:
    """An OpenAI-compatible HTTP server in a background thread.

    Args:
        reply: Builds the assistant's text from the request body; echoes by default.
        model: The model name reported when a request names none.

    Example:
        >>> with FakeOpenAIServer() as server:
        ...     ChatOpenAI(model="m", base_url=server.base_url, api_key="test").invoke("hi")
        ...     assert server.requests[0].body["messages"][-1]["content"] == "hi"
    """

    def __init__(self, reply: Reply = echo_last_user_message, *, model: str = "fake-model"):
        self.reply = reply
        self.model = model
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the server is not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """What ``OPENAI_BASE_URL`` should be: ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> Self:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread."""
        if self._httpd is not None:
            return self
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._httpd is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        """The ``chat.completion`` object answering one request body."""
        text = self.reply(body)
        prompt_words = sum(len(message_text(m).split()) for m in body.get("messages", []))
        return {
            "id": f"chatcmpl-fake-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_words,
                "completion_tokens": len(text.split()),
                "total_tokens": prompt_words + len(text.split()),
            },
        }

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: int, message: str) -> None:
                self._send(status, {"error": {"message": message, "type": "invalid_request_error",
                                              "param": None, "code": None}})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw or b"{}")
                except json.JSONDecodeError:
                    self._error(400, "the body is not JSON")
                    return
                path = self.path.split("?", 1)[0]
                server._record(RecordedRequest(
                    "POST", path, {k.lower(): v for k, v in self.headers.items()}, body
                ))
                if path != "/v1/chat/completions":
                    self._error(404, f"no route {path}")
                elif body.get("stream"):
                    self._error(400, "FakeOpenAIServer does not stream yet")
                else:
                    self._send(200, server.completion(body))

        return Handler
