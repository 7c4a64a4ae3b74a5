"""The engine end to end: real embedded Redis with RediSearch, real MiniLM."""

from __future__ import annotations

import numpy as np
import pytest
import redis

from memory_engine import (
    EngineConfig,
    Kind,
    MemoryEngine,
    MemoryNotFoundError,
    NewMemory,
    SchemaMismatchError,
)
from memory_engine.embeddings import SentenceTransformerEmbedder
from tests.fakes import HashingEmbedder


def test_add_get_round_trip(engine: MemoryEngine) -> None:
    added = engine.add(
        "alice", "I adopted a grey cat named Sardinha", session_id="s1", role="user",
        name="Alice", kind="fact", importance=0.9, created_at=1_700_000_000.0,
        metadata={"source": "chat", "turn": [1, 2]},
    )
    got = engine.get("alice", added.id)
    assert got == added
    assert got.kind is Kind.FACT
    assert got.metadata == {"source": "chat", "turn": [1, 2]}
    assert engine.count("alice") == 1


def test_vector_search_finds_by_meaning(engine: MemoryEngine) -> None:
    engine.add_many("alice", [
        "I am severely allergic to peanuts",
        "My sister Ana lives in Toronto",
        "I run four times a week to train for a half marathon",
    ])
    hits = engine.search("alice", "which foods must she avoid?", k=3, mode="vector")
    assert next(h.memory.text for h in hits) == "I am severely allergic to peanuts"
    assert hits[0].parts.vector == pytest.approx(hits[0].score)
    assert hits[0].parts.keyword is None
    assert hits[0].score >= hits[1].score >= hits[2].score
    assert -1.0 <= hits[-1].score <= 1.0


def test_keyword_search_uses_bm25_with_stemming(engine: MemoryEngine) -> None:
    engine.add_many("alice", ["She runs every morning", "Peanuts are a legume", "Kyoto in July"])
    hits = engine.search("alice", "running", mode="keyword")
    assert [h.memory.text for h in hits] == ["She runs every morning"]
    assert hits[0].parts.keyword == hits[0].score > 0
    assert engine.search("alice", "?? !!", mode="keyword") == []
    assert engine.search("alice", "is it the", mode="keyword") == []  # stopwords only


def test_filters_session_kind_and_time(engine: MemoryEngine) -> None:
    engine.add_many("alice", [
        NewMemory("coffee in the morning", session_id="s1", created_at=100.0),
        NewMemory("coffee at night", session_id="s2", created_at=200.0, kind="fact"),
        {"text": "coffee with friends", "session_id": "s2", "created_at": 300.0},
    ])
    texts = lambda hits: sorted(h.memory.text for h in hits)  # noqa: E731
    assert texts(engine.search("alice", "coffee", session_id="s2")) == [
        "coffee at night", "coffee with friends"]
    assert texts(engine.search("alice", "coffee", kinds=["fact"])) == ["coffee at night"]
    assert texts(engine.search("alice", "coffee", since=150, until=250)) == ["coffee at night"]
    assert texts(engine.search("alice", "coffee", mode="keyword", since=250)) == [
        "coffee with friends"]


def test_update_re_embeds_changed_text(engine: MemoryEngine) -> None:
    memory = engine.add("alice", "I live in Lisbon")
    assert engine.search("alice", "snowy mountains and skiing", k=1, mode="vector")[0].score < 0.3
    updated = engine.update("alice", memory.id, text="I go skiing in the snowy Alps every winter",
                            importance=0.8)
    assert updated.text.startswith("I go skiing")
    assert updated.importance == 0.8
    assert engine.get("alice", memory.id) == updated
    hit = engine.search("alice", "snowy mountains and skiing", k=1, mode="vector")[0]
    assert hit.memory.id == memory.id
    assert hit.score > 0.5
    assert engine.search("alice", "Lisbon", mode="keyword") == []


def test_update_without_text_keeps_vector(engine: MemoryEngine, redis_client: redis.Redis) -> None:
    memory = engine.add("alice", "I live in Lisbon")
    key = engine._core.store_core.keys.memory("alice", memory.id)
    before = redis_client.hget(key, "embedding")
    engine.update("alice", memory.id, metadata={"checked": True})
    assert redis_client.hget(key, "embedding") == before
    assert engine.get("alice", memory.id).metadata == {"checked": True}


def test_delete_and_forget(engine: MemoryEngine) -> None:
    memories = engine.add_many("alice", [f"memory number {i}" for i in range(7)])
    engine.add("bob", "bob's only memory")
    engine.delete("alice", memories[0].id)
    with pytest.raises(MemoryNotFoundError):
        engine.get("alice", memories[0].id)
    with pytest.raises(MemoryNotFoundError):
        engine.delete("alice", memories[0].id)
    assert engine.forget_user("alice") == 6
    assert engine.count("alice") == 0
    assert engine.count("bob") == 1


def test_forget_user_in_batches(engine: MemoryEngine) -> None:
    vectors = np.eye(384, dtype=np.float32)
    items = [NewMemory(f"m{i}", embedding=vectors[i % 384]) for i in range(1200)]
    engine.add_many("bulk", items)
    assert engine.count("bulk") == 1200
    assert engine.forget_user("bulk") == 1200
    assert engine.count("bulk") == 0


def test_long_text_is_embedded_whole(engine: MemoryEngine) -> None:
    # Both texts share their first ~600 word pieces; a model that truncates at 256 would
    # give them the same vector. Averaging windows lets the tail count.
    filler = "The weather report mentioned clouds and light wind again. " * 60
    plain = engine.add("alice", filler)
    tail = engine.add("alice", filler + "Her passport number ends in 4471 and expires in May.")
    assert len(tail.text) > 3000
    assert engine.get("alice", tail.id).text == tail.text
    hits = engine.search("alice", "when does her passport expire?", k=2, mode="vector")
    assert [h.memory.id for h in hits] == [tail.id, plain.id]
    assert hits[0].score - hits[1].score > 0.01


def test_index_is_reused_and_mismatch_is_refused(
    config: EngineConfig, minilm: SentenceTransformerEmbedder, redis_client: redis.Redis
) -> None:
    try:
        with MemoryEngine(config, embedder=minilm) as first:
            kept = first.add("alice", "kept across engines")
        with MemoryEngine(config, embedder=minilm) as second:
            assert second.get("alice", kept.id).text == "kept across engines"
        with pytest.raises(SchemaMismatchError, match="embedding"), MemoryEngine(
            config, embedder=HashingEmbedder(dims=384)
        ) as other_model:
            other_model.connect()
        with pytest.raises(SchemaMismatchError, match="dim"), MemoryEngine(
            config, embedder=HashingEmbedder(dims=32)
        ) as other_dims:
            other_dims.connect()
        assert redis_client.exists(f"{config.key_prefix}:mem:{{alice}}:{kept.id}") == 1
    finally:
        redis_client.execute_command("FT.DROPINDEX", config.index_name, "DD")
