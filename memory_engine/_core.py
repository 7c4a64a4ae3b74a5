"""The engine's I/O-free half: validation, record building and query planning.

``MemoryEngine`` and ``AsyncMemoryEngine`` are thin shells around ``EngineCore``: they embed
and talk to Redis; everything else happens here, once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from . import _validation as check
from .config import EngineConfig
from .embeddings import Embedder, normalized
from .exceptions import InvalidArgumentError
from .models import Kind, Memory, NewMemory, SearchHit, SearchMode, Vector
from .retrieval._queries import SearchRequest, keyword_command, vector_command
from .retrieval._results import keyword_hits, vector_hits
from .store import StoreCore, StoreSettings, new_id

_NEW_FIELDS = {f.name for f in dataclasses.fields(NewMemory)}
_UPDATABLE = ("text", "session_id", "kind", "role", "name", "importance", "metadata")


@dataclass(frozen=True, slots=True)
class PreparedWrite:
    """Validated memories, with the positions whose text still has to be embedded."""

    memories: list[Memory]
    vectors: list[Vector | None]
    to_embed: list[int]

    @property
    def texts(self) -> list[str]:
        return [self.memories[i].text for i in self.to_embed]


class EngineCore:
    """Everything the engine does that needs neither Redis nor the model."""

    def __init__(self, config: EngineConfig, embedder: Embedder):
        self.config = config
        self.embedder = embedder
        self._store_core: StoreCore | None = None

    @property
    def store_core(self) -> StoreCore:
        """The store core; built on first use because the vector size needs the model."""
        if self._store_core is None:
            cfg = self.config
            self._store_core = StoreCore(StoreSettings(
                index_name=cfg.index_name, key_prefix=cfg.key_prefix, dims=self.embedder.dims,
                embedder_name=self.embedder.name, hnsw_m=cfg.hnsw_m,
                hnsw_ef_construction=cfg.hnsw_ef_construction,
                hnsw_ef_runtime=cfg.hnsw_ef_runtime, write_batch_size=cfg.write_batch_size,
            ))
        return self._store_core

    def prepare_write(
        self, user_id: object, items: Iterable[NewMemory | Mapping[str, Any] | str], now: float
    ) -> PreparedWrite:
        """Validate every item before anything is embedded or written."""
        uid = check.user_id(user_id)
        if isinstance(items, str | bytes | NewMemory):
            raise InvalidArgumentError("add_many takes a list of items; use add for one memory")
        memories: list[Memory] = []
        vectors: list[Vector | None] = []
        to_embed: list[int] = []
        for position, raw in enumerate(items):
            item = self._as_new(raw, position)
            created = check.timestamp(item.created_at, "created_at")
            memories.append(Memory(
                id=new_id(now),
                user_id=uid,
                text=check.text(item.text, self.config.max_text_chars),
                kind=check.kind(item.kind),
                session_id=check.session_id(item.session_id),
                role=check.role(item.role),
                name=check.name(item.name),
                created_at=now if created is None else created,
                last_accessed=now if created is None else created,
                access_count=0,
                importance=check.importance(item.importance),
                metadata=check.metadata(item.metadata),
            ))
            if item.embedding is None:
                vectors.append(None)
                to_embed.append(position)
            else:
                vectors.append(normalized(item.embedding, self.embedder.dims))
        if not memories:
            raise InvalidArgumentError("add_many needs at least one item")
        return PreparedWrite(memories, vectors, to_embed)

    @staticmethod
    def _as_new(raw: NewMemory | Mapping[str, Any] | str, position: int) -> NewMemory:
        if isinstance(raw, NewMemory):
            return raw
        if isinstance(raw, str):
            return NewMemory(text=raw)
        if isinstance(raw, Mapping):
            unknown = set(raw) - _NEW_FIELDS
            if unknown:
                raise InvalidArgumentError(
                    f"item {position} has unknown fields {sorted(unknown)}; "
                    f"allowed: {sorted(_NEW_FIELDS)}"
                )
            if "text" not in raw:
                raise InvalidArgumentError(f"item {position} has no 'text'")
            return NewMemory(**raw)
        raise InvalidArgumentError(
            f"item {position} must be a NewMemory, a dict or a string; got {type(raw).__name__}"
        )

    def records(
        self, prepared: PreparedWrite, embedded: Sequence[Vector]
    ) -> list[tuple[Memory, Vector]]:
        """Pair each memory with its vector, given the vectors of ``prepared.to_embed``."""
        vectors = list(prepared.vectors)
        if prepared.to_embed:
            matrix = normalized(embedded, self.embedder.dims, rows=len(prepared.to_embed))
            for position, vector in zip(prepared.to_embed, matrix, strict=True):
                vectors[position] = vector
        return [(m, v) for m, v in zip(prepared.memories, vectors, strict=True) if v is not None]

    def prepare_update(self, existing: Memory, changes: Mapping[str, Any]) -> tuple[Memory, bool]:
        """The updated memory, and whether its text changed (so it must be re-embedded)."""
        unknown = set(changes) - set(_UPDATABLE)
        if unknown:
            raise InvalidArgumentError(
                f"cannot update {sorted(unknown)}; allowed: {list(_UPDATABLE)}"
            )
        values: dict[str, Any] = {}
        validators: dict[str, Any] = {
            "text": lambda v: check.text(v, self.config.max_text_chars),
            "session_id": check.session_id, "kind": check.kind, "role": check.role,
            "name": check.name, "importance": check.importance, "metadata": check.metadata,
        }
        for field, value in changes.items():
            values[field] = validators[field](value)
        updated = dataclasses.replace(existing, **values)
        return updated, updated.text != existing.text

    def search_request(
        self, user_id: object, query: object, *, k: object, mode: object,
        session_id: object = None, kinds: Iterable[object] | None = None,
        since: object = None, until: object = None,
    ) -> SearchRequest:
        req = SearchRequest(
            user_id=check.user_id(user_id),
            query=check.text(query, self.config.max_text_chars, "query"),
            k=check.k(k, self.config.max_k),
            mode=check.mode(mode),
            session_id=check.session_id(session_id),
            kinds=check.kinds(kinds),
            since=check.timestamp(since, "since"),
            until=check.timestamp(until, "until"),
        )
        if req.since is not None and req.until is not None and req.since > req.until:
            raise InvalidArgumentError(f"since ({req.since}) is after until ({req.until})")
        return req

    def search_command(self, req: SearchRequest, vector: Vector | None) -> list[object] | None:
        """The FT.SEARCH to run; None when the query cannot match anything."""
        name = self.store_core.index_name
        if req.mode is SearchMode.VECTOR:
            assert vector is not None
            return vector_command(name, req, vector, ef_runtime=self.config.hnsw_ef_runtime)
        return keyword_command(name, req)

    @staticmethod
    def hits(req: SearchRequest, reply: list[Any]) -> list[SearchHit]:
        if req.mode is SearchMode.VECTOR:
            return vector_hits(req.user_id, reply)
        return keyword_hits(req.user_id, reply)

    @staticmethod
    def needs_vector(req: SearchRequest) -> bool:
        return req.mode is SearchMode.VECTOR


__all__ = ["EngineCore", "Kind", "PreparedWrite"]
