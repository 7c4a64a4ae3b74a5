"""``MemoryStore``: executes the store core's commands on a blocking Redis client."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import redis
from redisvl.index import SearchIndex

from ..models import Memory, Vector
from ._core import StoreCore, keys_of
from ._errors import is_missing_index, redis_errors
from ._records import MEMORY_FIELDS


class MemoryStore:
    """Memories of all users in one RediSearch index, on a ``redis.Redis`` client.

    Every method takes the user id and touches only that user's keys.
    """

    def __init__(self, client: redis.Redis, core: StoreCore):
        self.client = client
        self.core = core

    def ensure_index(self) -> None:
        """Create the index if it does not exist; otherwise check it matches the schema."""
        core = self.core
        with redis_errors("inspect the index"):
            try:
                info = self.client.execute_command("FT.INFO", core.index_name)
            except redis.ResponseError as exc:
                if not is_missing_index(exc):
                    raise
                info = None
            if info is None:
                try:
                    SearchIndex(core.schema, redis_client=self.client).create(overwrite=False)
                except redis.ResponseError as exc:
                    if "already exists" not in str(exc).lower():  # another process won the race
                        raise
                info = self.client.execute_command("FT.INFO", core.index_name)
            core.check_index(info, self.client.hgetall(core.keys.meta_key))
            self.client.hset(core.keys.meta_key, mapping=cast(Any, core.meta_fields()))

    def put_many(self, records: Sequence[tuple[Memory, Vector]]) -> None:
        """Write memories with their vectors: one MULTI/EXEC per ``write_batch_size``."""
        with redis_errors("write memories"):
            for batch in self.core.batches(records):
                pipe = self.client.pipeline(transaction=True)
                for key, fields in batch:
                    pipe.hset(key, mapping=cast(Any, fields))
                pipe.execute()

    def get(self, user_id: str, memory_id: str) -> Memory | None:
        with redis_errors("read a memory"):
            values = self.client.hmget(self.core.keys.memory(user_id, memory_id), MEMORY_FIELDS)
        return self.core.read_memory(memory_id, MEMORY_FIELDS, values)

    def rewrite(self, memory: Memory, vector: Vector | None) -> bool:
        """Replace an existing memory's fields; False (and nothing written) if it is gone."""
        with redis_errors("update a memory"):
            return bool(self.client.execute_command(*self.core.update_args(memory, vector)))

    def delete(self, user_id: str, memory_id: str) -> bool:
        with redis_errors("delete a memory"):
            return bool(self.client.delete(self.core.keys.memory(user_id, memory_id)))

    def forget_user(self, user_id: str) -> int:
        """Delete every memory of one user, in batches. Returns how many were deleted."""
        deleted = 0
        with redis_errors("forget a user"):
            while keys := keys_of(self.client.execute_command(*self.core.keys_command(user_id))):
                deleted += int(self.client.delete(*keys))
            # Keys the index does not hold (a hash it failed to index) are found by pattern.
            pattern = self.core.keys.user_pattern(user_id)
            for key in self.client.scan_iter(match=pattern, count=1000):
                deleted += int(self.client.delete(key))
        return deleted

    def count(self, user_id: str) -> int:
        with redis_errors("count memories"):
            return int(self.client.execute_command(*self.core.count_command(user_id))[0])

    def search(self, command: Sequence[object]) -> list[Any]:
        with redis_errors("search"):
            reply: list[Any] = self.client.execute_command(*command)
            return reply
