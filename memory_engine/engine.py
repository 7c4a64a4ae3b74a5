"""``MemoryEngine`` and ``AsyncMemoryEngine``: the one front of the library.

Both are thin: validation, record building and query planning live in ``EngineCore``;
these classes embed text and run the store's commands, blocking or awaited. Nothing touches
Redis or loads the model until the first call that needs it (or ``connect()``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import numpy as np
import redis
import redis.asyncio as aioredis
from tqdm import tqdm

from . import _validation as check
from ._core import EngineCore, PreparedWrite
from ._writer import BackgroundWriter, TaskWriter
from .config import EngineConfig
from .embeddings import CachedEmbedder, Embedder, SentenceTransformerEmbedder
from .exceptions import MemoryEngineError, MemoryNotFoundError
from .models import Kind, Memory, NewMemory, Role, SearchHit, SearchMode, Vector
from .server import EmbeddedServer, Lease, check_search_module, redact, search_module_error
from .store import AsyncMemoryStore, MemoryStore
from .store._access import AccessLog, TaskFlusher, ThreadFlusher

_EMBED_CHUNK = 256  # texts per progress-bar step
_WRITE_LATER_BATCH = 64  # add_later items per add_many call (the model sorts them by length)


def _item(
    text: str,
    session_id: str | None,
    kind: Kind | str,
    role: Role | str | None,
    name: str | None,
    created_at: float | None,
    importance: float,
    metadata: Mapping[str, Any] | None,
    embedding: Vector | Sequence[float] | None,
) -> NewMemory:
    """The ``NewMemory`` that ``add`` writes (validated later, with the rest of a batch)."""
    return NewMemory(
        text=text, session_id=session_id, kind=kind, role=role, name=name,
        created_at=created_at, importance=importance,
        metadata=metadata if isinstance(metadata, dict) else dict(metadata or {}),
        embedding=None if embedding is None else np.asarray(embedding, dtype=np.float32),
    )


class _EngineBase:
    """What both engines share and that does no I/O."""

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        embedder: Embedder | None = None,
        redis_url: str | None = None,
    ) -> None:
        cfg = config if config is not None else EngineConfig.from_env()
        if redis_url is not None:
            cfg = cfg.with_(redis_url=redis_url)
        if embedder is None:
            embedder = SentenceTransformerEmbedder(
                cfg.embedding_model, batch_size=cfg.embedding_batch_size
            )
        if not isinstance(embedder, CachedEmbedder):
            embedder = CachedEmbedder(embedder, cfg.query_cache_size)
        self.config = cfg
        self.embedder: CachedEmbedder = embedder
        self._core = EngineCore(cfg, embedder)
        self._lease: Lease | None = None
        self._closed = False

    @property
    def url(self) -> str | None:
        """The Redis URL in use (password redacted), once connected."""
        url = self.config.redis_url or (self._lease.url if self._lease else None)
        return redact(url) if url else None

    def _server(self) -> EmbeddedServer:
        cfg = self.config
        return EmbeddedServer(cfg.home, binary=cfg.redis_server, module=cfg.search_module)

    def _check_open(self) -> None:
        if self._closed:
            raise MemoryEngineError("this engine is closed")

    def _embed_all(self, texts: list[str], progress: bool) -> list[Vector]:
        """Embed in chunks so a progress bar can move; blocking (the async engine threads it)."""
        chunks = [texts[i : i + _EMBED_CHUNK] for i in range(0, len(texts), _EMBED_CHUNK)]
        out: list[Vector] = []
        with tqdm(total=len(texts), desc="embedding", unit="text", disable=not progress) as bar:
            for chunk in chunks:
                out.extend(self.embedder.embed_documents(chunk))
                bar.update(len(chunk))
        return out



class MemoryEngine(_EngineBase):
    """Long-term memory for many users, in one RediSearch index.

    Args:
        config: Settings; ``EngineConfig.from_env()`` when None.
        embedder: Any ``Embedder``; the bundled all-MiniLM-L6-v2 when None.
        redis_url: Overrides ``config.redis_url``. With no URL at all the embedded server is
            started (or reused).

    Example:
        >>> with MemoryEngine() as memory:
        ...     memory.add("alice", "I moved to Lisbon in March")
        ...     hits = memory.search("alice", "where does she live?")
    """

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        embedder: Embedder | None = None,
        redis_url: str | None = None,
    ) -> None:
        super().__init__(config, embedder=embedder, redis_url=redis_url)
        self._store: MemoryStore | None = None
        self._flusher: ThreadFlusher | None = None
        self._writer: BackgroundWriter | None = None
        self._lock = threading.Lock()

    def connect(self) -> Self:
        """Connect (starting the embedded server if needed), load the model, check the index."""
        self._ready()
        return self

    def _ready(self) -> MemoryStore:
        self._check_open()
        if self._store is not None:
            return self._store
        with self._lock:
            if self._store is None:
                if self.config.redis_url:
                    url, where = self.config.redis_url, redact(self.config.redis_url)
                else:
                    self._lease = self._server().acquire()
                    url, where = self._lease.url, "the embedded server"
                client = redis.Redis.from_url(url, protocol=2)
                try:
                    check_search_module(client, where)
                    store = MemoryStore(client, self._core.store_core)
                    store.ensure_index()
                except BaseException:
                    client.close()
                    self._release()
                    raise
                if self.config.record_access:
                    self._flusher = ThreadFlusher(
                        AccessLog(store.core.keys), store.run, self.config.access_flush_interval
                    )
                self._store = store
        return self._store

    def add(
        self,
        user_id: str,
        text: str,
        *,
        session_id: str | None = None,
        kind: Kind | str = Kind.TURN,
        role: Role | str | None = None,
        name: str | None = None,
        created_at: float | None = None,
        importance: float = 0.5,
        metadata: Mapping[str, Any] | None = None,
        embedding: Vector | Sequence[float] | None = None,
    ) -> Memory:
        """Remember one text for one user. Returns the stored memory (with its id)."""
        item = _item(text, session_id, kind, role, name, created_at, importance, metadata,
                     embedding)
        return self.add_many(user_id, [item])[0]

    def add_many(
        self,
        user_id: str,
        items: Iterable[NewMemory | Mapping[str, Any] | str],
        *,
        progress: bool = False,
    ) -> list[Memory]:
        """Remember many items for one user: all validated, then embedded in batches, then
        written in pipelined MULTI/EXEC transactions of ``write_batch_size``.

        Nothing is written when any item is invalid. Items are ``NewMemory``, dicts with its
        fields, or plain strings.
        """
        self._check_open()
        prepared = self._core.prepare_write(user_id, items, time.time())
        store = self._ready()
        uid = prepared.memories[0].user_id
        prepared = self._core.with_context(prepared, store.tails(uid, prepared.sessions))
        records = self._core.records(prepared, self._embed_all(prepared.texts, progress))
        store.put_many(records, prepared.tails)
        return prepared.memories

    def add_later(
        self, user_id: str, items: Iterable[NewMemory | Mapping[str, Any] | str]
    ) -> None:
        """Queue items to be embedded and written in the background, in order, in batches.

        Returns at once: the caller never waits for the model. Items are validated now (a
        bad one raises here and nothing is queued). ``flush()`` waits until they are
        written; ``close()`` writes them before closing. Items still queued when the process
        dies are lost. Chat history uses this for its long-term writes.
        """
        self._check_open()
        items = list(items)
        prepared = self._core.prepare_write(user_id, items, time.time())  # validation only
        uid = prepared.memories[0].user_id
        with self._lock:
            if self._writer is None:
                self._writer = BackgroundWriter(
                    lambda user, batch: self.add_many(user, batch),
                    batch_size=_WRITE_LATER_BATCH,
                )
        self._writer.submit(uid, [EngineCore.as_new(item, i) for i, item in enumerate(items)])

    @property
    def pending_writes(self) -> int:
        """Items queued by ``add_later`` and not yet written."""
        return self._writer.pending if self._writer is not None else 0

    def get(self, user_id: str, memory_id: str) -> Memory:
        """One memory of one user. Raises ``MemoryNotFoundError`` when there is none."""
        uid, mid = check.user_id(user_id), check.memory_id(memory_id)
        memory = self._ready().get(uid, mid)
        if memory is None:
            raise MemoryNotFoundError(uid, mid)
        return memory

    def update(self, user_id: str, memory_id: str, **changes: Any) -> Memory:
        """Change ``text``, ``session_id``, ``kind``, ``role``, ``name``, ``importance`` or
        ``metadata`` of a memory; new text is re-embedded. Returns the updated memory."""
        existing = self.get(user_id, memory_id)
        updated, retext = self._core.prepare_update(existing, changes)
        vector = None
        if retext:
            before = self._ready().turns_before(updated, self.config.context_turns)
            text = self._core.update_embed_text(updated, before)
            vector = self.embedder.embed_documents([text])[0]
        if not self._ready().rewrite(updated, vector):
            raise MemoryNotFoundError(existing.user_id, memory_id)
        return updated

    def delete(self, user_id: str, memory_id: str) -> None:
        """Delete one memory. Raises ``MemoryNotFoundError`` when there is none."""
        uid, mid = check.user_id(user_id), check.memory_id(memory_id)
        if not self._ready().delete(uid, mid):
            raise MemoryNotFoundError(uid, mid)

    def forget_user(self, user_id: str) -> int:
        """Delete every memory of one user. Returns how many were deleted."""
        return self._ready().forget_user(check.user_id(user_id))

    def history_append(
        self, user_id: str, session_id: str, messages: Sequence[str], *, ttl: int | None = None
    ) -> int:
        """Append serialized messages to one session's chat history (the storage under
        ``MemoryChatMessageHistory``). ``ttl``: each message expires that many seconds after
        it is written. Returns the first new message's sequence number."""
        keys, texts, ttl = self._core.history_write(user_id, session_id, messages, ttl)
        return self._ready().history_append(keys, texts, ttl)

    def history_read(self, user_id: str, session_id: str) -> list[tuple[int, str]]:
        """One session's stored messages as (sequence number, text), oldest first."""
        return self._ready().history_read(self._core.history_keys(user_id, session_id))

    def history_clear(self, user_id: str, session_id: str) -> int:
        """Delete one session's chat history (its long-term memories stay). Returns how many
        messages there were."""
        return self._ready().history_clear(self._core.history_keys(user_id, session_id))

    def count(self, user_id: str) -> int:
        """How many memories one user has."""
        return self._ready().count(check.user_id(user_id))

    def search(
        self,
        user_id: str,
        query: str,
        *,
        k: int = 10,
        mode: SearchMode | str = SearchMode.HYBRID,
        session_id: str | None = None,
        kinds: Iterable[Kind | str] | None = None,
        since: float | datetime | None = None,
        until: float | datetime | None = None,
        now: float | datetime | None = None,
        min_score: float | None = None,
        min_similarity: float | None = None,
        dedupe: bool | None = None,
        decay_weight: float | None = None,
        fusion: str | None = None,
    ) -> list[SearchHit]:
        """The ``k`` memories of ``user_id`` most relevant to ``query``, best first.

        Args:
            mode: ``hybrid`` (BM25 and HNSW candidates fused; default), ``vector`` or
                ``keyword``.
            session_id: Only memories of this session.
            kinds: Only memories of these kinds.
            since: Only memories created at or after this time (epoch seconds or datetime).
            until: Only memories created at or before this time.
            now: The time decay is measured at and recalls are recorded with (default: the
                clock). Pass it for deterministic ranking.
            min_score: Drop hits whose final score is lower.
            min_similarity: Drop vector candidates less similar than this (cosine, -1 to 1).
            dedupe: Drop hits that nearly repeat a better hit's words.
            decay_weight: Override ``EngineConfig.decay_weight`` for this call.
            fusion: Override ``EngineConfig.fusion`` (``rrf`` or ``linear``) for this call.
        """
        plan = self._core.plan_search(
            user_id, query, k=k, mode=mode, clock=time.time(), session_id=session_id,
            kinds=kinds, since=since, until=until, now=now, min_score=min_score,
            min_similarity=min_similarity, dedupe=dedupe, decay_weight=decay_weight,
            fusion=fusion,
        )
        store = self._ready()
        vector = None
        if self._core.needs_vector(plan):
            vector = self.embedder.embed_query(plan.request.query)
        commands = self._core.search_commands(plan, vector)
        if not commands:
            return []
        user = plan.request.user_id
        keyword, vector_hits = self._core.candidates(plan, store.search(commands))
        stats = None
        if ids := self._core.recall_stats_needed(plan, keyword, vector_hits):
            stats = dict(zip(ids, store.recalls(user, ids), strict=True))
        ranked = self._core.ranked(plan, keyword, vector_hits, stats)
        hits = self._core.hits(plan, ranked, store.fetch(user, [r.id for r in ranked]))
        if hits and self._flusher is not None:
            self._flusher.record(user, [h.memory.id for h in hits], plan.now)
        return hits

    def flush(self) -> None:
        """Write what is pending now: memories queued by ``add_later``, then recall
        bookkeeping (``last_accessed``, ``access_count``)."""
        if self._writer is not None:
            self._writer.flush()
        if self._flusher is not None:
            self._flusher.flush()

    def close(self) -> None:
        """Close the connection. An embedded server stops only when no other engine, in any
        process, still uses it and it was not started with ``memory-engine server start``."""
        if self._closed:
            return
        if self._writer is not None:  # queued memories are written before anything closes
            self._writer.close()
            self._writer = None
        self._closed = True
        if self._flusher is not None:
            self._flusher.close()
            self._flusher = None
        if self._store is not None:
            self._store.client.close()
            self._store = None
        self._release()

    def _release(self) -> None:
        if self._lease is not None:
            self._lease.release()
            self._lease = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncMemoryEngine(_EngineBase):
    """The asyncio twin of ``MemoryEngine``: the same methods, as coroutines.

    Embedding runs in a worker thread so the event loop keeps serving while the model works;
    a query already in the cache is answered without leaving the loop.
    """

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        embedder: Embedder | None = None,
        redis_url: str | None = None,
    ) -> None:
        super().__init__(config, embedder=embedder, redis_url=redis_url)
        self._store: AsyncMemoryStore | None = None
        self._flusher: TaskFlusher | None = None
        self._writer: TaskWriter | None = None
        self._alock: asyncio.Lock | None = None

    async def connect(self) -> Self:
        """Connect (starting the embedded server if needed), load the model, check the index."""
        await self._ready()
        return self

    async def _ready(self) -> AsyncMemoryStore:
        self._check_open()
        if self._store is not None:
            return self._store
        if self._alock is None:
            self._alock = asyncio.Lock()
        async with self._alock:
            if self._store is None:
                if self.config.redis_url:
                    url, where = self.config.redis_url, redact(self.config.redis_url)
                else:
                    self._lease = await asyncio.to_thread(self._server().acquire)
                    url, where = self._lease.url, "the embedded server"
                client = aioredis.Redis.from_url(url, protocol=2)
                try:
                    try:
                        await client.execute_command("FT._LIST")
                    except redis.RedisError as exc:
                        raise search_module_error(exc, where) from exc
                    await asyncio.to_thread(lambda: self._core.store_core)  # loads the model
                    store = AsyncMemoryStore(client, self._core.store_core)
                    await store.ensure_index()
                except BaseException:
                    await client.aclose()
                    await self._arelease()
                    raise
                if self.config.record_access:
                    self._flusher = TaskFlusher(
                        AccessLog(store.core.keys), store.run, self.config.access_flush_interval
                    )
                self._store = store
        return self._store

    async def add(
        self,
        user_id: str,
        text: str,
        *,
        session_id: str | None = None,
        kind: Kind | str = Kind.TURN,
        role: Role | str | None = None,
        name: str | None = None,
        created_at: float | None = None,
        importance: float = 0.5,
        metadata: Mapping[str, Any] | None = None,
        embedding: Vector | Sequence[float] | None = None,
    ) -> Memory:
        """See ``MemoryEngine.add``."""
        item = _item(text, session_id, kind, role, name, created_at, importance, metadata,
                     embedding)
        return (await self.add_many(user_id, [item]))[0]

    async def add_many(
        self,
        user_id: str,
        items: Iterable[NewMemory | Mapping[str, Any] | str],
        *,
        progress: bool = False,
    ) -> list[Memory]:
        """See ``MemoryEngine.add_many``."""
        self._check_open()
        store = await self._ready()
        prepared: PreparedWrite = self._core.prepare_write(user_id, items, time.time())
        uid = prepared.memories[0].user_id
        prepared = self._core.with_context(prepared, await store.tails(uid, prepared.sessions))
        vectors = await asyncio.to_thread(self._embed_all, prepared.texts, progress)
        await store.put_many(self._core.records(prepared, vectors), prepared.tails)
        return prepared.memories

    async def get(self, user_id: str, memory_id: str) -> Memory:
        """See ``MemoryEngine.get``."""
        uid, mid = check.user_id(user_id), check.memory_id(memory_id)
        memory = await (await self._ready()).get(uid, mid)
        if memory is None:
            raise MemoryNotFoundError(uid, mid)
        return memory

    async def update(self, user_id: str, memory_id: str, **changes: Any) -> Memory:
        """See ``MemoryEngine.update``."""
        existing = await self.get(user_id, memory_id)
        updated, retext = self._core.prepare_update(existing, changes)
        vector = None
        if retext:
            before = await (await self._ready()).turns_before(updated, self.config.context_turns)
            text = self._core.update_embed_text(updated, before)
            vector = (await asyncio.to_thread(self.embedder.embed_documents, [text]))[0]
        if not await (await self._ready()).rewrite(updated, vector):
            raise MemoryNotFoundError(existing.user_id, memory_id)
        return updated

    async def delete(self, user_id: str, memory_id: str) -> None:
        """See ``MemoryEngine.delete``."""
        uid, mid = check.user_id(user_id), check.memory_id(memory_id)
        if not await (await self._ready()).delete(uid, mid):
            raise MemoryNotFoundError(uid, mid)

    async def forget_user(self, user_id: str) -> int:
        """See ``MemoryEngine.forget_user``."""
        return await (await self._ready()).forget_user(check.user_id(user_id))

    async def history_append(
        self, user_id: str, session_id: str, messages: Sequence[str], *, ttl: int | None = None
    ) -> int:
        """See ``MemoryEngine.history_append``."""
        keys, texts, ttl = self._core.history_write(user_id, session_id, messages, ttl)
        return await (await self._ready()).history_append(keys, texts, ttl)

    async def history_read(self, user_id: str, session_id: str) -> list[tuple[int, str]]:
        """See ``MemoryEngine.history_read``."""
        keys = self._core.history_keys(user_id, session_id)
        return await (await self._ready()).history_read(keys)

    async def history_clear(self, user_id: str, session_id: str) -> int:
        """See ``MemoryEngine.history_clear``."""
        keys = self._core.history_keys(user_id, session_id)
        return await (await self._ready()).history_clear(keys)

    async def count(self, user_id: str) -> int:
        """See ``MemoryEngine.count``."""
        return await (await self._ready()).count(check.user_id(user_id))

    async def search(
        self,
        user_id: str,
        query: str,
        *,
        k: int = 10,
        mode: SearchMode | str = SearchMode.HYBRID,
        session_id: str | None = None,
        kinds: Iterable[Kind | str] | None = None,
        since: float | datetime | None = None,
        until: float | datetime | None = None,
        now: float | datetime | None = None,
        min_score: float | None = None,
        min_similarity: float | None = None,
        dedupe: bool | None = None,
        decay_weight: float | None = None,
        fusion: str | None = None,
    ) -> list[SearchHit]:
        """See ``MemoryEngine.search``."""
        plan = self._core.plan_search(
            user_id, query, k=k, mode=mode, clock=time.time(), session_id=session_id,
            kinds=kinds, since=since, until=until, now=now, min_score=min_score,
            min_similarity=min_similarity, dedupe=dedupe, decay_weight=decay_weight,
            fusion=fusion,
        )
        store = await self._ready()
        vector = None
        if self._core.needs_vector(plan):
            vector = self.embedder.peek(plan.request.query)
            if vector is None:
                vector = await asyncio.to_thread(self.embedder.embed_query, plan.request.query)
        commands = self._core.search_commands(plan, vector)
        if not commands:
            return []
        user = plan.request.user_id
        keyword, vector_hits = self._core.candidates(plan, await store.search(commands))
        stats = None
        if ids := self._core.recall_stats_needed(plan, keyword, vector_hits):
            stats = dict(zip(ids, await store.recalls(user, ids), strict=True))
        ranked = self._core.ranked(plan, keyword, vector_hits, stats)
        hits = self._core.hits(plan, ranked, await store.fetch(user, [r.id for r in ranked]))
        if hits and self._flusher is not None:
            self._flusher.record(user, [h.memory.id for h in hits], plan.now)
        return hits

    async def add_later(
        self, user_id: str, items: Iterable[NewMemory | Mapping[str, Any] | str]
    ) -> None:
        """See ``MemoryEngine.add_later``: validated now, written by a task on this loop."""
        self._check_open()
        items = list(items)
        prepared = self._core.prepare_write(user_id, items, time.time())  # validation only
        if self._writer is None:
            self._writer = TaskWriter(self.add_many, batch_size=_WRITE_LATER_BATCH)
        self._writer.submit(prepared.memories[0].user_id,
                            [EngineCore.as_new(item, i) for i, item in enumerate(items)])

    @property
    def pending_writes(self) -> int:
        """Items queued by ``add_later`` and not yet written."""
        return self._writer.pending if self._writer is not None else 0

    async def flush(self) -> None:
        """See ``MemoryEngine.flush``."""
        if self._writer is not None:
            await self._writer.flush()
        if self._flusher is not None:
            await self._flusher.flush()

    async def close(self) -> None:
        """See ``MemoryEngine.close``."""
        if self._closed:
            return
        if self._writer is not None:  # queued memories are written before anything closes
            await self._writer.close()
            self._writer = None
        self._closed = True
        if self._flusher is not None:
            await self._flusher.close()
            self._flusher = None
        if self._store is not None:
            await self._store.client.aclose()
            self._store = None
        await self._arelease()

    async def _arelease(self) -> None:
        if self._lease is not None:
            lease, self._lease = self._lease, None
            await asyncio.to_thread(lease.release)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
