"""``AsyncMemoryStore``: executes the store core's commands on an asyncio Redis client."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redisvl.index import AsyncSearchIndex

from ..models import Memory, Vector
from ._core import StoreCore, keys_of
from ._errors import is_missing_index, redis_errors
from ._records import MEMORY_FIELDS


class AsyncMemoryStore:
    """The asyncio twin of ``MemoryStore``: the same methods, awaited."""

    def __init__(self, client: aioredis.Redis, core: StoreCore):
        self.client = client
        self.core = core

    async def ensure_index(self) -> None:
        core = self.core
        with redis_errors("inspect the index"):
            try:
                info = await self.client.execute_command("FT.INFO", core.index_name)
            except redis.ResponseError as exc:
                if not is_missing_index(exc):
                    raise
                info = None
            if info is None:
                try:
                    await AsyncSearchIndex(core.schema, redis_client=self.client).create(
                        overwrite=False
                    )
                except redis.ResponseError as exc:
                    if "already exists" not in str(exc).lower():
                        raise
                info = await self.client.execute_command("FT.INFO", core.index_name)
            core.check_index(info, await self.client.hgetall(core.keys.meta_key))
            await self.client.hset(core.keys.meta_key, mapping=cast(Any, core.meta_fields()))

    async def put_many(self, records: Sequence[tuple[Memory, Vector]]) -> None:
        with redis_errors("write memories"):
            for batch in self.core.batches(records):
                pipe = self.client.pipeline(transaction=True)
                for key, fields in batch:
                    pipe.hset(key, mapping=cast(Any, fields))
                await pipe.execute()

    async def get(self, user_id: str, memory_id: str) -> Memory | None:
        with redis_errors("read a memory"):
            key = self.core.keys.memory(user_id, memory_id)
            values = await self.client.hmget(key, MEMORY_FIELDS)
        return self.core.read_memory(memory_id, MEMORY_FIELDS, values)

    async def rewrite(self, memory: Memory, vector: Vector | None) -> bool:
        with redis_errors("update a memory"):
            return bool(await self.client.execute_command(*self.core.update_args(memory, vector)))

    async def delete(self, user_id: str, memory_id: str) -> bool:
        with redis_errors("delete a memory"):
            return bool(await self.client.delete(self.core.keys.memory(user_id, memory_id)))

    async def forget_user(self, user_id: str) -> int:
        deleted = 0
        with redis_errors("forget a user"):
            while keys := keys_of(
                await self.client.execute_command(*self.core.keys_command(user_id))
            ):
                deleted += int(await self.client.delete(*keys))
            pattern = self.core.keys.user_pattern(user_id)
            async for key in self.client.scan_iter(match=pattern, count=1000):
                deleted += int(await self.client.delete(key))
        return deleted

    async def count(self, user_id: str) -> int:
        with redis_errors("count memories"):
            reply = await self.client.execute_command(*self.core.count_command(user_id))
            return int(reply[0])

    async def search(self, command: Sequence[object]) -> list[Any]:
        with redis_errors("search"):
            reply: list[Any] = await self.client.execute_command(*command)
            return reply
