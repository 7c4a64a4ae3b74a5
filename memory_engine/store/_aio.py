"""``AsyncMemoryStore``: executes the store core's commands on an asyncio Redis client."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError
from redisvl.index import AsyncSearchIndex

from ..models import Memory, Vector
from ..retrieval._script import SEARCH, SEARCH_SHA
from ..security import KeyChain
from ._core import FETCH, StoreCore, keys_of
from ._errors import is_missing_index, redis_errors
from ._history import HistoryKeys, stored_messages, user_pattern_base
from ._lane import AsyncLane
from ._records import MEMORY_FIELDS, encode_tag
from ._sync import SWAP


class AsyncMemoryStore:
    """The asyncio twin of ``MemoryStore``: the same methods, awaited."""

    def __init__(self, client: aioredis.Redis, core: StoreCore):
        self.client = client
        self.core = core
        self._lane = AsyncLane(client)  # the search path's one command per call

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

    async def unlock(self, user_id: str, *, create: bool) -> None:
        """Load the user's data key (with encryption on; otherwise nothing to do). With
        ``create`` (a write), the stored key is always read again, so a write never uses a
        key another process has destroyed meanwhile; a user without one gets a new one
        (first writer wins). Without (a read), a held key is used as is, and a user whose key
        is gone stays locked: reading their encrypted data raises ``DataKeyMissingError``."""
        sealer = self.core.sealer
        if sealer is None or (sealer.unlocked(user_id) and not create):
            return
        name = sealer.key_name(user_id)
        with redis_errors("load a data key"):
            wrapped = await self.client.get(name)
            if wrapped is None and create:
                await self.client.set(name, sealer.new_wrapped(user_id), nx=True)
                wrapped = await self.client.get(name)
        if wrapped is not None:
            sealer.adopt(user_id, wrapped)

    async def put_many(
        self, records: Sequence[tuple[Memory, Vector, str | None]],
        tails: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        """Write memories with their vectors and keyword context: one MULTI/EXEC per
        ``write_batch_size``; the sessions' new tails are written with the last batch."""
        with redis_errors("write memories"):
            for batch in self.core.batches(records, tails):
                pipe = self.client.pipeline(transaction=True)
                for key, fields in batch:
                    pipe.hset(key, mapping=cast(Any, fields))
                await pipe.execute()

    async def tails(
        self, user_id: str, sessions: Sequence[str]
    ) -> dict[str, list[tuple[str, str | None, str]]]:
        """The latest stored turns of some sessions, oldest first: (id, name, text)."""
        if not sessions:
            return {}
        keys = self.core.keys
        with redis_errors("read session context"):
            raw = await self.client.hmget(keys.tails(user_id), [encode_tag(s) for s in sessions])
            ids = self.core.tail_ids(sessions, raw)
            if not ids:
                return {}
            pipe = self.client.pipeline(transaction=False)
            for session_ids in ids.values():
                for memory_id in session_ids:
                    pipe.hmget(keys.memory(user_id, memory_id), ["name", "text"])
            rows = await pipe.execute()
        return self.core.tail_turns(user_id, ids, rows)

    async def get(self, user_id: str, memory_id: str) -> Memory | None:
        with redis_errors("read a memory"):
            pipe = self.client.pipeline(transaction=False)
            pipe.hmget(self.core.keys.memory(user_id, memory_id), MEMORY_FIELDS)
            pipe.hget(self.core.keys.recalls(user_id), memory_id)
            values, recalls = await pipe.execute()
        return self.core.read_memory(memory_id, values, recalls)

    async def fetch(self, user_id: str, memory_ids: Sequence[str]) -> list[Memory | None]:
        """Several memories of one user, with their recall counts, in one round trip (None
        for one that does not exist)."""
        if not memory_ids:
            return []
        args = self.core.fetch_args(user_id, memory_ids)
        with redis_errors("read memories"):
            try:
                reply = await self._lane.execute("EVALSHA", *args)
            except NoScriptError:  # first use on this server: EVAL caches the script
                reply = await self._lane.execute("EVAL", FETCH, *args[1:])
        return self.core.read_memories(memory_ids, reply)

    async def turns_before(self, memory: Memory, depth: int) -> list[Memory]:
        """Up to ``depth`` turns before ``memory`` in its session, oldest first."""
        before: list[Memory] = []
        previous_id = memory.previous_id
        while previous_id and len(before) < depth:
            previous = await self.get(memory.user_id, previous_id)
            if previous is None:
                break
            before.insert(0, previous)
            previous_id = previous.previous_id
        return before

    async def rewrite(self, memory: Memory, vector: Vector | None) -> bool:
        with redis_errors("update a memory"):
            return bool(await self.client.execute_command(*self.core.update_args(memory, vector)))

    async def delete(self, user_id: str, memory_id: str) -> bool:
        with redis_errors("delete a memory"):
            pipe = self.client.pipeline(transaction=True)
            pipe.delete(self.core.keys.memory(user_id, memory_id))
            pipe.hdel(self.core.keys.recalls(user_id), memory_id)
            deleted, _ = await pipe.execute()
            return bool(deleted)

    async def rotate_master_key(self, chain: KeyChain) -> int:
        """See ``MemoryStore.rotate_master_key``."""
        sealer = self.core.sealer
        assert sealer is not None
        rotated = 0
        with redis_errors("rotate the master key"):
            async for raw in self.client.scan_iter(match=f"{sealer.prefix}:dek:{{*", count=1000):
                name = raw.decode() if isinstance(raw, bytes) else str(raw)
                for _ in range(3):
                    wrapped = await self.client.get(name)
                    if wrapped is None:  # forgotten meanwhile
                        break
                    new = sealer.rewrapped(chain, name, wrapped)
                    if await self.client.execute_command("EVAL", SWAP, 1, name, wrapped, new):
                        rotated += 1
                        break
        sealer.chain = chain
        return rotated

    async def forget_user(self, user_id: str) -> int:
        deleted = 0
        with redis_errors("forget a user"):
            # Crypto-shred first: a forget interrupted after this leaves nothing readable.
            if self.core.sealer is not None:
                await self.client.delete(self.core.sealer.key_name(user_id))
                self.core.sealer.drop(user_id)
            while keys := keys_of(
                await self.client.execute_command(*self.core.keys_command(user_id))
            ):
                deleted += int(await self.client.delete(*keys))
            pattern = self.core.keys.user_pattern(user_id)
            async for key in self.client.scan_iter(match=pattern, count=1000):
                deleted += int(await self.client.delete(key))
            await self.client.delete(*self.core.keys.user_keys(user_id))
            for pattern in (user_pattern_base(self.core.keys.prefix, user_id) + "*",
                            self.core.keys.audit_pattern(user_id)):
                async for key in self.client.scan_iter(match=pattern, count=1000):
                    await self.client.delete(key)
        return deleted

    async def history_append(
        self, keys: HistoryKeys, messages: Sequence[str], ttl: int | None
    ) -> int:
        """Append messages to a session's history (one script); returns the first new
        sequence number."""
        with redis_errors("append to a chat history"):
            return int(await self.client.execute_command(*keys.append_args(messages, ttl)))

    async def history_read(self, keys: HistoryKeys) -> list[tuple[int, str]]:
        """A session's messages, oldest first (expired ones are dropped from its index)."""
        with redis_errors("read a chat history"):
            return stored_messages(await self.client.execute_command(*keys.read_args()))

    async def history_clear(self, keys: HistoryKeys) -> int:
        """Delete a session's messages; returns how many there were."""
        with redis_errors("clear a chat history"):
            return int(await self.client.execute_command(*keys.clear_args()))

    async def count(self, user_id: str) -> int:
        with redis_errors("count memories"):
            reply = await self.client.execute_command(*self.core.count_command(user_id))
            return int(reply[0])

    async def search(self, args: Sequence[object]) -> list[Any]:
        """Run the search script (``retrieval._script.SEARCH``): one round trip."""
        with redis_errors("search"):
            try:
                reply: list[Any] = await self._lane.execute("EVALSHA", SEARCH_SHA, *args)
            except NoScriptError:  # first use on this server: EVAL caches the script
                reply = await self._lane.execute("EVAL", SEARCH, *args)
            return reply

    async def run(self, commands: Sequence[Sequence[object]]) -> None:
        """Run commands in one pipelined round trip (recall bookkeeping)."""
        with redis_errors("record recalls"):
            pipe = self.client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            await pipe.execute()
