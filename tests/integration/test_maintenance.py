"""Maintenance on the real embedded Redis with the real model: TTL expiry, per-user budgets,
pinned memories, cohesive per-user groups, dry runs, the audit trail and ``undo``, a run
killed mid-apply, the background maintainers, and the async twin."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis

from memory_engine import (
    AsyncMemoryEngine,
    ChangeNotFoundError,
    EngineConfig,
    InvalidArgumentError,
    InvalidMemoryIdError,
    Kind,
    LifecyclePolicy,
    Memory,
    MemoryEngine,
    NewMemory,
)
from memory_engine.embeddings import SentenceTransformerEmbedder
from memory_engine.lifecycle.summarize import day
from tests.redis_state import raw_state

pytestmark = pytest.mark.integration

DAY = 86_400.0
NOW = 1_700_000_000.0
OLD = NOW - 400 * DAY  # long stale at NOW

DOG = ["I adopted a beagle puppy named Biscuit last weekend.",
       "Biscuit the beagle loves chewing on my running shoes.",
       "I walk Biscuit the puppy to the dog park every morning.",
       "The vet gave Biscuit, my beagle puppy, his second vaccine."]
CELLO = ["I started learning to play the cello in March.",
         "My cello teacher gives me cello lessons every Tuesday.",
         "I practice cello scales for an hour each night.",
         "I want to play a Bach cello suite at the spring recital."]
TAX = "The quarterly tax filing for my bakery is due in April."


def turns(texts: list[str], session: str, start: float = OLD) -> list[NewMemory]:
    return [NewMemory(text=t, session_id=session, created_at=start + 60 * i, name="Ana")
            for i, t in enumerate(texts)]



def test_stale_turns_become_one_summary_per_topic_and_are_searchable(engine: MemoryEngine) -> None:
    engine.add_many("ana", [*turns(DOG + CELLO, "s1"), NewMemory(TAX, session_id="s1",
                                                                    created_at=OLD + 3600)])
    report = engine.maintain("ana", now=NOW)
    summaries = [h.memory for h in engine.search("ana", "beagle cello", k=10, kinds=["summary"])]
    assert report.users[0].summaries == 2 == len(summaries)
    assert engine.count("ana") == 3  # two summaries and the lone tax turn
    by_topic = {("Biscuit" in s.text): s for s in summaries}
    dog, cello = by_topic[True], by_topic[False]
    assert "cello" not in dog.text.lower()
    assert "biscuit" not in cello.text.lower()
    assert dog.kind is Kind.SUMMARY
    assert len(dog.replaces) == 4
    assert dog.replaced_sessions == ("s1",)
    assert dog.session_id == "s1"
    assert dog.replaced_span == (OLD, OLD + 180)
    assert dog.created_at == OLD + 180
    assert dog.text.startswith(f"On {day(OLD)}: Ana: ")  # an absolute date, the speaker
    hits = engine.search("ana", "what is the name of my puppy?", k=2, now=NOW)
    assert hits[0].memory.id == dog.id


def test_ttl_expires_only_the_kinds_it_names(engine: MemoryEngine) -> None:
    fact = engine.add("ana", "Ana's passport number ends in 42.", kind="fact",
                      created_at=NOW - 40 * DAY)
    young = engine.add("ana", "Ana's gym code is 7781.", kind="fact", created_at=NOW - 5 * DAY)
    turn = engine.add("ana", "I like tea.", created_at=NOW - 40 * DAY)
    policy = LifecyclePolicy(ttl={"fact": 30 * DAY}, consolidate=False)
    report = engine.maintain("ana", now=NOW, policy=policy)
    assert report.users[0].expired == 1
    assert {m.id for m in engine_memories(engine, "ana")} == {young.id, turn.id}
    entry = engine.audit_trail("ana")[0]
    assert entry.action == "expire"
    assert entry.source_ids == (fact.id,)
    assert "ttl" in entry.reason
    assert entry.removed_text == [fact.text]


def engine_memories(engine: MemoryEngine, user: str) -> list[Memory]:
    """All of a user's memories (up to 100). The search records them as recalled at ``OLD``,
    which leaves them as stale at ``NOW`` as they were."""
    return [h.memory for h in engine.search(user, "a", k=100, mode="vector", now=OLD)]


def test_budget_is_enforced_for_every_user_separately(engine: MemoryEngine) -> None:
    sizes = {"ana": 9, "ben": 3, "cy": 14}
    for user, n in sizes.items():
        engine.add_many(user, [NewMemory(f"{user} note {i}: walked {i} kilometres by the river",
                                         created_at=OLD + i * DAY) for i in range(n)])
    report = engine.maintain(now=NOW, policy=LifecyclePolicy(budget=4, consolidate=False))
    after = {u: engine.count(u) for u in sizes}
    assert after == {"ana": 4, "ben": 3, "cy": 4}
    assert {u.user_id: u.pruned for u in report.users} == {"ana": 5, "ben": 0, "cy": 10}
    kept = sorted(m.created_at for m in engine_memories(engine, "cy"))
    assert kept == [OLD + i * DAY for i in range(10, 14)]  # the oldest went first


def test_budget_holds_for_a_user_maintained_in_chunks(engine: MemoryEngine) -> None:
    engine.add_many("ana", [NewMemory(f"ana walked {i} km", created_at=OLD + i * DAY)
                            for i in range(20)])
    policy = LifecyclePolicy(budget=10, consolidate=False, batch_size=6)
    report = engine.maintain("ana", now=NOW, policy=policy)
    assert len(report.users[0].plans) == 4  # 6 + 6 + 6 + 2
    assert engine.count("ana") <= 10


def test_pinned_memories_survive_ttl_budget_and_consolidation(engine: MemoryEngine) -> None:
    memories = engine.add_many("ana", turns(DOG, "s1"))
    pinned = engine.add("ana", "Ana is allergic to peanuts.", kind="fact", created_at=OLD,
                        metadata={"pinned": True})
    policy = LifecyclePolicy(ttl={"fact": DAY, "turn": DAY}, budget=1)
    engine.maintain("ana", now=NOW, policy=policy)
    assert engine.get("ana", pinned.id) == pinned
    assert all(_gone(engine, m.id) for m in memories)


def _gone(engine: MemoryEngine, memory_id: str) -> bool:
    try:
        engine.get("ana", memory_id)
    except KeyError:
        return True
    return False


def test_identical_memories_of_two_users_are_never_grouped_together(engine: MemoryEngine) -> None:
    for user in ("ana", "ben"):
        engine.add_many(user, turns(DOG, "s1"))
    report = engine.maintain(now=NOW)
    assert [u.summaries for u in report.users] == [1, 1]
    for user in ("ana", "ben"):
        own = {m.id for m in engine_memories(engine, user)}
        (summary,) = [m for m in engine_memories(engine, user) if m.kind is Kind.SUMMARY]
        assert summary.user_id == user
        trail = engine.audit_trail(user)
        assert set(summary.replaces) == set(trail[0].source_ids)
        assert not own & set(summary.replaces)
        other = "ben" if user == "ana" else "ana"
        assert not set(summary.replaces) & {e.source_ids[0] for e in engine.audit_trail(other)}


def test_dry_run_changes_nothing(
    engine: MemoryEngine, config: EngineConfig, redis_client: redis.Redis
) -> None:
    engine.add_many("ana", turns(DOG + CELLO, "s1"))
    engine.add("ana", "Ana's passport ends in 42.", kind="fact", created_at=OLD)
    before = raw_state(redis_client, config.key_prefix)
    report = engine.maintain(now=NOW, dry_run=True, policy=LifecyclePolicy(
        ttl={"fact": DAY}, budget=3))
    assert raw_state(redis_client, config.key_prefix) == before
    (plan,) = report.users[0].plans
    assert report.dry_run
    assert report.users[0].changes == []
    assert len(plan.expire) == 1
    assert plan.groups
    assert plan.after <= 3


def test_undo_restores_exactly_what_was_removed(
    engine: MemoryEngine, config: EngineConfig, redis_client: redis.Redis
) -> None:
    engine.add_many("ana", turns(DOG + CELLO, "s1"))
    queries = ["puppy name", "cello lessons", "recital"]

    def ranked() -> list[list[tuple[str, float]]]:  # recalled at a time still stale at NOW
        return [[(h.memory.id, round(h.score, 6)) for h in engine.search(
            "ana", q, k=5, now=OLD + DAY, mode="vector")] for q in queries]

    hits_before = ranked()
    engine.flush()  # the recalls are stored, and must come back with the memories
    before = raw_state(redis_client, config.key_prefix)
    report = engine.maintain("ana", now=NOW)
    assert engine.count("ana") == 2
    for change in report.changes:
        result = engine.undo("ana", change)
        assert len(result.restored) == 4
        assert result.removed_summary
    after = raw_state(redis_client, config.key_prefix)
    memory_keys = {k for k in before if b":mem:" in k}
    assert {k for k in after if b":mem:" in k} == memory_keys
    assert {k: after[k] for k in memory_keys} == {k: before[k] for k in memory_keys}
    recalls = next(k for k in before if b":acc:" in k)
    assert after[recalls] == before[recalls]
    # Vector rankings come back exactly. (BM25 scores do not, at once: RediSearch keeps the
    # term statistics of deleted documents until its garbage collector runs; see README.)
    assert ranked() == hits_before
    assert all(e.undone_at is not None for e in engine.audit_trail("ana"))
    with pytest.raises(InvalidArgumentError, match="already undone"):
        engine.undo("ana", report.changes[0])


def test_undo_errors_are_typed(engine: MemoryEngine) -> None:
    engine.add_many("ana", turns(DOG, "s1"))
    change = engine.maintain("ana", now=NOW).changes[0]
    with pytest.raises(ChangeNotFoundError):
        engine.undo("ben", change)  # another user's change is not found, never applied
    with pytest.raises(ChangeNotFoundError):
        engine.undo("ana", "0" * 32)
    with pytest.raises(InvalidMemoryIdError):
        engine.undo("ana", "not-a-change")
    with pytest.raises(InvalidArgumentError):
        engine.maintain(policy="budget=3")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError):
        engine.maintain(dry_run="yes")  # type: ignore[arg-type]
    assert engine.count("ana") == 1


def test_audit_entries_expire_with_the_retention_and_go_with_forget_user(
    engine: MemoryEngine, config: EngineConfig, redis_client: redis.Redis
) -> None:
    engine.add_many("ana", turns(DOG, "s1"))
    change = engine.maintain("ana", now=NOW, policy=LifecyclePolicy(
        audit_retention=3600)).changes[0]
    key = next(k for k in redis_client.scan_iter(match=f"{config.key_prefix}:audit:*{change}"))
    assert 3_500_000 < redis_client.pttl(key) <= 3_600_000
    engine.forget_user("ana")
    assert not list(redis_client.scan_iter(match=f"{config.key_prefix}:audit:*"))


def test_leftover_sources_of_a_stored_summary_are_removed(
    engine: MemoryEngine, config: EngineConfig, redis_client: redis.Redis
) -> None:
    """What an interrupted consolidation could leave: a summary whose sources survive."""
    sources = engine.add_many("ana", turns(DOG, "s1", start=NOW - DAY))  # fresh: not regrouped
    summary = engine.add("ana", "Ana adopted a beagle named Biscuit.", kind="summary",
                         created_at=NOW - DAY)
    key = f"{config.key_prefix}:mem:{{ana}}:{summary.id}"
    redis_client.hset(key, "replaces", json.dumps([m.id for m in sources]))  # as to_hash does
    report = engine.maintain("ana", now=NOW)
    assert report.users[0].deduped == 4
    assert engine.count("ana") == 1
    assert all("already summarized by " + summary.id in e.reason
               for e in engine.audit_trail("ana"))


CRASH_SCRIPT = textwrap.dedent("""
    import sys, time
    from memory_engine import EngineConfig, MemoryEngine, LifecyclePolicy
    from memory_engine.lifecycle import ExtractiveSummarizer

    class SlowSummarizer(ExtractiveSummarizer):  # real extractive summaries, written slowly
        def summarize(self, memories):
            time.sleep(0.2)
            return super().summarize(memories)

    url, name, now = sys.argv[1], sys.argv[2], float(sys.argv[3])
    config = EngineConfig(redis_url=url, index_name=name, key_prefix=name)
    with MemoryEngine(config, summarizer=SlowSummarizer()) as engine:
        print("ready", flush=True)
        engine.maintain("ana", now=now, policy=LifecyclePolicy(batch_size=4, min_group=2))
""")


def test_a_run_killed_mid_apply_loses_nothing(
    engine: MemoryEngine, config: EngineConfig, redis_client: redis.Redis, redis_url: str,
    tmp_path: Path,
) -> None:
    sessions = [f"s{i}" for i in range(8)]
    written = []
    for i, session in enumerate(sessions):  # 8 sessions x 4 turns, one topic each
        texts = DOG if i % 2 == 0 else CELLO
        written += engine.add_many("ana", turns(texts, session, start=OLD + i * DAY))
    originals = {m.id for m in written}
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), redis_url, config.index_name,
                             str(NOW)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    audit_index = f"{config.key_prefix}:audit:{{ana}}"
    deadline = time.monotonic() + 120
    while redis_client.zcard(audit_index) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    applied = redis_client.zcard(audit_index)
    assert 2 <= applied < 8, "the kill must land mid-run"

    def check_nothing_lost() -> list[Memory]:
        memories = engine_memories(engine, "ana")
        present = {m.id for m in memories}
        summaries = [m for m in memories if m.kind is Kind.SUMMARY]
        covered = {i for s in summaries for i in s.replaces}
        assert originals <= present | covered  # every turn is there or summarized
        trail = {e.summary_id for e in engine.audit_trail("ana")}
        assert {s.id for s in summaries} <= trail  # no summary without its audit entry
        return summaries

    assert len(check_nothing_lost()) == applied
    engine.maintain("ana", now=NOW, policy=LifecyclePolicy(batch_size=4, min_group=2))
    summaries = check_nothing_lost()
    assert len(summaries) == 8
    assert engine.count("ana") == 8


def test_background_maintainer_thread(engine: MemoryEngine) -> None:
    engine.add_many("ana", turns(DOG, "s1"))  # stale now: created long ago
    maintainer = engine.start_maintainer(0.2)
    deadline = time.monotonic() + 60
    while maintainer.runs < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    maintainer.stop()
    assert maintainer.runs >= 1
    assert maintainer.failures == 0
    assert not maintainer.running
    assert engine.count("ana") == 1
    assert maintainer.last_report is not None
    assert maintainer.last_report.total("summaries") == 1
    with pytest.raises(InvalidArgumentError):
        engine.start_maintainer(0)


@pytest.fixture
def async_engine(config: EngineConfig, minilm: SentenceTransformerEmbedder) -> AsyncMemoryEngine:
    return AsyncMemoryEngine(config, embedder=minilm)


def test_async_twin_maintains_undoes_and_runs_in_the_background(
    engine: MemoryEngine, async_engine: AsyncMemoryEngine
) -> None:
    engine.add_many("ana", turns(DOG + CELLO, "s1"))
    engine.add_many("ben", turns(DOG, "s1"))

    async def scenario() -> None:
        async with async_engine as eng:
            dry = await eng.maintain(now=NOW, dry_run=True)
            assert [u.summaries for u in dry.users] == [2, 1]
            assert await eng.count("ana") == 8
            report = await eng.maintain("ana", now=NOW)
            assert report.users[0].summaries == 2
            assert await eng.count("ana") == 2
            trail = await eng.audit_trail("ana")
            assert {e.action for e in trail} == {"consolidate"}
            await eng.undo("ana", trail[0].change_id)
            assert await eng.count("ana") == 5
            maintainer = await eng.start_maintainer(0.2)
            deadline = time.monotonic() + 60
            while maintainer.runs < 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await maintainer.stop()
            assert maintainer.runs >= 1
            assert maintainer.failures == 0
            assert await eng.count("ben") == 1

    asyncio.run(scenario())
