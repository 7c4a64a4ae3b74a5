"""The seed article's three ``RedisChatMessageHistory`` scenarios, written as the article
writes them with only the import and the constructor changed: real embedded Redis, real
model, real ``ChatOpenAI`` against a local FAKE OpenAI-compatible server (tests/openai_server).

The article's hard-coded host and key are replaced by the test's (``REDIS_URL``,
``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` come from the environment the fixture sets).
"""

from __future__ import annotations

import os
import uuid
import warnings
from collections.abc import Callable, Iterator

import pytest
import redis
from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import HumanMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import ConfigurableFieldSpec
from langchain_core.runnables.history import RunnableWithMessageHistory
from langchain_openai import ChatOpenAI

from memory_engine import EngineConfig, MemoryEngine
from memory_engine.embeddings import SentenceTransformerEmbedder
from memory_engine.langchain import MemoryChatMessageHistory, with_long_term_memory
from tests.openai_server import FakeOpenAIServer, echo_context

pytestmark = pytest.mark.integration


@pytest.fixture
def article_env(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, redis_client: redis.Redis,
) -> Iterator[FakeOpenAIServer]:
    """The article's environment: REDIS_URL (the test server, a fresh index), an OpenAI key
    and base URL pointing at the fake LLM."""
    name = f"t{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("REDIS_URL", redis_url)
    monkeypatch.setenv("MEMORY_ENGINE_INDEX", name)
    monkeypatch.setenv("MEMORY_ENGINE_KEY_PREFIX", name)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    monkeypatch.delenv("OPENAI_API_BASE", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    with FakeOpenAIServer(reply=echo_context) as server:
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        yield server
    for key in redis_client.scan_iter(match=f"{name}*"):
        redis_client.delete(key)
    redis_client.execute_command("FT.DROPINDEX", name)


def test_basic(article_env: FakeOpenAIServer) -> None:
    REDIS_URL = os.getenv("REDIS_URL", "redis://localhost:6379")

    history = MemoryChatMessageHistory(session_id="user_123", redis_url=REDIS_URL)

    # Add user and AI messages
    history.add_user_message("Hello, AI assistant!")
    history.add_ai_message("Hello! How can I assist you today?")

    # Retrieve and display stored messages
    printed = [f"{type(message).__name__}: {message.content}" for message in history.messages]
    assert printed == [
        "HumanMessage: Hello, AI assistant!",
        "AIMessage: Hello! How can I assist you today?",
    ]
    # a second object on the same session (a new invocation) loads the same history
    again = MemoryChatMessageHistory(session_id="user_123", redis_url=REDIS_URL)
    assert again.messages == history.messages


def test_multi_session(article_env: FakeOpenAIServer) -> None:
    llm = ChatOpenAI(model="gpt-4o-mini", temperature=0.7,
                     openai_api_key=os.environ["OPENAI_API_KEY"])

    def get_redis_history(session_id: str) -> BaseChatMessageHistory:
        return MemoryChatMessageHistory(session_id, redis_url=os.environ["REDIS_URL"])

    prompt = ChatPromptTemplate.from_messages([
        ("system", "You are a KK's Classroom AI assistant specialized in {ability}, "
                   "answer questions within 30 words."),
        MessagesPlaceholder(variable_name="history"),
        ("human", "{input}"),
    ])
    runnable = prompt | llm
    with_message_history = RunnableWithMessageHistory(
        runnable, get_redis_history, input_messages_key="input",
        history_messages_key="history",
    )
    response1 = with_message_history.invoke(
        {"ability": "Java Development", "input": HumanMessage("What is jvm?")},
        config={"configurable": {"session_id": "user_123"}},
    )
    response2 = with_message_history.invoke(
        {"ability": "Java Development", "input": HumanMessage("Please reanswer the question.")},
        config={"configurable": {"session_id": "user_123"}},
    )
    # the article passes a HumanMessage into a "{input}" template, so the LLM sees its repr
    assert "What is jvm?" in str(response1.content)
    # the second call's prompt carried the first exchange: history loaded across invocations
    second = article_env.requests[1].body["messages"]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user"]
    assert second[1]["content"] == "What is jvm?"
    assert second[2]["content"] == response1.content
    assert "history: 2 earlier messages" in str(response2.content)
    assert len(get_redis_history("user_123").messages) == 4


def _multi_user_chain() -> tuple[
    RunnableWithMessageHistory, Callable[[str, str], MemoryChatMessageHistory]
]:
    llm = ChatOpenAI(model="gpt-4o-mini", temperature=0.7,
                     openai_api_key=os.environ["OPENAI_API_KEY"])

    def get_redis_history(user_id: str, session_id: str) -> MemoryChatMessageHistory:
        return MemoryChatMessageHistory(session_id=session_id, user_id=user_id,
                                        redis_url=os.environ["REDIS_URL"])

    prompt = ChatPromptTemplate.from_messages([
        ("system", "You are a KK's Classroom AI assistant specialized in {ability}, "
                   "answer questions within 30 words."),
        MessagesPlaceholder(variable_name="history"),
        ("human", "{input}"),
    ])
    runnable = prompt | llm
    with_message_history = RunnableWithMessageHistory(
        runnable, get_redis_history, input_messages_key="input",
        history_messages_key="history",
        history_factory_config=[
            ConfigurableFieldSpec(id="user_id", annotation=str, name="UserId",
                                  description="Unique identifier for the user.", default="",
                                  is_shared=True),
            ConfigurableFieldSpec(id="session_id", annotation=str, name="SessionId",
                                  description="Unque identifier for the conversation.",
                                  default="", is_shared=True),
        ],
    )
    return with_message_history, get_redis_history


def test_multi_user_multi_session(article_env: FakeOpenAIServer) -> None:
    with_message_history, get_redis_history = _multi_user_chain()
    response1 = with_message_history.invoke(
        {"ability": "Java Development", "input": HumanMessage("What is jvm?")},
        config={"configurable": {"user_id": "user_1", "session_id": "session_1"}},
    )
    response2 = with_message_history.invoke(
        {"ability": "Java Development", "input": HumanMessage("Please reanswer the question.")},
        config={"configurable": {"user_id": "user_2", "session_id": "session_1"}},
    )
    user_1 = get_redis_history("user_1", "session_1").messages
    user_2 = get_redis_history("user_2", "session_1").messages
    assert user_1 == [HumanMessage("What is jvm?"), response1]  # metadata and all
    assert [m.content for m in user_2] == ["Please reanswer the question.", response2.content]
    # user_2's prompt held nothing of user_1's conversation, though the session id is the same
    seen = article_env.requests[1].body["messages"]
    assert [m["role"] for m in seen] == ["system", "user"]
    assert "history: 0 earlier messages" in str(response2.content)


def test_a_fact_from_session_1_reaches_the_prompt_in_session_2(
    article_env: FakeOpenAIServer, minilm: SentenceTransformerEmbedder,
) -> None:
    engine = MemoryEngine(EngineConfig.from_env().with_(redis_url=os.environ["REDIS_URL"]),
                          embedder=minilm)
    llm = ChatOpenAI(model="gpt-4o-mini", temperature=0.7,
                     openai_api_key=os.environ["OPENAI_API_KEY"])
    prompt = ChatPromptTemplate.from_messages([
        ("system", "You are a KK's Classroom AI assistant specialized in {ability}. "
                   "What you remember about this user:\n{memories}"),
        MessagesPlaceholder(variable_name="history"),
        ("human", "{input}"),
    ])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chain = with_long_term_memory(prompt | llm, engine=engine, k=3)
    # langchain-core's deprecation of the class it builds on is not the caller's to act on
    assert [str(w.message) for w in caught if issubclass(w.category, DeprecationWarning)] == []
    try:
        for text in ("My name is Ana and my favourite language is Kotlin.",
                     "I am preparing for a certification exam in March."):
            chain.invoke({"ability": "Java Development", "input": HumanMessage(text)},
                         config={"configurable": {"user_id": "user_1",
                                                  "session_id": "session_1"}})
        chain.invoke({"ability": "Java Development",
                      "input": HumanMessage("I only like Python, to be honest.")},
                     config={"configurable": {"user_id": "user_2", "session_id": "session_1"}})
        engine.flush()  # the long-term writes are queued off the request path
        reply = chain.invoke(
            {"ability": "Java Development",
             "input": HumanMessage("Which programming language do I like best?")},
            config={"configurable": {"user_id": "user_1", "session_id": "session_2"}},
        )
        system = article_env.requests[-1].body["messages"][0]["content"]
        assert "favourite language is Kotlin" in system  # recalled from session 1
        assert "Python" not in system  # user_2's memory never reaches user_1's prompt
        assert "Kotlin" in str(reply.content)  # the echo shows what the LLM received
        # session 2 started empty: its history holds only its own exchange
        history = MemoryChatMessageHistory(session_id="session_2", user_id="user_1",
                                           engine=engine)
        assert len(history) == 2
        # the first call of session 1 had nothing to recall
        assert "(none)" in article_env.requests[0].body["messages"][0]["content"]
    finally:
        engine.close()
