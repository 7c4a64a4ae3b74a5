"""AsyncMemoryEngine: the same contract as MemoryEngine, awaited."""

from __future__ import annotations

import asyncio

import pytest
import redis

from memory_engine import (
    AsyncMemoryEngine,
    EngineConfig,
    InvalidTextError,
    MemoryEngine,
    MemoryNotFoundError,
)
from memory_engine.embeddings import SentenceTransformerEmbedder

pytestmark = pytest.mark.integration


def test_same_public_methods() -> None:
    public = lambda cls: {n for n in dir(cls) if not n.startswith("_")}  # noqa: E731
    assert public(MemoryEngine) == public(AsyncMemoryEngine)
    attributes = {"config", "embedder", "summarizer", "url", "pending_writes"}
    for name in public(MemoryEngine) - attributes:
        assert asyncio.iscoroutinefunction(getattr(AsyncMemoryEngine, name)), name


async def test_async_round_trip(
    config: EngineConfig, minilm: SentenceTransformerEmbedder, redis_client: redis.Redis
) -> None:
    try:
        async with AsyncMemoryEngine(config, embedder=minilm) as engine:
            first = await engine.add("alice", "I keep bees on my rooftop in Porto", role="user")
            await engine.add_many("alice", ["The hive produced honey in June", "I like chess"])
            await engine.add("bob", "Bob keeps no bees at all")
            hits = await engine.search("alice", "beekeeping hobby", k=2)
            assert {h.memory.user_id for h in hits} == {"alice"}
            assert hits[0].memory.id == first.id
            keyword = await engine.search("alice", "honey", mode="keyword")
            assert [h.memory.text for h in keyword] == ["The hive produced honey in June"]
            # concurrent searches share one connection pool and one event loop
            many = await asyncio.gather(*(engine.search("alice", "bees", k=1) for _ in range(20)))
            assert all(r[0].memory.id == first.id for r in many)
            updated = await engine.update("alice", first.id, text="I keep bees in Lisbon now")
            assert (await engine.get("alice", first.id)).text == updated.text
            with pytest.raises(InvalidTextError):
                await engine.add("alice", "   ")
            assert await engine.count("alice") == 3
            await engine.delete("alice", first.id)
            with pytest.raises(MemoryNotFoundError):
                await engine.get("alice", first.id)
            assert await engine.forget_user("alice") == 2
            assert await engine.count("bob") == 1
    finally:
        redis_client.execute_command("FT.DROPINDEX", config.index_name, "DD")
