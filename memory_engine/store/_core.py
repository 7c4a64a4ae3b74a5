"""What the store sends to Redis and how it reads the answers, with no I/O.

``MemoryStore`` and ``AsyncMemoryStore`` only execute what this core builds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redisvl.query.filter import Tag

from ..exceptions import SchemaMismatchError
from ..models import Memory, Vector
from ._records import KeySpace, encode_tag, from_hash, to_hash
from ._schema import SCHEMA_VERSION, build_schema, check_compatible, schema_dict

# HSET only if the key exists, in one atomic step: an update racing a delete must not
# resurrect a half-written memory.
UPDATE_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""
FORGET_BATCH = 500


@dataclass(frozen=True, slots=True)
class StoreSettings:
    """What the store needs to know; derived from ``EngineConfig`` and the embedder."""

    index_name: str
    key_prefix: str
    dims: int
    embedder_name: str
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    hnsw_ef_runtime: int = 10
    write_batch_size: int = 256


class StoreCore:
    """Builds the store's commands and parses its replies."""

    def __init__(self, settings: StoreSettings):
        self.settings = settings
        self.keys = KeySpace(settings.key_prefix)
        self.spec = schema_dict(
            settings.index_name, self.keys.memory_prefix, settings.dims,
            m=settings.hnsw_m, ef_construction=settings.hnsw_ef_construction,
            ef_runtime=settings.hnsw_ef_runtime,
        )
        self.schema = build_schema(self.spec)

    @property
    def index_name(self) -> str:
        return self.settings.index_name

    def meta_fields(self) -> dict[str, str]:
        return {
            "schema_version": str(SCHEMA_VERSION),
            "embedder": self.settings.embedder_name,
            "dims": str(self.settings.dims),
        }

    def check_index(self, info: list[Any], meta: dict[Any, Any]) -> None:
        """Raise ``SchemaMismatchError`` if the existing index or its metadata differ."""
        check_compatible(self.index_name, info, self.spec)
        stored = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
            for k, v in meta.items()
        }
        want = self.meta_fields()
        if stored and stored != want:
            raise SchemaMismatchError(
                f"The index {self.index_name!r} was built with {stored}; this engine is "
                f"configured with {want}. Vectors of different models cannot share an index: "
                "use another index name (MEMORY_ENGINE_INDEX) or the original embedding model."
            )

    def batches(
        self, records: Sequence[tuple[Memory, Vector]]
    ) -> list[list[tuple[str, dict[str, Any]]]]:
        """(key, fields) pairs, grouped into write transactions."""
        size = self.settings.write_batch_size
        pairs = [(self.keys.memory(m.user_id, m.id), to_hash(m, v)) for m, v in records]
        return [pairs[i : i + size] for i in range(0, len(pairs), size)]

    def update_args(self, memory: Memory, vector: Vector | None) -> list[Any]:
        """EVAL arguments that rewrite an existing memory (and its vector, if given)."""
        fields = to_hash(memory, vector)
        flat: list[Any] = [x for pair in fields.items() for x in pair]
        return ["EVAL", UPDATE_IF_EXISTS, 1, self.keys.memory(memory.user_id, memory.id), *flat]

    def read_memory(
        self, memory_id: str, fields: Sequence[str], values: Sequence[Any]
    ) -> Memory | None:
        """A Memory from HMGET values, or None when the key does not exist."""
        if all(v is None for v in values):
            return None
        return from_hash(memory_id, dict(zip(fields, values, strict=True)))

    def user_query(self, user_id: str) -> str:
        return str(Tag("user_id") == encode_tag(user_id))

    def count_command(self, user_id: str) -> list[object]:
        return ["FT.SEARCH", self.index_name, self.user_query(user_id),
                "NOCONTENT", "LIMIT", 0, 0, "DIALECT", 2]

    def keys_command(self, user_id: str) -> list[object]:
        return ["FT.SEARCH", self.index_name, self.user_query(user_id),
                "NOCONTENT", "LIMIT", 0, FORGET_BATCH, "DIALECT", 2]


def keys_of(reply: list[Any]) -> list[str]:
    """Keys of a NOCONTENT search reply."""
    return [k.decode() if isinstance(k, bytes) else str(k) for k in reply[1:]]
