"""Shared fixtures: one real embedded Redis (with RediSearch) and one real model per run.

Every test that writes gets its own index name and key prefix, so tests never see each
other's data and can run in any order.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from memory_engine import EmbeddedServer, EngineConfig, MemoryEngine
from memory_engine.embeddings import SentenceTransformerEmbedder
from tests.redis_state import drop_index


@pytest.fixture(scope="session")
def server_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A data directory with a running embedded server, stopped at the end of the run."""
    home = tmp_path_factory.mktemp("memory-engine-home")
    server = EmbeddedServer(home)
    server.start(persistent=True)
    yield home
    server.stop()


@pytest.fixture(scope="session")
def redis_url(server_home: Path) -> str:
    state = EmbeddedServer(server_home).status()
    assert state is not None, "the embedded server is not running"
    return state.url


@pytest.fixture(scope="session")
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, protocol=2)
    yield client
    client.close()


@pytest.fixture(scope="session")
def admin_client(server_home: Path) -> Iterator[redis.Redis]:
    """The embedded server's admin connection (the ``default`` user): BGSAVE, DUMP/RESTORE,
    FT.DEBUG and the other commands the engine's own user is denied."""
    state = EmbeddedServer(server_home).status()
    assert state is not None
    assert state.admin_url is not None
    client = redis.Redis.from_url(state.admin_url, protocol=2)
    yield client
    client.close()


@pytest.fixture(scope="session")
def minilm() -> SentenceTransformerEmbedder:
    """The real bundled all-MiniLM-L6-v2, loaded once per run."""
    embedder = SentenceTransformerEmbedder()
    assert embedder.dims == 384
    return embedder


@pytest.fixture
def config(redis_url: str) -> EngineConfig:
    """A config on the shared server with a fresh index and key prefix."""
    name = f"t{uuid.uuid4().hex[:12]}"
    return EngineConfig(redis_url=redis_url, index_name=name, key_prefix=name)


@pytest.fixture
def engine(
    config: EngineConfig, minilm: SentenceTransformerEmbedder, redis_client: redis.Redis
) -> Iterator[MemoryEngine]:
    """A connected engine with the real model on its own index; the index is dropped after."""
    with MemoryEngine(config, embedder=minilm) as eng:
        eng.connect()
        yield eng
    drop_index(redis_client, config)


from tests.s3_server import SeaweedS3  # noqa: E402  (appended with the fixture it serves)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[SeaweedS3]:
    """A real SeaweedFS S3 server on 127.0.0.1 for the whole run, its data removed after."""
    with SeaweedS3() as server:
        yield server
