"""What the store sends to Redis and how it reads the answers, with no I/O.

``MemoryStore`` and ``AsyncMemoryStore`` only execute what this core builds.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..exceptions import SchemaMismatchError
from ..models import Memory, Vector
from ._crypto import Sealer
from ._records import MEMORY_FIELDS, KeySpace, encode_tag, from_values, tag_clause, to_hash
from ._schema import SCHEMA_VERSION, build_schema, check_compatible, schema_dict

# HSET only if the key exists, in one atomic step: an update racing a delete must not
# resurrect a half-written memory. The recalls counted so far are folded into the rewritten
# memory by the caller, so their side entry (KEYS[2], field ARGV[1]) is dropped.
UPDATE_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""
# Several memories of one user and their recall entries in one command (the search path's
# second and last round trip). KEYS: the memory keys, then the user's recall hash; ARGV: the
# number of fields, the fields, then the memory ids. A missing memory reads as all nils.
FETCH = """
local n, nf = #KEYS - 1, tonumber(ARGV[1])
local fields = {unpack(ARGV, 2, nf + 1)}
local out = {}
for i = 1, n do out[i] = redis.call('HMGET', KEYS[i], unpack(fields)) end
out[n + 1] = redis.call('HMGET', KEYS[n + 1], unpack(ARGV, nf + 2))
return out
"""
FETCH_SHA = hashlib.sha1(FETCH.encode()).hexdigest()
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

    def __init__(self, settings: StoreSettings, sealer: Sealer | None = None):
        self.settings = settings
        self.sealer = sealer
        self.keys = KeySpace(settings.key_prefix)
        self.spec = schema_dict(
            settings.index_name, self.keys.memory_prefix, settings.dims,
            m=settings.hnsw_m, ef_construction=settings.hnsw_ef_construction,
            ef_runtime=settings.hnsw_ef_runtime, encrypted=sealer is not None,
        )
        self.schema = build_schema(self.spec)

    @property
    def index_name(self) -> str:
        return self.settings.index_name

    def meta_fields(self) -> dict[str, str]:
        fields = {
            "schema_version": str(SCHEMA_VERSION),
            "embedder": self.settings.embedder_name,
            "dims": str(self.settings.dims),
        }
        if self.sealer is not None:
            fields["encryption"] = "aes-256-gcm+blind-index"
        return fields

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
                f"configured with {want}. Vectors of different models, and encrypted and "
                "plaintext memories, cannot share an index: use another index name "
                "(MEMORY_ENGINE_INDEX), or the original embedding model and encryption setting."
            )

    def batches(
        self, records: Sequence[tuple[Memory, Vector, str | None]],
        tails: Mapping[str, Sequence[str]] | None = None,
    ) -> list[list[tuple[str, dict[str, Any]]]]:
        """(key, fields) pairs, grouped into write transactions; the session tails go with
        the last one."""
        size = self.settings.write_batch_size
        pairs = [(self.keys.memory(m.user_id, m.id), self.hash_of(m, v, c)) for m, v, c in records]
        groups = [pairs[i : i + size] for i in range(0, len(pairs), size)]
        if tails and records:
            fields: dict[str, Any] = {
                encode_tag(s): json.dumps(list(ids)) for s, ids in tails.items()
            }
            groups[-1].append((self.keys.tails(records[0][0].user_id), fields))
        return groups

    def hash_of(
        self, memory: Memory, vector: Vector | None, context: str | None = None
    ) -> dict[str, Any]:
        """A memory's HASH fields as stored: sealed when encryption is on."""
        fields = to_hash(memory, vector, context)
        if self.sealer is None:
            return fields
        return self.sealer.seal_hash(memory.user_id, memory.id, fields)

    def tail_ids(self, sessions: Sequence[str], raw: Sequence[Any]) -> dict[str, list[str]]:
        """Session -> ids of its latest turns, from HMGET of the tails hash."""
        return {s: json.loads(v) for s, v in zip(sessions, raw, strict=True) if v}

    def tail_turns(
        self, user_id: str, tail_ids: Mapping[str, Sequence[str]],
        rows: Sequence[Sequence[Any]],
    ) -> dict[str, list[tuple[str, str | None, str]]]:
        """Session -> (id, name, text) of its latest turns; rows are HMGET name, text in the
        order of ``tail_ids``. Turns deleted since are skipped."""
        out: dict[str, list[tuple[str, str | None, str]]] = {}
        it = iter(rows)
        sealer = self.sealer
        for session, ids in tail_ids.items():
            turns = out.setdefault(session, [])
            for memory_id in ids:
                raw_name, raw_text = next(it)
                if raw_text is None:
                    continue
                if sealer is None:
                    name, text = (raw_name.decode() if raw_name else ""), raw_text.decode()
                else:
                    name = sealer.open(user_id, memory_id, "name", raw_name or b"")
                    text = sealer.open(user_id, memory_id, "text", raw_text)
                turns.append((memory_id, name or None, text))
        return out

    def update_args(self, memory: Memory, vector: Vector | None) -> list[Any]:
        """EVAL arguments that rewrite an existing memory (and its vector, if given)."""
        fields = self.hash_of(memory, vector)
        flat: list[Any] = [x for pair in fields.items() for x in pair]
        keys = [self.keys.memory(memory.user_id, memory.id), self.keys.recalls(memory.user_id)]
        return ["EVAL", UPDATE_IF_EXISTS, 2, *keys, memory.id, *flat]

    def read_memory(self, memory_id: str, values: Sequence[Any], recalls: Any) -> Memory | None:
        """A Memory from HMGET values of ``MEMORY_FIELDS`` and its recall entry, or None when
        it does not exist."""
        return from_values(memory_id, values, recalls, self.sealer)

    def fetch_args(self, user_id: str, memory_ids: Sequence[str]) -> list[Any]:
        """EVALSHA arguments of ``FETCH`` (EVAL takes the script in place of the hash)."""
        keys = [self.keys.memory(user_id, m) for m in memory_ids]
        return [FETCH_SHA, len(keys) + 1, *keys, self.keys.recalls(user_id),
                len(MEMORY_FIELDS), *MEMORY_FIELDS, *memory_ids]

    def read_memories(
        self, memory_ids: Sequence[str], reply: Sequence[Any]
    ) -> list[Memory | None]:
        """Memories from a ``FETCH`` reply: one HMGET row each, then their recall entries
        (None where a memory does not exist)."""
        *rows, recalls = reply
        return [
            from_values(memory_id, row, stat, self.sealer)
            for memory_id, row, stat in zip(memory_ids, rows, recalls, strict=True)
        ]

    def user_query(self, user_id: str) -> str:
        return str(tag_clause("user_id", user_id))

    def count_command(self, user_id: str) -> list[object]:
        return ["FT.SEARCH", self.index_name, self.user_query(user_id),
                "NOCONTENT", "LIMIT", 0, 0, "DIALECT", 2]

    def keys_command(self, user_id: str) -> list[object]:
        return ["FT.SEARCH", self.index_name, self.user_query(user_id),
                "NOCONTENT", "LIMIT", 0, FORGET_BATCH, "DIALECT", 2]


def keys_of(reply: list[Any]) -> list[str]:
    """Keys of a NOCONTENT search reply."""
    return [k.decode() if isinstance(k, bytes) else str(k) for k in reply[1:]]
