"""Hybrid search, recall bookkeeping and conversational context end to end: real embedded
Redis with RediSearch, real MiniLM."""

from __future__ import annotations

import time

import pytest
import redis

from memory_engine import (
    AsyncMemoryEngine,
    EngineConfig,
    MemoryEngine,
    MemoryNotFoundError,
    NewMemory,
)
from memory_engine.embeddings import SentenceTransformerEmbedder
from memory_engine.store._access import FLUSH_CHUNK
from tests.redis_state import drop_index

pytestmark = pytest.mark.integration

FACTS = [
    "I am severely allergic to peanuts",
    "My sister Ana lives in Toronto",
    "I run four times a week to train for a half marathon",
    "Booked seat 14C on flight LX1638",
    "The quarterly report is due on Friday",
    "We repainted the kitchen a pale green",
]


@pytest.fixture
def config(config: EngineConfig) -> EngineConfig:
    """The shared test config, with the background recall flusher effectively asleep.

    ``engine.flush()`` then writes everything pending itself; with the default 0.5 s
    interval the background thread may drain the log first and still be writing when
    ``flush()`` returns.
    """
    return config.with_(access_flush_interval=3600.0)


def later(seconds: float = 1000.0) -> float:
    """A ``now`` after every write of the test (recall times never go back in time)."""
    return time.time() + seconds


def texts(hits: list) -> list[str]:
    return [h.memory.text for h in hits]


def test_hybrid_is_the_default_mode(engine: MemoryEngine) -> None:
    engine.add_many("alice", FACTS)
    query = "which foods must she avoid? LX1638"
    default = engine.search("alice", query, k=3)
    hybrid = engine.search("alice", query, k=3, mode="hybrid")
    assert [(h.memory.id, h.score) for h in default] == [(h.memory.id, h.score) for h in hybrid]
    # neither single mode gives this ranking
    assert texts(engine.search("alice", query, k=3, mode="vector"))[0] == FACTS[0]
    assert texts(engine.search("alice", query, k=3, mode="keyword")) == [FACTS[3]]
    assert texts(default)[:2] == [FACTS[3], FACTS[0]]


def test_hybrid_finds_keyword_only_and_paraphrase_only_matches(engine: MemoryEngine) -> None:
    engine.add_many("alice", FACTS)
    hits = engine.search("alice", "which foods must she avoid? LX1638", k=3)
    by_text = {h.memory.text: h for h in hits}
    flight, peanuts = by_text[FACTS[3]], by_text[FACTS[0]]
    # the flight code is found by BM25 (an exact rare token) ...
    assert flight.parts.keyword is not None
    assert flight.parts.keyword > 0
    # ... the allergy only by meaning: it shares no word with the query
    assert peanuts.parts.keyword is None
    assert peanuts.parts.vector is not None
    assert peanuts.parts.vector > 0.2
    assert all(h.parts.decay is None for h in hits)  # decay is off by default
    assert hits[0].score >= hits[1].score >= hits[2].score

    code = engine.search("alice", "LX1638", k=1)[0]
    assert code.memory.text == FACTS[3]
    assert code.parts.keyword is not None
    assert code.parts.vector is not None
    # first in both rankings, no follower among the candidates: the best fused score there is
    # without context credit, scaled by 1 / (1 + context_credit)
    assert code.score == pytest.approx(1.0 / (1.0 + engine.config.context_credit))
    paraphrase = engine.search("alice", "what nut must she never eat?", k=1)[0]
    assert paraphrase.memory.text == FACTS[0]


def test_filters_apply_in_hybrid(engine: MemoryEngine) -> None:
    engine.add_many("alice", [
        NewMemory("coffee in the morning", session_id="s1", created_at=100.0),
        NewMemory("coffee at night", session_id="s2", created_at=200.0, kind="fact"),
        NewMemory("coffee with friends", session_id="s2", created_at=300.0),
        NewMemory("tea in the garden", created_at=400.0, kind="fact"),
    ])
    engine.add("bob", "coffee for bob", session_id="s2", created_at=200.0)

    def found(**filters: object) -> list[str]:
        hits = engine.search("alice", "coffee", mode="hybrid", **filters)
        assert all(h.parts.vector is not None for h in hits)
        return sorted(texts(hits))

    assert found(session_id="s2") == ["coffee at night", "coffee with friends"]
    assert found(kinds=["fact"]) == ["coffee at night", "tea in the garden"]
    assert found(since=150, until=250) == ["coffee at night"]
    assert found(since=250) == ["coffee with friends", "tea in the garden"]
    assert found(until=100) == ["coffee in the morning"]
    assert found(session_id="s2", kinds=["turn"]) == ["coffee with friends"]
    assert found(session_id="nope") == []
    assert len(found()) == 4


def test_min_score_end_to_end(engine: MemoryEngine) -> None:
    engine.add_many("alice", FACTS)
    everything = engine.search("alice", "LX1638 flight seat", k=6)
    assert len(everything) == 6
    top, second = everything[0].score, everything[1].score
    assert top > second
    threshold = (top + second) / 2
    kept = engine.search("alice", "LX1638 flight seat", k=6, min_score=threshold)
    assert [h.memory.id for h in kept] == [everything[0].memory.id]
    assert engine.search("alice", "LX1638 flight seat", k=6, min_score=top + 1) == []
    low = engine.search("alice", "LX1638 flight seat", k=6, min_score=everything[-1].score)
    assert [h.memory.id for h in low] == [h.memory.id for h in everything]


def test_dedupe_end_to_end(engine: MemoryEngine) -> None:
    engine.add_many("alice", [
        "I love hiking in the Swiss Alps",
        "I love hiking in the Swiss Alps!",
        "My cat is called Sardinha",
        "Hiking boots need new laces before the Dolomites trip",
    ])
    plain = texts(engine.search("alice", "hiking in the Alps", k=4))
    assert "I love hiking in the Swiss Alps" in plain
    assert "I love hiking in the Swiss Alps!" in plain
    deduped = texts(engine.search("alice", "hiking in the Alps", k=4, dedupe=True))
    assert len(deduped) == 3
    assert sum(t.startswith("I love hiking") for t in deduped) == 1
    assert "Hiking boots need new laces before the Dolomites trip" in deduped
    assert "My cat is called Sardinha" in deduped


def test_recalls_are_recorded_after_flush(
    engine: MemoryEngine, redis_client: redis.Redis
) -> None:
    peanuts, toronto = engine.add_many("alice", FACTS[:2])
    first, second = later(1000.0), later(2000.0)
    assert engine.search("alice", "peanut allergy", k=1, now=first)[0].memory.id == peanuts.id
    assert engine.search("alice", "peanut allergy", k=1, now=second)[0].memory.id == peanuts.id
    assert engine.get("alice", peanuts.id).access_count == 0  # nothing written before a flush
    engine.flush()
    got = engine.get("alice", peanuts.id)
    assert got.access_count == 2
    assert got.last_accessed == second
    untouched = engine.get("alice", toronto.id)
    assert untouched.access_count == 0
    assert untouched.last_accessed == toronto.last_accessed
    # the memory's own indexed hash is left alone; the count lives in the recall hash
    keys = engine._core.store_core.keys
    assert redis_client.hget(keys.memory("alice", peanuts.id), "access_count") == b"0"
    assert redis_client.hget(keys.recalls("alice"), peanuts.id) is not None
    # searches see the folded counts too
    hit = engine.search("alice", "peanut allergy", k=1, now=later(3000.0))[0]
    assert hit.memory.access_count == 2
    assert hit.memory.last_accessed == second
    engine.flush()
    assert engine.get("alice", peanuts.id).access_count == 3


def test_a_flush_of_many_users_lands_every_recall(engine: MemoryEngine) -> None:
    """More users than one flush chunk holds: every user's recalls reach Redis, each once."""
    users = [f"chunked-{i}" for i in range(3 * FLUSH_CHUNK + 1)]
    memories = {user: engine.add_many(user, FACTS[:3]) for user in users}
    when = later(700.0)
    recalled = {}
    for user in users:
        recalled[user] = {h.memory.id for h in engine.search(user, "peanut allergy", k=2,
                                                             now=when)}
        assert len(recalled[user]) == 2
    engine.flush()
    for user, written in memories.items():
        for memory in written:
            got = engine.get(user, memory.id)
            assert got.access_count == (memory.id in recalled[user]), (user, memory.text)
            if memory.id in recalled[user]:
                assert got.last_accessed == when


def test_an_older_recall_time_does_not_move_last_accessed_back(engine: MemoryEngine) -> None:
    memory = engine.add("alice", "I keep bees on my rooftop in Porto")
    newest = later(5000.0)
    engine.search("alice", "beekeeping", k=1, now=newest)
    engine.flush()
    engine.search("alice", "beekeeping", k=1, now=later(10.0))
    engine.flush()
    got = engine.get("alice", memory.id)
    assert got.access_count == 2
    assert got.last_accessed == newest


def test_recall_of_a_deleted_memory_does_not_recreate_it(
    engine: MemoryEngine, redis_client: redis.Redis
) -> None:
    doomed, kept = engine.add_many("alice", FACTS[:2])
    hits = engine.search("alice", "peanuts and my sister", k=2, now=later())
    assert {h.memory.id for h in hits} == {doomed.id, kept.id}
    engine.delete("alice", doomed.id)
    engine.flush()
    keys = engine._core.store_core.keys
    with pytest.raises(MemoryNotFoundError):
        engine.get("alice", doomed.id)
    assert redis_client.exists(keys.memory("alice", doomed.id)) == 0
    assert not redis_client.hexists(keys.recalls("alice"), doomed.id)
    assert engine.count("alice") == 1
    assert engine.get("alice", kept.id).access_count == 1  # the live one was still recorded


def test_update_folds_recall_counts_in(engine: MemoryEngine, redis_client: redis.Redis) -> None:
    memory = engine.add("alice", "I live in Lisbon")
    when = later()
    engine.search("alice", "Lisbon", k=1, now=when)
    engine.search("alice", "Lisbon", k=1, now=when + 1)
    engine.flush()
    updated = engine.update("alice", memory.id, importance=0.9)
    assert updated.access_count == 2
    assert updated.last_accessed == when + 1
    assert engine.get("alice", memory.id).access_count == 2
    keys = engine._core.store_core.keys
    assert not redis_client.hexists(keys.recalls("alice"), memory.id)
    assert redis_client.hget(keys.memory("alice", memory.id), "access_count") == b"2"
    engine.flush()  # nothing pending: the folded count is not added again
    assert engine.get("alice", memory.id).access_count == 2
    retexted = engine.update("alice", memory.id, text="I moved from Lisbon to Porto")
    assert retexted.access_count == 2
    engine.flush()
    assert engine.get("alice", memory.id).access_count == 2
    engine.search("alice", "Porto", k=1, now=when + 2)
    engine.flush()
    got = engine.get("alice", memory.id)
    assert got.access_count == 3
    assert got.last_accessed == when + 2
    assert got.importance == 0.9
    assert got.text == "I moved from Lisbon to Porto"


def test_forget_user_removes_recall_and_tail_hashes(
    engine: MemoryEngine, redis_client: redis.Redis
) -> None:
    for who in ("alice", "bob"):
        engine.add(who, "I adopted a dog named Biscuit", session_id="s1", name="Ana")
        engine.add(who, "Wow, that's amazing!", session_id="s1", name="Ben")
        engine.search(who, "dog", k=2, now=later())
    engine.flush()
    keys = engine._core.store_core.keys
    for who in ("alice", "bob"):
        assert redis_client.exists(keys.recalls(who)) == 1
        assert redis_client.exists(keys.tails(who)) == 1
    assert engine.forget_user("alice") == 2
    assert redis_client.exists(keys.recalls("alice")) == 0
    assert redis_client.exists(keys.tails("alice")) == 0
    assert list(redis_client.scan_iter(match=keys.user_pattern("alice"))) == []
    assert redis_client.exists(keys.recalls("bob")) == 1
    assert redis_client.exists(keys.tails("bob")) == 1
    assert engine.count("bob") == 2
    # a new conversation for the forgotten user starts from scratch
    fresh = engine.add("alice", "Hello again", session_id="s1")
    assert fresh.previous_id is None


def test_previous_id_chains_across_add_calls(
    engine: MemoryEngine, redis_client: redis.Redis
) -> None:
    t1 = engine.add("alice", "I adopted a dog named Biscuit", session_id="s1", name="Ana")
    other = engine.add("alice", "Unrelated chat", session_id="s2", name="Ana")
    fact = engine.add("alice", "Ana has a dog", session_id="s1", kind="fact")
    t2 = engine.add("alice", "Wow, that's amazing!", session_id="s1", name="Ben")
    t3 = engine.add("alice", "He is a beagle", session_id="s1", name="Ana")
    [t4] = engine.add_many("alice", [NewMemory("Cute!", session_id="s1", name="Ben")])
    assert t1.previous_id is None
    assert other.previous_id is None
    assert fact.previous_id is None
    assert (t2.previous_id, t3.previous_id, t4.previous_id) == (t1.id, t2.id, t3.id)
    assert [engine.get("alice", m.id).previous_id for m in (t1, t2, t3, t4)] == [
        None, t1.id, t2.id, t3.id]
    assert engine.add("alice", "Next in s2", session_id="s2").previous_id == other.id
    keys = engine._core.store_core.keys
    assert redis_client.hget(keys.memory("alice", t2.id), "context") == (
        b"Ana: I adopted a dog named Biscuit")
    assert redis_client.hget(keys.memory("alice", t2.id), "text") == b"Wow, that's amazing!"
    assert not redis_client.hexists(keys.memory("alice", t1.id), "context")
    assert redis_client.hexists(keys.tails("alice"), "s1")


def test_a_reply_is_found_by_what_it_replies_to(engine: MemoryEngine) -> None:
    turns = [
        ("I adopted a dog named Biscuit", "Ana"),
        ("Wow, that's amazing!", "Ben"),
        ("What are you cooking tonight?", "Ana"),
        ("Lasagna with spinach", "Ben"),
        ("Sounds delicious, enjoy!", "Ana"),
    ]
    added = [engine.add("alice", text, session_id="s1", name=name) for text, name in turns]
    reply = added[1]
    hits = engine.search("alice", "Biscuit the dog", k=5)
    by_id = {h.memory.id: h for h in hits}
    assert reply.id in by_id
    # found by keyword although its own words share nothing with the query
    assert by_id[reply.id].parts.keyword is not None
    assert by_id[reply.id].memory.text == "Wow, that's amazing!"
    assert [h.memory.id for h in hits[:2]] == [added[0].id, reply.id]
    # the other generic reply is not found by keyword
    assert by_id[added[4].id].parts.keyword is None
    keyword = engine.search("alice", "Biscuit the dog", k=5, mode="keyword")
    assert {h.memory.id for h in keyword} == {added[0].id, reply.id}


async def test_async_recall_bookkeeping(
    config: EngineConfig, minilm: SentenceTransformerEmbedder, redis_client: redis.Redis
) -> None:
    try:
        async with AsyncMemoryEngine(config, embedder=minilm) as engine:
            peanuts, doomed = await engine.add_many("alice", FACTS[:2])
            first, second = later(1000.0), later(2000.0)
            hits = await engine.search("alice", "peanut allergy", k=1, now=first)
            assert hits[0].memory.id == peanuts.id
            await engine.search("alice", "peanut allergy", k=1, now=second)
            await engine.search("alice", "my sister in Toronto", k=1, now=second)
            assert (await engine.get("alice", peanuts.id)).access_count == 0
            await engine.delete("alice", doomed.id)
            await engine.flush()
            got = await engine.get("alice", peanuts.id)
            assert got.access_count == 2
            assert got.last_accessed == second
            keys = engine._core.store_core.keys
            with pytest.raises(MemoryNotFoundError):
                await engine.get("alice", doomed.id)
            assert redis_client.exists(keys.memory("alice", doomed.id)) == 0
            assert not redis_client.hexists(keys.recalls("alice"), doomed.id)
            updated = await engine.update("alice", peanuts.id, importance=0.8)
            assert updated.access_count == 2
            await engine.flush()
            assert (await engine.get("alice", peanuts.id)).access_count == 2
            await engine.add("alice", "first turn", session_id="s1")
            assert await engine.forget_user("alice") == 2
            assert redis_client.exists(keys.recalls("alice")) == 0
            assert redis_client.exists(keys.tails("alice")) == 0
    finally:
        drop_index(redis_client, config)
