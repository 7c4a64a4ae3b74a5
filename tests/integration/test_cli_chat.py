"""``memory-engine chat`` run as a user would run it: a subprocess reading stdin, on the
test's Redis, talking to a FAKE OpenAI-compatible server (``tests/openai_server.py``)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from langchain_core.documents import Document

from memory_engine._chat import recalled_lines
from tests.openai_server import FakeOpenAIServer, RecordedRequest, echo_context, message_text

pytestmark = pytest.mark.integration

BISCUIT = "My dog is called Biscuit"
QUESTION = "What is my dog called?"


@dataclass
class ChatSetup:
    env: dict[str, str]
    server: FakeOpenAIServer
    session_1: subprocess.CompletedProcess[str]
    requests_1: list[RecordedRequest]


def _base_env(extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without any OPENAI_* or MEMORY_ENGINE_* setting, plus
    ``extra``."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OPENAI_", "MEMORY_ENGINE_"))}
    return {**env, "HF_HUB_OFFLINE": "1", **extra}


def _chat(*args: str, env: dict[str, str], stdin: str,
          timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "memory_engine.cli", "chat", *args], env=env,
                          input=stdin, capture_output=True, text=True, timeout=timeout)


def _drop(client: redis.Redis, name: str) -> None:
    if name.encode() in client.execute_command("FT._LIST"):
        client.execute_command("FT.DROPINDEX", name, "DD")
    for key in client.scan_iter(match=f"{name}*", count=1000):
        client.delete(key)


def _recalled(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("  recalled: ")]


def _system(request: RecordedRequest) -> str:
    return " / ".join(message_text(m) for m in request.body["messages"]
                      if m.get("role") == "system")


@pytest.fixture(scope="module")
def remembered(redis_url: str, redis_client: redis.Redis) -> Iterator[ChatSetup]:
    """Session s1 of user ana told the assistant about Biscuit (and then typed /exit)."""
    name = f"chat{uuid.uuid4().hex[:12]}"
    with FakeOpenAIServer(reply=echo_context) as server:
        env = _base_env({
            "MEMORY_ENGINE_REDIS_URL": redis_url, "MEMORY_ENGINE_INDEX": name,
            "MEMORY_ENGINE_KEY_PREFIX": name, "OPENAI_BASE_URL": server.base_url,
            "OPENAI_API_KEY": "test", "NO_PROXY": "127.0.0.1,localhost",
            "no_proxy": "127.0.0.1,localhost",
        })
        try:
            # the line after /exit must never reach the model
            proc = _chat("--user", "ana", "--session", "s1", env=env,
                         stdin=f"{BISCUIT}\n\n/exit\nMy cat is called Tom\n")
            yield ChatSetup(env, server, proc, list(server.requests))
        finally:
            _drop(redis_client, name)


def test_no_llm_configured_exits_2_with_how_to(
    redis_url: str, redis_client: redis.Redis
) -> None:
    name = f"chat{uuid.uuid4().hex[:12]}"
    env = _base_env({"MEMORY_ENGINE_REDIS_URL": redis_url, "MEMORY_ENGINE_INDEX": name,
                     "MEMORY_ENGINE_KEY_PREFIX": name})
    try:
        proc = _chat("--user", "ana", env=env, stdin="hello\n", timeout=60)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("memory-engine: error: ")
        assert "export OPENAI_API_KEY=" in proc.stderr
        assert "export OPENAI_BASE_URL=http://127.0.0.1:8000/v1" in proc.stderr
        assert "Traceback" not in proc.stderr
        assert proc.stdout == ""
        # it stopped before the engine: no index was created
        assert name.encode() not in redis_client.execute_command("FT._LIST")
    finally:
        _drop(redis_client, name)


def test_first_session_streams_and_remembers(remembered: ChatSetup) -> None:
    proc = remembered.session_1
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr
    assert "user 'ana', session 's1'" in proc.stdout
    assert _recalled(proc.stdout) == ["  recalled: nothing yet"]
    # the empty line was skipped and nothing after /exit was sent: one request only
    assert len(remembered.requests_1) == 1
    request = remembered.requests_1[0]
    assert request.path == "/v1/chat/completions"
    assert request.body["stream"] is True
    assert request.body["messages"][-1] == {"role": "user", "content": BISCUIT}
    assert "(none)" in _system(request)
    assert f"assistant: echo: {BISCUIT} | system: " in proc.stdout
    assert "Tom" not in proc.stdout
    assert "remembered 1 turn of session 's1' for user 'ana'" in proc.stdout


def test_second_session_recalls_the_first(remembered: ChatSetup) -> None:
    server = remembered.server
    before = len(server.requests)
    proc = _chat("--user", "ana", "--session", "s2", env=remembered.env,
                 stdin=f"{QUESTION}\n")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    new = server.requests[before:]
    assert len(new) == 1
    request = new[-1]
    assert request.body["stream"] is True
    assert request.body["messages"][-1] == {"role": "user", "content": QUESTION}
    assert BISCUIT in _system(request)
    # s1's turns are memories here, not history of s2
    assert [m["role"] for m in request.body["messages"]] == ["system", "user"]

    lines = proc.stdout.splitlines()
    recalled = _recalled(proc.stdout)
    biscuit = [line for line in recalled if "Biscuit" in line]
    assert biscuit, proc.stdout
    assert any(line.endswith(f" user: {BISCUIT}") for line in biscuit), recalled
    assert "  recalled: nothing yet" not in recalled
    reply = next(i for i, line in enumerate(lines) if line.startswith("assistant: "))
    assert lines.index(biscuit[0]) < reply, "the memories are shown before the reply"
    # the streamed reply is the fake model's: the question and the system prompt it saw
    assert lines[reply].startswith(f"assistant: echo: {QUESTION} | system: ")
    assert "history: 0 earlier messages" in proc.stdout
    assert "remembered 1 turn of session 's2' for user 'ana'" in proc.stdout


def test_other_user_recalls_nothing(remembered: ChatSetup) -> None:
    server = remembered.server
    before = len(server.requests)
    proc = _chat("--user", "bob", "--session", "s2", env=remembered.env,
                 stdin=f"{QUESTION}\n")
    assert proc.returncode == 0, proc.stderr
    assert _recalled(proc.stdout) == ["  recalled: nothing yet"]
    new = server.requests[before:]
    assert len(new) == 1
    assert "Biscuit" not in _system(new[0])
    assert "Biscuit" not in proc.stdout
    assert f"assistant: echo: {QUESTION}" in proc.stdout


def test_errors_are_one_line_without_traceback(remembered: ChatSetup) -> None:
    # the fake server answers 404 outside /v1: an HTTP error from the chat model
    env = {**remembered.env,
           "OPENAI_BASE_URL": remembered.server.base_url.removesuffix("/v1") + "/nowhere"}
    proc = _chat("--user", "ana", "--session", "s3", env=env, stdin=f"{QUESTION}\n")
    assert proc.returncode == 1, proc.stdout
    assert proc.stderr.startswith("memory-engine: error: the chat model failed: ")
    assert "404" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "remembered 0 turns" in proc.stdout
    # Redis down: the engine's error, before any input is read
    env = {**remembered.env, "MEMORY_ENGINE_REDIS_URL": "redis://127.0.0.1:1/0"}
    proc = _chat("--user", "ana", "--session", "s3", env=env, stdin=f"{QUESTION}\n")
    assert proc.returncode == 2, proc.stdout
    assert proc.stderr.startswith("memory-engine: error: ")
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "assistant:" not in proc.stdout


def test_recalled_lines_are_one_line_each() -> None:
    assert recalled_lines([]) == ["  recalled: nothing yet"]
    day = 1714564800.0  # 2024-05-01 12:00 UTC
    short = Document("My dog\nis Biscuit", metadata={"created_at": day, "role": "user"})
    long = Document("x" * 500, metadata={"created_at": day, "name": "Ana", "role": "user"})
    lines = recalled_lines([short, long])
    assert lines[0] == "  recalled: (2024-05-01) user: My dog is Biscuit"
    assert lines[1].startswith("  recalled: (2024-05-01) Ana: xxx")
    assert lines[1].endswith("x\u2026")
    assert len(lines[1]) == len("  recalled: ") + 200
