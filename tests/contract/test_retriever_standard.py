"""The ``langchain-tests`` standard retriever suite, unmodified, on the real Redis and model.

It runs twice: once with only a ``MemoryEngine`` (``ainvoke`` threads the sync engine) and once
with both engines (``ainvoke`` awaits the ``AsyncMemoryEngine``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis
from langchain_tests.integration_tests import RetrieversIntegrationTests

from memory_engine import AsyncMemoryEngine, EngineConfig, MemoryEngine
from memory_engine.embeddings import SentenceTransformerEmbedder
from memory_engine.langchain import MemoryRetriever

pytestmark = pytest.mark.integration

USER = "alice"
MEMORIES = [
    "I adopted a grey cat called Miso last spring",
    "My cat Miso sleeps on the radiator all winter",
    "The vet said my cat needs less dry food",
    "I bought a scratching post so the cat leaves the sofa alone",
    "My sister's dog chases my cat when they visit",
    "I take the train to work on Tuesdays",
    "My favourite dish is mushroom risotto",
    "I am learning to play the cello",
]


@pytest.fixture(scope="class")
def seeded_config(
    redis_url: str, minilm: SentenceTransformerEmbedder, redis_client: redis.Redis
) -> Iterator[EngineConfig]:
    """A fresh index with ``USER``'s memories and another user's, dropped after the class."""
    name = f"t{uuid.uuid4().hex[:12]}"
    config = EngineConfig(redis_url=redis_url, index_name=name, key_prefix=name)
    with MemoryEngine(config, embedder=minilm) as engine:
        engine.add_many(USER, MEMORIES)
        engine.add_many("bob", ["Bob's cat is called Pepper", "Bob's cat is black"])
    yield config
    redis_client.execute_command("FT.DROPINDEX", name, "DD")
    redis_client.delete(f"{name}:meta")


@pytest.fixture(scope="class")
def sync_engine(
    seeded_config: EngineConfig, minilm: SentenceTransformerEmbedder
) -> Iterator[MemoryEngine]:
    with MemoryEngine(seeded_config, embedder=minilm) as engine:
        yield engine


class TestMemoryRetrieverStandard(RetrieversIntegrationTests):
    """Only a sync engine."""

    engine: MemoryEngine

    @pytest.fixture(autouse=True)
    def _bind_engine(self, sync_engine: MemoryEngine) -> None:
        self.engine = sync_engine

    @property
    def retriever_constructor(self) -> type[MemoryRetriever]:
        return MemoryRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"engine": self.engine, "user_id": USER}

    @property
    def retriever_query_example(self) -> str:
        return "tell me about my cat"


class TestMemoryRetrieverStandardBothEngines(RetrieversIntegrationTests):
    """A sync and an async engine; the async one is made in each test's own event loop."""

    engine: MemoryEngine
    async_engine: AsyncMemoryEngine

    @pytest.fixture(autouse=True)
    async def _bind_engines(
        self,
        sync_engine: MemoryEngine,
        seeded_config: EngineConfig,
        minilm: SentenceTransformerEmbedder,
    ) -> AsyncIterator[None]:
        self.engine = sync_engine
        async with AsyncMemoryEngine(seeded_config, embedder=minilm) as engine:
            self.async_engine = engine
            yield

    @property
    def retriever_constructor(self) -> type[MemoryRetriever]:
        return MemoryRetriever

    @property
    def retriever_constructor_params(self) -> dict[str, Any]:
        return {"engine": self.engine, "async_engine": self.async_engine, "user_id": USER}

    @property
    def retriever_query_example(self) -> str:
        return "tell me about my cat"
