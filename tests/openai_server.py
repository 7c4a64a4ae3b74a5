"""A FAKE OpenAI-compatible chat server for tests: real HTTP on 127.0.0.1, no model behind it.

``FakeOpenAIServer`` answers ``POST /v1/chat/completions`` with a deterministic reply (by
default ``"echo: "`` plus the last user message; ``echo_context`` also reports the system
message and the history length), so a test can check what reached the LLM, and records every
request it receives, streaming or not. Point ``ChatOpenAI(base_url=server.base_url)`` or
``OPENAI_BASE_URL`` at it.

A ``"stream": true`` request gets Server-Sent Events the way the OpenAI API sends them, over
HTTP/1.1 with chunked transfer encoding: ``data: {json}\n\n`` events of
``chat.completion.chunk`` objects sharing one ``id``, ``created`` and ``model`` -- first a
delta with the assistant role and empty content, then the reply word by word, then an empty
delta with ``finish_reason: "stop"``, then (when ``stream_options.include_usage`` is true) a
chunk with no choices and the usage -- and finally ``data: [DONE]\n\n``.
"""

from __future__ import annotations

import json
import re
import sys
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


def echo_context(body: dict[str, Any]) -> str:
    """A reply that lists what the model saw, for tests of prompt assembly.

    ``"echo: <last user message> | system: <system text> | history: <N> earlier messages"``,
    where the system part (the text of every ``system`` message, joined by ``" / "``) is left
    out when there is none, and N counts the non-system messages before the last user message
    (``"1 earlier message"`` in the singular). Texts are copied verbatim, newlines included.
    """
    messages: list[dict[str, Any]] = body.get("messages", [])
    users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
    last = users[-1] if users else len(messages)
    parts = ["echo: " + (message_text(messages[last]) if users else "")]
    system = [message_text(m) for m in messages if m.get("role") == "system"]
    if system:
        parts.append("system: " + " / ".join(system))
    history = sum(1 for m in messages[:last] if m.get("role") != "system")
    parts.append(f"history: {history} earlier message{'' if history == 1 else 's'}")
    return " | ".join(parts)


def split_reply(text: str) -> list[str]:
    """The streamed content deltas of ``text``: word by word, each word with the whitespace
    before it, so that joining them gives ``text`` back exactly."""
    return re.findall(r"\s*\S+|\s+$", text)


class _QuietHTTPServer(ThreadingHTTPServer):
    """Daemon handler threads; a client that drops its connection is no error worth printing."""

    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


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
        self._httpd: _QuietHTTPServer | None = None
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
        self._httpd = _QuietHTTPServer(("127.0.0.1", 0), self._handler_class())
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

    @staticmethod
    def usage(body: dict[str, Any], text: str) -> dict[str, int]:
        """Token counts, as words: the prompt's messages and the reply ``text``."""
        prompt_words = sum(len(message_text(m).split()) for m in body.get("messages", []))
        completion_words = len(text.split())
        return {
            "prompt_tokens": prompt_words,
            "completion_tokens": completion_words,
            "total_tokens": prompt_words + completion_words,
        }

    def completion(self, body: dict[str, Any]) -> dict[str, Any]:
        """The ``chat.completion`` object answering one request body."""
        text = self.reply(body)
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
            "usage": self.usage(body, text),
        }

    def completion_chunks(self, body: dict[str, Any]) -> list[dict[str, Any]]:
        """The ``chat.completion.chunk`` objects streamed in answer to one request body."""
        text = self.reply(body)
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        head = {
            "id": f"chatcmpl-fake-{len(self.requests)}",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body.get("model") or self.model,
            "system_fingerprint": None,
        }

        def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
            choice = {"index": 0, "delta": delta, "logprobs": None,
                      "finish_reason": finish_reason}
            extra = {"usage": None} if include_usage else {}
            return {**head, "choices": [choice], **extra}

        chunks = [chunk({"role": "assistant", "content": ""})]
        chunks += [chunk({"content": piece}) for piece in split_reply(text)]
        chunks.append(chunk({}, "stop"))
        if include_usage:
            chunks.append({**head, "choices": [], "usage": self.usage(body, text)})
        return chunks

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1 keeps connections alive: every plain response carries Content-Length
            # and every stream is sent with chunked transfer encoding.
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # keep test output quiet
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _write_chunk(self, data: bytes) -> None:
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()

            def _stream(self, chunks: list[dict[str, Any]]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream; charset=utf-8")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for chunk in chunks:
                    self._write_chunk(f"data: {json.dumps(chunk)}\n\n".encode())
                self._write_chunk(b"data: [DONE]\n\n")
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()

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
                if not isinstance(body, dict):
                    self._error(400, "the body is not a JSON object")
                    return
                path = self.path.split("?", 1)[0]
                server._record(RecordedRequest(
                    "POST", path, {k.lower(): v for k, v in self.headers.items()}, body
                ))
                if path != "/v1/chat/completions":
                    self._error(404, f"no route {path}")
                elif body.get("stream"):
                    self._stream(server.completion_chunks(body))
                else:
                    self._send(200, server.completion(body))

        return Handler
