"""The search script (one round trip: FT.SEARCH, ranking and reading the hits inside Redis)
against the Python ranking it mirrors, on a real LoCoMo conversation: real embedded Redis,
real MiniLM.

The reference sends the same FT.SEARCH commands from the client and ranks their replies with
``retrieval._ranking.rank``; the engine's hits must match it exactly (ids, order, scores to
the bit, score parts), in every mode and with every ranking option, including those the
script does not rank itself (it then prefetches a guess and the engine reads the rest).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from redisvl.index import SearchIndex

from memory_engine import EngineConfig, MemoryEngine, NewMemory, SearchMode
from memory_engine.embeddings import SentenceTransformerEmbedder
from memory_engine.exceptions import StoreError
from memory_engine.retrieval._queries import count_command
from memory_engine.retrieval._ranking import Ranked
from memory_engine.retrieval._results import keyword_candidates, vector_candidates
from memory_engine.retrieval._script import SEARCH, read_reply
from memory_engine.store._schema import build_schema

pytestmark = pytest.mark.integration

LOCOMO = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "locomo_dev.json"
USER = "conv-a"
OTHER = "conv-b"
QUESTIONS = 60


def conversation(sample: dict[str, Any]) -> list[NewMemory]:
    """A LoCoMo conversation as memories, the way ``benchmarks/locomo_recall.py`` writes it
    (dates are left out: ranking here does not depend on them)."""
    conv = sample["conversation"]
    items = []
    sessions = sorted(int(key.split("_")[1]) for key in conv
                      if key.startswith("session_") and not key.endswith("date_time"))
    for n in sessions:
        for turn in conv.get(f"session_{n}") or []:
            items.append(NewMemory(
                text=turn["text"], name=turn["speaker"], session_id=f"session_{n}",
                role="user" if turn["speaker"] == conv["speaker_a"] else "assistant",
                metadata={"dia_id": turn["dia_id"]},
            ))
    return items


@pytest.fixture(scope="module")
def locomo(
    redis_url: str, minilm: SentenceTransformerEmbedder, redis_client: redis.Redis,
) -> Iterator[tuple[MemoryEngine, list[str]]]:
    """One engine (recall flushing only when asked) holding the first LoCoMo conversation
    for one user and part of the second for another, and the first one's questions."""
    samples = json.loads(LOCOMO.read_text())
    config = EngineConfig(redis_url=redis_url, index_name="tscript", key_prefix="tscript",
                          access_flush_interval=3600.0)
    with MemoryEngine(config, embedder=minilm) as engine:
        engine.connect()
        engine.add_many(USER, conversation(samples[0]))
        engine.add_many(OTHER, conversation(samples[1])[:200])
        questions = [q["question"] for q in samples[0]["qa"]][:QUESTIONS]
        for question in questions[::3]:  # some recall history, for the decay options
            engine.search(USER, question, k=5, now=2e9)
        engine.flush()
        yield engine, questions
    redis_client.execute_command("FT.DROPINDEX", "tscript", "DD")
    for key in redis_client.scan_iter(match="tscript:*"):
        redis_client.delete(key)


NOW = 2.1e9


def reference(
    engine: MemoryEngine, client: redis.Redis, query: str, now: float = NOW, **options: Any
) -> list[Ranked]:
    """The ranking the engine promises: the FT.SEARCH commands its script sends
    (``sent_commands``), sent by the client, the replies ranked by ``rank`` (with every
    candidate's recall entry when decay is on)."""
    core = engine._core
    plan = core.plan_search(USER, query, clock=now, now=now, **options)
    vector = engine.embedder.embed_query(query) if core.needs_vector(plan) else None
    count = count_command(core.store_core.index_name, plan.request)
    matches = int(client.execute_command(*count)[0])
    replies = [client.execute_command(*c) for c in core.sent_commands(plan, vector, matches)]
    owner = core.store_core.keys.memory(USER, "")
    searched = plan.request.mode is not SearchMode.KEYWORD
    vec = vector_candidates(replies.pop(), owner) if searched else []
    if searched:  # the count the script runs before the vector search
        assert replies.pop() == [matches]
    kw = keyword_candidates(replies.pop(), owner) if replies else []
    stats = None
    if plan.options.decay_weight > 0:
        ids = list(dict.fromkeys(c.id for c in (*kw, *vec)))
        stats = dict(zip(ids, client.hmget(core.store_core.keys.recalls(USER), ids), strict=True))
    return core.ranked(plan, kw, vec, stats)


OPTIONS = [
    {"mode": "hybrid", "k": 10},
    {"mode": "hybrid", "k": 3},
    {"mode": "vector", "k": 10},
    {"mode": "keyword", "k": 10},
    {"mode": "hybrid", "k": 10, "decay_weight": 0.5},
    {"mode": "hybrid", "k": 10, "dedupe": True},
    {"mode": "hybrid", "k": 10, "min_score": 0.3},
    {"mode": "hybrid", "k": 10, "fusion": "linear"},
    {"mode": "vector", "k": 10, "min_similarity": 0.3},
    {"mode": "hybrid", "k": 10, "session_id": "session_3"},
]


def option_id(options: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in options.items())


@pytest.mark.parametrize("options", OPTIONS, ids=option_id)
def test_hits_match_the_python_ranking(
    locomo: tuple[MemoryEngine, list[str]], redis_client: redis.Redis, options: dict[str, Any],
) -> None:
    engine, questions = locomo
    compared = 0
    for question in questions:
        expected = reference(engine, redis_client, question, **options)
        hits = engine.search(USER, question, now=NOW, **options)
        assert [(h.memory.id, h.score, h.parts) for h in hits] == [
            (r.id, r.score, r.parts) for r in expected], question
        assert all(h.memory.user_id == USER for h in hits)
        compared += bool(hits)
    assert compared >= len(questions) // 2  # the comparison was not between empty lists


def test_a_missed_guess_is_read_in_a_second_step(
    locomo: tuple[MemoryEngine, list[str]], redis_client: redis.Redis,
) -> None:
    """With decay the script's guess (its own fused order, 2k deep) misses some hits: an hour
    after the fixture's searches, the memories they recalled are fresh and every other one is
    years old. The engine reads the missed ones and still returns the exact ranking, each
    memory whole."""
    engine, questions = locomo
    core = engine._core
    now = 2e9 + 3600
    missed = 0
    for question, options in itertools.product(questions, (
        {"mode": "hybrid", "k": 3, "decay_weight": 1.0},
        {"mode": "hybrid", "k": 10, "decay_weight": 1.0, "fusion": "linear"},
    )):
        plan = core.plan_search(USER, question, clock=now, now=now, **options)
        args = core.search_args(plan, engine.embedder.embed_query(question))
        guessed = read_reply(redis_client.execute_command("EVAL", SEARCH, *args)).rows
        expected = reference(engine, redis_client, question, now=now, **options)
        missed += any(r.id not in guessed for r in expected)
        hits = engine.search(USER, question, now=now, **options)
        assert [h.memory.id for h in hits] == [r.id for r in expected]
        assert all(h.memory.text and h.memory.user_id == USER for h in hits)
    assert missed > 0


def test_sent_commands_choose_exact_search_as_the_script_does(
    locomo: tuple[MemoryEngine, list[str]],
) -> None:
    """``sent_commands`` (the raw floor the latency benchmark replays) counts before a vector
    search, then sends the exact query at or under ``exact_search_limit`` and the HNSW one
    above it, as the script does."""
    engine, questions = locomo
    core = engine._core
    plan = core.plan_search(USER, questions[0], k=10, mode="hybrid", clock=NOW, now=NOW)
    vector = engine.embedder.embed_query(questions[0])
    limit = engine.config.exact_search_limit
    keyword, count, exact = core.sent_commands(plan, vector, limit)
    assert keyword[0] == count[0] == exact[0] == "FT.SEARCH"
    assert "WITHSCORES" in keyword
    assert "NOCONTENT" in count
    assert "ADHOC_BF" in str(exact[2])
    assert "EF_RUNTIME" not in str(exact[2])
    *_, approximate = core.sent_commands(plan, vector, limit + 1)
    assert "EF_RUNTIME" in str(approximate[2])
    assert "ADHOC_BF" not in str(approximate[2])
    assert exact[3:] == approximate[3:]  # same vector, candidates and fields
    vector_plan = core.plan_search(USER, questions[0], k=10, mode="vector", clock=NOW, now=NOW)
    assert [c[0] for c in core.sent_commands(vector_plan, vector, 5)] == ["FT.SEARCH"] * 2
    keyword_plan = core.plan_search(USER, questions[0], k=10, mode="keyword", clock=NOW, now=NOW)
    assert len(core.sent_commands(keyword_plan, None, 5)) == 1


def test_hits_carry_the_recall_counts(locomo: tuple[MemoryEngine, list[str]]) -> None:
    engine, questions = locomo
    engine.flush()  # what earlier tests recalled
    hits = engine.search(USER, questions[0], k=5, now=NOW)
    again = engine.search(USER, questions[0], k=5, now=NOW + 10)
    assert [h.memory.access_count for h in again] == [h.memory.access_count for h in hits]
    engine.flush()
    after = engine.search(USER, questions[0], k=5, now=NOW + 20)
    assert [h.memory.access_count for h in after] == [h.memory.access_count + 2 for h in hits]
    assert all(h.memory.last_accessed == NOW + 10 for h in after)


def test_the_script_refuses_another_users_keys(
    locomo: tuple[MemoryEngine, list[str]], redis_client: redis.Redis,
) -> None:
    """Fail closed: if a search command ever returned a key outside the searched user's key
    space, the script raises instead of ranking or reading it."""
    engine, questions = locomo
    core = engine._core
    plan = core.plan_search(USER, questions[0], k=5, mode="keyword", clock=NOW, now=NOW)
    args = core.search_args(plan, None)
    assert args is not None
    owner = core.store_core.keys.memory(USER, "")
    # The owner prefix stands as the script's third argument; claim the other user's space
    # while the FT.SEARCH still filters on USER: every key returned is now foreign.
    assert args[2] == owner
    args[2] = core.store_core.keys.memory(OTHER, "")
    with pytest.raises(redis.ResponseError, match="isolation check failed"):
        redis_client.execute_command("EVAL", SEARCH, *args)
    with pytest.raises(StoreError, match="isolation check failed"):
        engine._ready().search(args)


def test_vector_search_is_exact_up_to_the_limit(
    redis_url: str, minilm: SentenceTransformerEmbedder, redis_client: redis.Redis,
) -> None:
    """A deliberately poor HNSW graph (M=2, EF_CONSTRUCTION=1) over 12,000 random vectors of
    one user: under ``exact_search_limit`` every vector search returns the true 10 nearest
    memories (checked with numpy); with the limit at 0 the graph answers and misses some."""
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(12_000, minilm.dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = [f"question number {i} about topic {i * 7 % 13}" for i in range(20)]
    base = EngineConfig(redis_url=redis_url, index_name="tpoor", key_prefix="tpoor",
                        hnsw_m=2, hnsw_ef_construction=1, record_access=False)
    recalls = {}
    try:
        with MemoryEngine(base, embedder=minilm) as writer:
            writer.connect()
            ids = np.array([m.id for m in writer.add_many("u", [
                NewMemory(text=f"memory {i}", embedding=v) for i, v in enumerate(vectors)])])
            writer.add_many("v", [NewMemory(text="another user's memory", embedding=vectors[0])])
        for limit in (20_000, 0):
            with MemoryEngine(base.with_(exact_search_limit=limit), embedder=minilm) as engine:
                engine.connect()
                found = []
                for query in queries:
                    q = minilm.embed_query(query)
                    truth = set(ids[np.argsort(-(vectors @ q), kind="stable")[:10]])
                    hits = engine.search("u", query, k=10, mode="vector")
                    found.append(len(truth & {h.memory.id for h in hits}) / 10)
                recalls[limit] = float(np.mean(found))
    finally:
        redis_client.execute_command("FT.DROPINDEX", "tpoor", "DD")
        redis_client.delete("tpoor:meta")
    assert recalls[20_000] == 1.0
    assert recalls[0] < 0.9, recalls


def _attributes(client: redis.Redis, index: str) -> dict[str, list[Any]]:
    info = client.execute_command("FT.INFO", index)
    attrs = dict(zip(info[::2], info[1::2], strict=True))[b"attributes"]
    return {a[a.index(b"attribute") + 1].decode(): a for a in attrs}


def test_previous_id_comes_from_the_index_and_an_index_without_it_still_ranks(
    locomo: tuple[MemoryEngine, list[str]], redis_client: redis.Redis,
) -> None:
    """``previous_id`` is a sortable, unindexed field, so a search returns it from the index
    instead of opening each candidate's hash: the copy must be the hash's value, exactly.
    An index made before the field existed (the same keys, indexed without it) is accepted,
    and ranks exactly as the Python reference does on it."""
    engine, questions = locomo
    assert {b"SORTABLE", b"NOINDEX"} <= set(_attributes(redis_client, "tscript")["previous_id"])
    keys = engine._core.store_core.keys
    reply = redis_client.execute_command(
        "FT.SEARCH", "tscript", "@user_id:{conv\\-a}", "RETURN", 1, "previous_id",
        "LIMIT", 0, 10_000, "DIALECT", 2)
    from_index = {key: dict(zip(f[::2], f[1::2], strict=True)).get(b"previous_id", b"")
                  for key, f in zip(reply[1::2], reply[2::2], strict=True)}
    assert len(from_index) == reply[0] == engine.count(USER) > 100
    assert sum(1 for v in from_index.values() if v) > 100  # most turns follow another
    assert from_index == {key: redis_client.hget(key, "previous_id") for key in from_index}
    assert all(key.startswith(keys.memory(USER, "").encode()) for key in from_index)

    spec = engine._core.store_core.spec
    old = {**spec, "index": {**spec["index"], "name": "tscript_old"},
           "fields": [f for f in spec["fields"] if f["name"] != "previous_id"]}
    SearchIndex(build_schema(old), redis_client=redis_client).create()
    try:
        while True:  # the new index scans the stored memories in the background
            info = redis_client.execute_command("FT.INFO", "tscript_old")
            if dict(zip(info[::2], info[1::2], strict=True))[b"indexing"] in (0, b"0"):
                break
        assert "previous_id" not in _attributes(redis_client, "tscript_old")
        config = engine.config.with_(index_name="tscript_old")
        with MemoryEngine(config, embedder=engine.embedder.inner) as before:
            compared = 0
            for question, options in itertools.product(questions[:20], OPTIONS[:4]):
                expected = reference(before, redis_client, question, **options)
                hits = before.search(USER, question, now=NOW, **options)
                assert [(h.memory.id, h.score, h.parts) for h in hits] == [
                    (r.id, r.score, r.parts) for r in expected], question
                compared += bool(hits)
                if options["mode"] == "vector":  # no BM25 statistics: same on both indexes
                    assert [(h.memory.id, h.score) for h in hits] == [
                        (h.memory.id, h.score)
                        for h in engine.search(USER, question, now=NOW, **options)]
            assert compared >= 40
    finally:
        redis_client.execute_command("FT.DROPINDEX", "tscript_old")
