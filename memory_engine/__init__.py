"""memory-engine: long-term, per-user memory for LLM applications.

Conversation turns are embedded and stored in a RediSearch HNSW index, filtered by user,
and recalled in milliseconds::

    from memory_engine import MemoryEngine

    with MemoryEngine() as memory:
        memory.add("alice", "I'm allergic to peanuts", role="user")
        for hit in memory.search("alice", "what food should I avoid?", k=3):
            print(f"{hit.score:.2f} {hit.memory.text}")
"""

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _version

from .config import EngineConfig
from .embeddings import (
    CachedEmbedder,
    Embedder,
    LangChainEmbedder,
    SentenceTransformerEmbedder,
)
from .engine import AsyncMemoryEngine, MemoryEngine
from .exceptions import (
    ChangeNotFoundError,
    ConfigurationError,
    EmbeddingDimensionError,
    EmbeddingError,
    InvalidArgumentError,
    InvalidInputError,
    InvalidMemoryIdError,
    InvalidModeError,
    InvalidTextError,
    InvalidUserIdError,
    MemoryEngineError,
    MemoryNotFoundError,
    MissingDependencyError,
    RedisNotFoundError,
    SchemaMismatchError,
    SearchModuleMissingError,
    ServerError,
    ServerStartError,
    StoreError,
    SummarizerError,
)
from .lifecycle import ExtractiveSummarizer, LifecyclePolicy, Summarizer
from .models import Kind, Memory, NewMemory, Role, ScoreParts, SearchHit, SearchMode
from .server import EmbeddedServer

try:
    __version__ = _version("memory-engine")
except _PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"

__all__ = [
    "AsyncMemoryEngine",
    "CachedEmbedder",
    "ChangeNotFoundError",
    "ConfigurationError",
    "EmbeddedServer",
    "Embedder",
    "EmbeddingDimensionError",
    "EmbeddingError",
    "EngineConfig",
    "ExtractiveSummarizer",
    "InvalidArgumentError",
    "InvalidInputError",
    "InvalidMemoryIdError",
    "InvalidModeError",
    "InvalidTextError",
    "InvalidUserIdError",
    "Kind",
    "LangChainEmbedder",
    "LifecyclePolicy",
    "Memory",
    "MemoryEngine",
    "MemoryEngineError",
    "MemoryNotFoundError",
    "MissingDependencyError",
    "NewMemory",
    "RedisNotFoundError",
    "Role",
    "SchemaMismatchError",
    "ScoreParts",
    "SearchHit",
    "SearchMode",
    "SearchModuleMissingError",
    "SentenceTransformerEmbedder",
    "ServerError",
    "ServerStartError",
    "StoreError",
    "Summarizer",
    "SummarizerError",
    "__version__",
]
