"""MemoryRetriever on the real Redis and the real model: documents, k, binding, async."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest
from langchain_core.documents import Document
from pydantic import ValidationError

from memory_engine import (
    AsyncMemoryEngine,
    ConfigurationError,
    EngineConfig,
    InvalidArgumentError,
    MemoryEngine,
    MemoryEngineError,
)
from memory_engine.embeddings import SentenceTransformerEmbedder
from memory_engine.langchain import MemoryRetriever

pytestmark = pytest.mark.integration

# query -> the memory that must come first, per user; the two users share themes on purpose
ALICE = {
    "which insects do I keep on the roof?": "I keep bees on my rooftop in Porto",
    "where does my sister live?": "My sister Ana lives in Toronto",
    "what food am I allergic to?": "I am allergic to peanuts",
    "which instrument do I practise?": "I practise the cello every evening",
    "what car do I drive?": "I drive a red Volvo from 2009",
}
BOB = {
    "which insects do I keep on the roof?": "Bob keeps no insects, only pigeons on his roof",
    "where does my sister live?": "Bob's sister Maria lives in Oslo",
    "what food am I allergic to?": "Bob is allergic to shellfish",
    "which instrument do I practise?": "Bob plays the drums in a garage band",
    "what car do I drive?": "Bob rides a blue bicycle, he has no car",
}


def seed(engine: MemoryEngine) -> None:
    engine.add_many("alice", list(ALICE.values()))
    engine.add_many("bob", list(BOB.values()))


@pytest.fixture
async def aengine(
    engine: MemoryEngine, config: EngineConfig, minilm: SentenceTransformerEmbedder
) -> AsyncIterator[AsyncMemoryEngine]:
    """An async engine on the same index as ``engine`` (which drops it afterwards)."""
    async with AsyncMemoryEngine(config, embedder=minilm) as eng:
        yield eng


def test_documents_carry_id_score_parts_and_metadata(engine: MemoryEngine) -> None:
    stored = engine.add(
        "alice", "I keep bees on my rooftop in Porto", session_id="s1", role="user",
        name="Alice", metadata={"source": "chat", "tags": ["hobby"], "n": 3},
    )
    engine.add("alice", "My sister Ana lives in Toronto", kind="fact")
    retriever = MemoryRetriever(engine=engine, user_id="alice")

    docs = retriever.invoke("bees on the roof")

    assert all(isinstance(d, Document) for d in docs)
    top = docs[0]
    assert top.page_content == stored.text
    assert top.id == stored.id
    meta = top.metadata
    assert meta["id"] == stored.id
    assert meta["user_id"] == "alice"
    assert meta["session_id"] == "s1"
    assert meta["kind"] == "turn"
    assert type(meta["kind"]) is str
    assert meta["role"] == "user"
    assert type(meta["role"]) is str
    assert meta["name"] == "Alice"
    assert meta["created_at"] == pytest.approx(stored.created_at)
    assert meta["metadata"] == {"source": "chat", "tags": ["hobby"], "n": 3}
    assert set(meta["score_parts"]) == {"keyword", "vector", "decay"}
    assert meta["score_parts"]["keyword"] > 0  # "bees" and "rooftop" are words of the memory
    assert 0 < meta["score_parts"]["vector"] <= 1
    assert meta["score"] >= docs[1].metadata["score"]
    # everything survives a JSON round trip unchanged
    assert json.loads(json.dumps(meta)) == meta
    fact = next(d for d in docs if d.page_content.startswith("My sister"))
    assert fact.metadata["kind"] == "fact"
    assert fact.metadata["role"] is None
    assert fact.metadata["session_id"] is None
    assert fact.metadata["metadata"] == {}


def test_keyword_mode_has_no_vector_part(engine: MemoryEngine) -> None:
    seed(engine)
    retriever = MemoryRetriever(engine=engine, user_id="alice", mode="keyword")
    docs = retriever.invoke("peanuts")
    assert [d.page_content for d in docs] == ["I am allergic to peanuts"]
    assert docs[0].metadata["score_parts"]["vector"] is None
    assert docs[0].metadata["score_parts"]["keyword"] > 0


def test_k_default_field_and_per_call(engine: MemoryEngine) -> None:
    engine.add_many("alice", [f"Note {i}: I like hiking trail number {i}" for i in range(8)])
    retriever = MemoryRetriever(engine=engine, user_id="alice")
    assert len(retriever.invoke("hiking trails")) == 4
    assert len(retriever.invoke("hiking trails", k=2)) == 2
    assert len(retriever.invoke("hiking trails", k=7)) == 7
    assert len(MemoryRetriever(engine=engine, user_id="alice", k=6).invoke("hiking")) == 6
    # a per-call k does not stick
    assert len(retriever.invoke("hiking trails")) == 4


def test_search_options_from_fields_and_per_call(engine: MemoryEngine) -> None:
    engine.add("alice", "I like green tea in the morning", kind="fact")
    engine.add("alice", "I had green tea with Ana today")
    facts = MemoryRetriever(engine=engine, user_id="alice", search_kwargs={"kinds": ["fact"]})
    assert [d.metadata["kind"] for d in facts.invoke("green tea")] == ["fact"]
    turns = facts.invoke("green tea", kinds=["turn"])  # the call wins over search_kwargs
    assert [d.metadata["kind"] for d in turns] == ["turn"]
    both = MemoryRetriever(engine=engine, user_id="alice").invoke("green tea", mode="keyword")
    assert len(both) == 2
    assert all(d.metadata["score_parts"]["vector"] is None for d in both)


def test_unknown_per_call_option_is_a_typed_error(engine: MemoryEngine) -> None:
    engine.add("alice", "I like green tea")
    retriever = MemoryRetriever(engine=engine, user_id="alice")
    with pytest.raises(InvalidArgumentError, match="top_k"):
        retriever.invoke("tea", top_k=2)
    with pytest.raises(InvalidArgumentError, match="user_id"):
        retriever.invoke("tea", user_id="bob")  # the bound user cannot be swapped per call
    with pytest.raises(InvalidArgumentError):
        retriever.invoke("tea", k=0)  # search's own check, still typed
    # LangChain's own ``verbose`` option reaches the retriever too and is not an error
    assert len(retriever.invoke("tea", verbose=False)) == 1


async def test_unknown_per_call_option_is_a_typed_error_async(engine: MemoryEngine) -> None:
    retriever = MemoryRetriever(engine=engine, user_id="alice")
    with pytest.raises(InvalidArgumentError, match="top_k"):
        await retriever.ainvoke("tea", top_k=2)


def test_session_binding(engine: MemoryEngine) -> None:
    engine.add("alice", "In the first chat I asked about trains to Porto", session_id="s1")
    engine.add("alice", "In the second chat I asked about trains to Lisbon", session_id="s2")
    engine.add("alice", "Trains are my favourite way to travel")  # no session
    bound = MemoryRetriever(engine=engine, user_id="alice", session_id="s1", k=10)
    docs = bound.invoke("trains")
    assert [d.page_content for d in docs] == ["In the first chat I asked about trains to Porto"]
    assert {d.metadata["session_id"] for d in docs} == {"s1"}
    other = bound.invoke("trains", session_id="s2")
    assert {d.metadata["session_id"] for d in other} == {"s2"}
    unbound = MemoryRetriever(engine=engine, user_id="alice", k=10).invoke("trains")
    assert len(unbound) == 3


def test_isolation_between_users(engine: MemoryEngine) -> None:
    seed(engine)
    bob_ids = {m.id for m in engine.add_many("bob", ["I keep bees on my rooftop in Porto"])}
    for mode in ("hybrid", "vector", "keyword"):
        retriever = MemoryRetriever(engine=engine, user_id="alice", mode=mode, k=50)
        # bob's own words as queries, and one memory text both users share
        for query in [*BOB.values(), "I keep bees on my rooftop in Porto", "Bob"]:
            docs = retriever.invoke(query)
            assert {d.metadata["user_id"] for d in docs} <= {"alice"}, (mode, query)
            assert not {d.id for d in docs} & bob_ids
            assert {d.page_content for d in docs} <= set(ALICE.values())


def test_sync_only_retriever_answers_ainvoke_in_a_thread(engine: MemoryEngine) -> None:
    seed(engine)
    retriever = MemoryRetriever.from_engine(engine, "alice", k=1)

    async def main() -> list[Document]:
        return await retriever.ainvoke("where does my sister live?")

    docs = asyncio.run(main())
    assert [d.page_content for d in docs] == ["My sister Ana lives in Toronto"]


async def test_ainvoke_with_async_engine(engine: MemoryEngine, aengine: AsyncMemoryEngine) -> None:
    seed(engine)
    retriever = MemoryRetriever.from_engine(aengine, "alice", k=2)
    assert retriever.engine is None
    assert retriever.async_engine is aengine
    docs = await retriever.ainvoke("what food am I allergic to?")
    assert len(docs) == 2
    assert docs[0].page_content == "I am allergic to peanuts"
    assert {d.metadata["user_id"] for d in docs} == {"alice"}
    assert len(await retriever.ainvoke("what food am I allergic to?", k=4)) == 4
    # a retriever with only an async engine cannot answer a blocking call
    with pytest.raises(ConfigurationError, match="ainvoke"):
        retriever.invoke("peanuts")


@pytest.mark.parametrize("which", ["async_engine", "sync_engine_in_threads"])
async def test_fifty_concurrent_ainvoke(
    engine: MemoryEngine, aengine: AsyncMemoryEngine, which: str
) -> None:
    seed(engine)
    retrievers = {
        user: (
            MemoryRetriever(async_engine=aengine, user_id=user, k=3)
            if which == "async_engine"
            else MemoryRetriever(engine=engine, user_id=user, k=3)
        )
        for user in ("alice", "bob")
    }
    expected = {"alice": ALICE, "bob": BOB}
    queries = list(ALICE)
    calls = [("alice" if i % 2 else "bob", queries[i % len(queries)]) for i in range(50)]

    results = await asyncio.gather(
        *(retrievers[user].ainvoke(query) for user, query in calls)
    )

    assert len(results) == 50
    for (user, query), docs in zip(calls, results, strict=True):
        assert len(docs) == 3, (user, query)
        assert {d.metadata["user_id"] for d in docs} == {user}
        assert {d.page_content for d in docs} <= set(expected[user].values())
        assert docs[0].page_content == expected[user][query], (user, query)


def test_construction_needs_an_engine() -> None:
    with pytest.raises(ConfigurationError, match="needs an engine"):
        MemoryRetriever(user_id="alice")
    with pytest.raises(MemoryEngineError):
        MemoryRetriever(engine=None, async_engine=None, user_id="alice")


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"user_id": "   "}, "user_id"),
        ({"k": 0}, "k"),
        ({"mode": "fuzzy"}, "mode"),
        ({"session_id": ""}, "session_id"),
        ({"search_kwargs": {"top_k": 3}}, "top_k"),
        ({"search_kwargs": {"k": 3}}, "fields"),
    ],
)
def test_bad_settings_are_configuration_errors(
    config: EngineConfig, settings: dict[str, object], match: str
) -> None:
    engine = MemoryEngine(config)  # never connected: construction does no I/O
    params: dict[str, object] = {"engine": engine, "user_id": "alice", **settings}
    with pytest.raises(ConfigurationError, match=match):
        MemoryRetriever(**params)  # type: ignore[arg-type]


def test_from_engine_rejects_other_objects() -> None:
    with pytest.raises(ConfigurationError, match="MemoryEngine"):
        MemoryRetriever.from_engine("redis://localhost", "alice")  # type: ignore[arg-type]


def test_mode_is_normalised(config: EngineConfig) -> None:
    retriever = MemoryRetriever(engine=MemoryEngine(config), user_id="alice", mode="vector")
    assert retriever.mode == "vector"


def test_k_is_never_coerced(config: EngineConfig) -> None:
    engine = MemoryEngine(config)
    for bad in (True, "3", 2.0):
        with pytest.raises(ValidationError, match="k"):
            MemoryRetriever(engine=engine, user_id="alice", k=bad)  # type: ignore[arg-type]
