"""``LLMSummarizer`` with the real ``ChatOpenAI`` against a local FAKE OpenAI-compatible server
(tests/openai_server), driven by ``maintain`` on the real embedded Redis and the real model."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda
from langchain_openai import ChatOpenAI

from memory_engine import EngineConfig, MemoryEngine
from memory_engine.embeddings import SentenceTransformerEmbedder
from memory_engine.exceptions import SummarizerError
from memory_engine.langchain import LLMSummarizer
from memory_engine.lifecycle.summarize import SUMMARY_PROMPT, transcript
from memory_engine.models import Kind, Memory
from tests.openai_server import FakeOpenAIServer, message_text

pytestmark = pytest.mark.integration

USER = "caroline"
SUMMARY = ("Caroline went to an LGBTQ support group on 7 May 2023 and plans to adopt a child; "
           "Melanie is painting a sunrise.")
DAY = 86_400.0
START = datetime(2023, 5, 8, 13, 0, tzinfo=UTC).timestamp()
# One topic, one session, two days: (seconds after START, speaker, text).
TURNS = [
    (0, "Caroline", "I went to an LGBTQ support group yesterday and it was so powerful."),
    (60, "Melanie", "That support group sounds powerful, Caroline. What did you learn there?"),
    (120, "Caroline", "The support group stories of transgender people gave me courage."),
    (DAY, "Caroline", "After the support group I started researching adoption agencies."),
    (DAY + 60, "Melanie", "Adoption after the support group? Caroline, that is wonderful."),
    (DAY + 120, "Caroline", "The support group helped me decide to adopt a child on my own."),
]
NOW = START + 400 * DAY


def fixed(text: str) -> Callable[[dict[str, Any]], str]:
    return lambda body: text


def chat(server: FakeOpenAIServer) -> ChatOpenAI:
    return ChatOpenAI(model="gpt-4o-mini", base_url=server.base_url, api_key="test",
                      max_retries=0)


@pytest.fixture
def no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


@pytest.fixture
def summary_server(no_proxy: None) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(reply=fixed(SUMMARY)) as server:
        yield server


@pytest.fixture
def empty_server(no_proxy: None) -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(reply=fixed("")) as server:
        yield server


EngineFactory = Callable[[FakeOpenAIServer], MemoryEngine]


@pytest.fixture
def make_engine(
    config: EngineConfig, minilm: SentenceTransformerEmbedder, redis_client: redis.Redis,
) -> Iterator[EngineFactory]:
    """Connected engines on this test's index whose summarizer asks the given fake server;
    the index, its documents and every key under the prefix are dropped after."""
    engines: list[MemoryEngine] = []

    def make(server: FakeOpenAIServer) -> MemoryEngine:
        eng = MemoryEngine(config, embedder=minilm, summarizer=LLMSummarizer(chat(server)))
        engines.append(eng.connect())
        return eng

    yield make
    for eng in engines:
        eng.close()
    if engines:
        redis_client.execute_command("FT.DROPINDEX", config.index_name, "DD")
    for key in redis_client.scan_iter(match=f"{config.key_prefix}:*"):
        redis_client.delete(key)


def add_turns(engine: MemoryEngine) -> list[Memory]:
    return [engine.add(USER, text, session_id="s1", role="user", name=who,
                       created_at=START + offset)
            for offset, who, text in TURNS]


def expected_transcript() -> str:
    return "\n".join([
        "[8 May 2023] Caroline: " + TURNS[0][2],
        "[8 May 2023] Melanie: " + TURNS[1][2],
        "[8 May 2023] Caroline: " + TURNS[2][2],
        "[9 May 2023] Caroline: " + TURNS[3][2],
        "[9 May 2023] Melanie: " + TURNS[4][2],
        "[9 May 2023] Caroline: " + TURNS[5][2],
    ])


def test_request_holds_prompt_and_dated_transcript_in_order(
    make_engine: EngineFactory, summary_server: FakeOpenAIServer,
) -> None:
    engine = make_engine(summary_server)
    memories = add_turns(engine)
    summarizer = LLMSummarizer(chat(summary_server))

    assert summarizer.summarize(memories) == SUMMARY

    assert len(summary_server.requests) == 1
    request = summary_server.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.body["model"] == "gpt-4o-mini"
    messages = request.body["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert message_text(messages[0]) == SUMMARY_PROMPT
    assert message_text(messages[1]) == expected_transcript() == transcript(memories)


def test_maintain_writes_the_llm_reply_as_the_summary(
    make_engine: EngineFactory, summary_server: FakeOpenAIServer,
) -> None:
    engine = make_engine(summary_server)
    turns = add_turns(engine)
    turn_ids = tuple(m.id for m in turns)
    assert engine.summarizer.name == "llm:gpt-4o-mini"

    report = engine.maintain(USER, now=NOW)

    assert report.summarizer == "llm:gpt-4o-mini"
    assert report.total("consolidated") == len(TURNS)
    assert report.total("summaries") == 1
    assert engine.count(USER) == 1
    # the model was asked once, with the six turns dated, oldest first
    assert len(summary_server.requests) == 1
    assert message_text(summary_server.requests[0].body["messages"][1]) == expected_transcript()

    trail = engine.audit_trail(USER)
    consolidations = [e for e in trail if e.action == "consolidate"]
    assert len(consolidations) == 1
    entry = consolidations[0]
    assert entry.summarizer is not None
    assert entry.summarizer.startswith("llm")
    assert entry.source_ids == turn_ids
    assert entry.summary_id is not None

    summary = engine.get(USER, entry.summary_id)
    assert summary.kind is Kind.SUMMARY
    assert summary.text == SUMMARY
    assert summary.replaces == turn_ids
    assert summary.replaced_sessions == ("s1",)
    for memory_id in turn_ids:
        with pytest.raises(KeyError):
            engine.get(USER, memory_id)


def test_empty_reply_raises_and_changes_nothing(
    make_engine: EngineFactory, empty_server: FakeOpenAIServer,
) -> None:
    engine = make_engine(empty_server)
    turns = add_turns(engine)

    with pytest.raises(SummarizerError, match="no text"):
        engine.maintain(USER, now=NOW)

    assert len(empty_server.requests) == 1  # the model was asked, and answered ""
    assert engine.count(USER) == len(TURNS)
    assert [engine.get(USER, m.id).text for m in turns] == [t[2] for t in TURNS]
    assert engine.audit_trail(USER) == []


async def test_asummarize_awaits_the_model(
    make_engine: EngineFactory, summary_server: FakeOpenAIServer,
) -> None:
    engine = make_engine(summary_server)
    memories = add_turns(engine)
    summarizer = LLMSummarizer(chat(summary_server))

    assert await summarizer.asummarize(memories) == SUMMARY

    assert len(summary_server.requests) == 1
    messages = summary_server.requests[0].body["messages"]
    assert message_text(messages[0]) == SUMMARY_PROMPT
    assert message_text(messages[1]) == expected_transcript()


async def test_asummarize_rejects_an_empty_reply(
    make_engine: EngineFactory, empty_server: FakeOpenAIServer,
) -> None:
    memories = add_turns(make_engine(empty_server))

    with pytest.raises(SummarizerError, match="no text"):
        await LLMSummarizer(chat(empty_server)).asummarize(memories)


def test_name_and_content_blocks(
    make_engine: EngineFactory, summary_server: FakeOpenAIServer,
) -> None:
    memories = add_turns(make_engine(summary_server))
    # the model name is found through wrappers
    assert LLMSummarizer(chat(summary_server).with_retry()).name == "llm:gpt-4o-mini"
    # a reply made of content blocks gives the text of its text blocks
    blocks = RunnableLambda(lambda _: AIMessage(content=[
        {"type": "text", "text": " Caroline plans "}, {"type": "image_url", "image_url": {}},
        "to adopt. ",
    ]))
    summarizer = LLMSummarizer(blocks)
    assert summarizer.name == "llm"
    assert summarizer.summarize(memories) == "Caroline plans to adopt."
    # a reply with no text at all is an error, not an empty summary
    no_text = LLMSummarizer(RunnableLambda(lambda _: AIMessage(content=[
        {"type": "image_url", "image_url": {}}])))
    with pytest.raises(SummarizerError, match="no text"):
        no_text.summarize(memories)
    with pytest.raises(ValueError, match="nothing to summarize"):
        LLMSummarizer(chat(summary_server)).summarize([])
