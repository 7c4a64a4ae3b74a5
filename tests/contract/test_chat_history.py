"""Chat-history contract suite (langchain-tests has none): what any ``BaseChatMessageHistory``
user relies on, for ``MemoryChatMessageHistory`` on the real embedded Redis and model.

Ordering, round-trip of every message type, clear, TTL expiry, isolation between users and
sessions, sync/async parity, bad input, and the long-term writes.
"""

from __future__ import annotations

import time

import pytest
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)

from memory_engine import AsyncMemoryEngine, EngineConfig, MemoryEngine, NewMemory
from memory_engine.embeddings import SentenceTransformerEmbedder
from memory_engine.exceptions import InvalidArgumentError, InvalidInputError
from memory_engine.langchain import MemoryChatMessageHistory

pytestmark = pytest.mark.integration


def every_message_type() -> list[BaseMessage]:
    return [
        SystemMessage("You are terse.", id="m-sys"),
        HumanMessage("Book me a table for two",
                     additional_kwargs={"client": {"ip": "127.0.0.1"}}, name="ana", id="m-h"),
        AIMessage("", tool_calls=[{"name": "book", "args": {"seats": 2}, "id": "call-1"}],
                  response_metadata={"model_name": "m", "finish_reason": "tool_calls"},
                  usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
                  id="m-ai-1"),
        ToolMessage('{"ok": true}', tool_call_id="call-1", artifact={"table": 7}, id="m-tool"),
        FunctionMessage("42", name="lookup", id="m-fn"),
        ChatMessage("a custom role", role="critic", id="m-chat"),
        AIMessageChunk("partial reply", id="m-chunk"),
        HumanMessage([{"type": "text", "text": "multimodal text part"}], id="m-parts"),
        AIMessage("Done: table 7 at 8pm. 🍷", id="m-ai-2"),
    ]


@pytest.fixture
def history(engine: MemoryEngine) -> MemoryChatMessageHistory:
    return MemoryChatMessageHistory(session_id="s1", user_id="alice", engine=engine)


def test_messages_keep_their_order_and_are_never_capped(
    history: MemoryChatMessageHistory,
) -> None:
    sent = [HumanMessage(f"message {i}") if i % 2 else AIMessage(f"reply {i}")
            for i in range(250)]
    for message in sent[:50]:
        history.add_message(message)
    history.add_messages(sent[50:])
    assert [m.content for m in history.messages] == [m.content for m in sent]
    assert len(history) == 250


def test_every_message_type_round_trips(history: MemoryChatMessageHistory) -> None:
    sent = every_message_type()
    history.add_messages(sent)
    got = history.messages
    assert got == sent
    assert [type(m) for m in got] == [type(m) for m in sent]
    assert got[2].tool_calls[0]["args"] == {"seats": 2}  # type: ignore[attr-defined]
    assert got[3].artifact == {"table": 7}  # type: ignore[attr-defined]
    assert got[1].additional_kwargs == {"client": {"ip": "127.0.0.1"}}


def test_user_and_ai_helpers(history: MemoryChatMessageHistory) -> None:
    history.add_user_message("Hello, AI assistant!")
    history.add_ai_message("Hello! How can I assist you today?")
    assert [(type(m).__name__, m.content) for m in history.messages] == [
        ("HumanMessage", "Hello, AI assistant!"),
        ("AIMessage", "Hello! How can I assist you today?"),
    ]


def test_clear_empties_this_session_only(engine: MemoryEngine) -> None:
    one = MemoryChatMessageHistory(session_id="s1", user_id="alice", engine=engine)
    two = MemoryChatMessageHistory(session_id="s2", user_id="alice", engine=engine)
    one.add_user_message("first session")
    two.add_user_message("second session")
    one.clear()
    assert one.messages == []
    assert len(one) == 0
    assert [m.content for m in two.messages] == ["second session"]
    one.add_user_message("after clear")  # a cleared session starts again cleanly
    assert [m.content for m in one.messages] == ["after clear"]


def test_users_sharing_a_session_id_never_mix(engine: MemoryEngine) -> None:
    alice = MemoryChatMessageHistory(session_id="session_1", user_id="user_1", engine=engine)
    bob = MemoryChatMessageHistory(session_id="session_1", user_id="user_2", engine=engine)
    alice.add_user_message("alice's secret")
    bob.add_user_message("bob's note")
    assert [m.content for m in alice.messages] == ["alice's secret"]
    assert [m.content for m in bob.messages] == ["bob's note"]
    bob.clear()
    assert [m.content for m in alice.messages] == ["alice's secret"]
    engine.flush()
    assert [h["content"] for h in bob.search_messages("secret")] == []


def test_key_prefix_separates_namespaces(engine: MemoryEngine) -> None:
    a = MemoryChatMessageHistory(session_id="s", user_id="u", engine=engine, key_prefix="a:")
    b = MemoryChatMessageHistory(session_id="s", user_id="u", engine=engine, key_prefix="b:")
    a.add_user_message("in a")
    assert b.messages == []


def test_ttl_expires_messages_and_reads_do_not_refresh_it(engine: MemoryEngine) -> None:
    history = MemoryChatMessageHistory(session_id="s1", user_id="alice", engine=engine, ttl=2)
    history.add_user_message("old")
    time.sleep(1.2)
    assert [m.content for m in history.messages] == ["old"]  # a read: no refresh
    history.add_user_message("new")
    time.sleep(1.2)  # "old" is 2.4 s old, "new" 1.2 s
    assert [m.content for m in history.messages] == ["new"]
    time.sleep(1.2)
    assert history.messages == []
    assert len(history) == 0


def test_long_term_memory_gets_the_turns_off_the_add_path(engine: MemoryEngine) -> None:
    history = MemoryChatMessageHistory(session_id="trip", user_id="alice", engine=engine)
    history.add_messages([
        SystemMessage("system prompts are not memories"),
        HumanMessage("I am flying to Lisbon on the 3rd of May"),
        AIMessage("", tool_calls=[{"name": "t", "args": {}, "id": "c"}]),  # no text: skipped
        ToolMessage("tool output is not a memory", tool_call_id="c"),
        AIMessage("Have a great trip to Lisbon!"),
    ])
    engine.flush()
    assert engine.pending_writes == 0
    assert engine.count("alice") == 2
    hits = engine.search("alice", "when is the Lisbon flight?", k=5)
    top = hits[0].memory
    assert top.text == "I am flying to Lisbon on the 3rd of May"
    assert (top.session_id, top.role.value if top.role else None) == ("trip", "user")
    assert top.metadata["chat_session"] == "chat:trip"
    found = history.search_messages("Lisbon flight", limit=1)
    assert len(found) == 1
    assert found[0]["content"] == "I am flying to Lisbon on the 3rd of May"
    assert isinstance(found[0]["message"], HumanMessage)
    quiet = MemoryChatMessageHistory(session_id="q", user_id="bob", engine=engine,
                                     remember=False)
    quiet.add_user_message("not for long-term memory")
    engine.flush()
    assert engine.count("bob") == 0


def test_search_messages_leaves_out_cleared_messages(history: MemoryChatMessageHistory) -> None:
    history.add_user_message("my locker code is 4711")
    history.engine.flush()
    assert len(history.search_messages("locker code")) == 1
    history.clear()
    assert history.search_messages("locker code") == []


@pytest.mark.parametrize("bad", [
    {"session_id": ""}, {"session_id": None}, {"session_id": "s", "ttl": 0},
    {"session_id": "s", "ttl": 1.5}, {"session_id": "s", "user_id": ""},
    {"session_id": "s", "socket_timeout": 3},
])
def test_bad_constructor_arguments_raise(engine: MemoryEngine, bad: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):  # InvalidArgumentError, InvalidUserIdError, ...
        MemoryChatMessageHistory(engine=engine, **bad)  # type: ignore[arg-type]


def test_bad_messages_raise_before_anything_is_written(
    history: MemoryChatMessageHistory,
) -> None:
    history.add_user_message("kept")
    with pytest.raises(InvalidArgumentError):
        history.add_messages([HumanMessage("fine"), "not a message"])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError):
        history.add_messages(HumanMessage("not a list"))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="not valid Unicode"):
        history.add_messages([HumanMessage("fine"), AIMessage("half a pair \ud83d")])
    assert [m.content for m in history.messages] == ["kept"]


async def test_async_twins_match_the_sync_methods(engine: MemoryEngine) -> None:
    history = MemoryChatMessageHistory(session_id="s-async", user_id="alice", engine=engine)
    sent = every_message_type()
    await history.aadd_messages(sent[:4])
    history.add_messages(sent[4:])  # sync and async write the same store
    assert await history.aget_messages() == sent
    assert history.messages == sent
    await history.aclear()
    assert history.messages == []
    assert await history.aget_messages() == []
    await history.aadd_messages([HumanMessage("remember me, async")])
    engine.flush()
    assert [h.memory.text for h in engine.search("alice", "remember async", k=1)] == [
        "remember me, async"]


def test_add_later_rejects_bad_items_before_queueing(engine: MemoryEngine) -> None:
    with pytest.raises(InvalidInputError):
        engine.add_later("alice", [NewMemory(text="fine"), NewMemory(text="   ")])
    with pytest.raises(InvalidInputError):
        engine.add_later("", ["no user"])
    assert engine.pending_writes == 0
    engine.add_later("alice", ["queued and written"])
    engine.flush()
    assert engine.count("alice") == 1


async def test_async_engine_add_later_writes_in_the_background(
    config: EngineConfig, minilm: SentenceTransformerEmbedder,
) -> None:
    async with AsyncMemoryEngine(config, embedder=minilm) as engine:
        await engine.add_later("alice", ["queued on the loop", {"text": "and another"}])
        assert engine.pending_writes == 2
        await engine.flush()
        assert engine.pending_writes == 0
        assert await engine.count("alice") == 2
        await engine.add_later("alice", ["written by close"])
    async with AsyncMemoryEngine(config, embedder=minilm) as engine:
        assert await engine.count("alice") == 3
        await engine.forget_user("alice")
