"""The README's RAG example runs as written: real Redis, real model, real ``ChatOpenAI``,
against a local FAKE OpenAI-compatible server that echoes the prompt back."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.openai_server import FakeOpenAIServer

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "# README: rag-example"


def readme_block(marker: str) -> str:
    """The fenced ```python block of the README whose first line is ``marker``."""
    blocks: list[str] = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)
    found = [b for b in blocks if b.splitlines()[0].strip() == marker]
    assert len(found) == 1, f"expected one README block starting with {marker!r}"
    return found[0]


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def example_env(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, redis_client: redis.Redis,
    openai_server: FakeOpenAIServer,
) -> Iterator[str]:
    """What the example reads: the test Redis with a fresh index, and the fake LLM."""
    name = f"t{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("MEMORY_ENGINE_REDIS_URL", redis_url)
    monkeypatch.setenv("MEMORY_ENGINE_INDEX", name)
    monkeypatch.setenv("MEMORY_ENGINE_KEY_PREFIX", name)
    monkeypatch.setenv("OPENAI_BASE_URL", openai_server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    yield name
    redis_client.execute_command("FT.DROPINDEX", name, "DD")
    redis_client.delete(f"{name}:meta")


def test_readme_rag_example_runs(
    example_env: str, openai_server: FakeOpenAIServer, redis_client: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code = readme_block(MARKER)
    namespace: dict[str, Any] = {"__name__": "readme_rag_example"}

    exec(compile(code, f"{README}:{MARKER}", "exec"), namespace)

    answer = namespace["answer"]
    assert answer.startswith("echo: ")
    # the recalled memories reached the prompt, with the question; bob's never did
    assert "- I'm allergic to peanuts" in answer
    assert "- My sister Ana lives in Toronto" in answer
    assert "Question: Can I eat a peanut butter sandwich?" in answer
    assert "I love peanut butter" not in answer
    assert capsys.readouterr().out.strip() == answer.strip()

    assert len(openai_server.requests) == 1
    request = openai_server.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.headers["authorization"] == "Bearer test"
    assert request.body["model"] == "gpt-4o-mini"
    assert [m["role"] for m in request.body["messages"]] == ["system", "user"]
    # the example wrote to the index the environment named
    assert redis_client.execute_command("FT.INFO", example_env)


CHAT_MARKER = "# README: memory-chat-example"


def test_readme_memory_chat_example_runs(
    example_env: str, openai_server: FakeOpenAIServer, redis_client: redis.Redis,
) -> None:
    code = readme_block(CHAT_MARKER)
    namespace: dict[str, Any] = {"__name__": "readme_memory_chat_example"}

    exec(compile(code, f"{README}:{CHAT_MARKER}", "exec"), namespace)

    assert len(openai_server.requests) == 2
    monday, tuesday = (r.body["messages"] for r in openai_server.requests)
    assert "(none)" in monday[0]["content"]  # nothing to remember yet
    # Tuesday's prompt: a fresh history, and Monday's fact recalled into the system message
    assert [m["role"] for m in tuesday] == ["system", "user"]
    assert "user: I'm allergic to peanuts." in tuesday[0]["content"]
    assert tuesday[1]["content"] == "Can I eat a satay sauce?"
    assert namespace["answer"].content == "echo: Can I eat a satay sauce?"
    # both days' turns are in alice's long-term memory: closing the engine wrote the queue
    keys = [k.decode() for k in redis_client.scan_iter(match=f"{example_env}:mem:*")]
    assert len(keys) == 4


LIFECYCLE_MARKER = "# README: lifecycle-example"


def test_readme_lifecycle_example_runs(
    example_env: str, redis_client: redis.Redis, capsys: pytest.CaptureFixture[str],
) -> None:
    code = readme_block(LIFECYCLE_MARKER)
    namespace: dict[str, Any] = {"__name__": "readme_lifecycle_example"}

    exec(compile(code, f"{README}:{LIFECYCLE_MARKER}", "exec"), namespace)

    totals, found, change = capsys.readouterr().out.splitlines()
    assert totals.startswith("{'before': 4, 'after': 2, ")
    assert totals.endswith("'summaries': 1}")
    assert found.startswith("summary On 6 May 2024: I adopted a beagle puppy named Biscuit.")
    assert change.startswith("consolidate stale (decay < 0.3): 3 memories of s1")
    (plan,) = namespace["plan"].users[0].plans
    assert [d.action.value for d in plan.decisions].count("consolidate") == 3
    assert plan.keep[0].reason == "pinned"
    # after the undo: the three turns and the pinned fact, and no summary
    keys = list(redis_client.scan_iter(match=f"{example_env}:mem:*"))
    kinds = sorted(redis_client.hget(k, "kind") for k in keys)
    assert kinds == [b"fact", b"turn", b"turn", b"turn"]
