"""``AsyncMemoryEngine``: the asyncio twin of ``MemoryEngine`` (re-exported by ``engine``)."""


from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import redis
import redis.asyncio as aioredis

from . import _maintain, backup
from . import _validation as check
from ._core import PreparedWrite
from ._engine_base import WRITE_LATER_BATCH, EngineBase, new_item, progress_bar
from ._maintain import MaintenanceReport, Steps, T, UndoResult
from ._maintainer import TaskMaintainer
from ._redis_setup import redact, search_module_error
from ._targets import Target, open_target
from ._writer import TaskWriter
from .backup import BackupReport, RestoreReport
from .config import EngineConfig
from .embeddings import Embedder
from .exceptions import (
    DataKeyMissingError,
    InvalidArgumentError,
    MemoryNotFoundError,
    SummarizerError,
)
from .lifecycle import AuditEntry, LifecyclePolicy, Summarizer
from .models import Kind, Memory, NewMemory, Role, SearchHit, SearchMode, Vector
from .security import MasterKey
from .store import AsyncMemoryStore
from .store._access import AccessLog, TaskFlusher
from .store._errors import redis_errors


class AsyncMemoryEngine(EngineBase):
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
        summarizer: Summarizer | None = None,
    ) -> None:
        super().__init__(config, embedder=embedder, redis_url=redis_url, summarizer=summarizer)
        self._store: AsyncMemoryStore | None = None
        self._flusher: TaskFlusher | None = None
        self._writer: TaskWriter | None = None
        self._maintainers: list[TaskMaintainer] = []
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
                    await asyncio.to_thread(self._warm_query_path)
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
        item = new_item(text, session_id, kind, role, name, created_at, importance, metadata,
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
        await store.unlock(uid, create=True)
        prepared = self._core.with_context(prepared, await store.tails(uid, prepared.sessions))
        vectors = await asyncio.to_thread(self._embed_all, prepared.texts, progress)
        await store.put_many(self._core.records(prepared, vectors), prepared.tails)
        return prepared.memories

    async def get(self, user_id: str, memory_id: str) -> Memory:
        """See ``MemoryEngine.get``."""
        uid, mid = check.user_id(user_id), check.memory_id(memory_id)
        store = await self._ready()
        await store.unlock(uid, create=False)
        memory = await store.get(uid, mid)
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
        deleted = await (await self._ready()).forget_user(check.user_id(user_id))
        self.embedder.clear()
        return deleted

    async def history_append(
        self, user_id: str, session_id: str, messages: Sequence[str], *, ttl: int | None = None
    ) -> int:
        """See ``MemoryEngine.history_append``."""
        keys, texts, ttl = self._core.history_write(user_id, session_id, messages, ttl)
        store = await self._ready()
        await store.unlock(keys.user_id, create=True)
        return await store.history_append(keys, self._core.seal_history(keys, texts), ttl)

    async def history_read(self, user_id: str, session_id: str) -> list[tuple[int, str]]:
        """See ``MemoryEngine.history_read``."""
        keys = self._core.history_keys(user_id, session_id)
        store = await self._ready()
        await store.unlock(keys.user_id, create=False)
        return self._core.open_history(keys, await store.history_read(keys))

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
        await store.unlock(plan.request.user_id, create=False)
        vector = None
        if self._core.needs_vector(plan):
            vector = self.embedder.peek(plan.request.query)
            if vector is None:
                vector = await asyncio.to_thread(self.embedder.embed_query, plan.request.query)
        args = self._core.search_args(plan, vector)
        if args is None:
            return []
        user = plan.request.user_id
        reply = await store.search(args)
        hits = self._core.final_hits(plan, reply)
        if hits is None:  # the script left the ranking to Python (decay, dedupe, ...)
            ranked, loaded = self._core.read_search(plan, reply)
            if missing := self._core.missing(ranked, loaded):
                loaded.update(zip(missing, await store.fetch(user, missing), strict=True))
            hits = self._core.hits(plan, ranked, loaded)
        if hits and self._flusher is not None:
            self._flusher.record(user, [h.memory.id for h in hits], plan.now)
        return hits

    async def add_later(
        self, user_id: str, items: Iterable[NewMemory | Mapping[str, Any] | str]
    ) -> None:
        """See ``MemoryEngine.add_later``: validated now, written by a task on this loop."""
        self._check_open()
        uid, queued = self._core.prepare_later(user_id, items)
        if self._writer is None:
            self._writer = TaskWriter(self.add_many, batch_size=WRITE_LATER_BATCH)
        self._writer.submit(uid, queued)

    @property
    def pending_writes(self) -> int:
        """Items queued by ``add_later`` and not yet written."""
        return self._writer.pending if self._writer is not None else 0

    async def maintain(
        self,
        user_id: str | None = None,
        *,
        now: float | datetime | None = None,
        dry_run: bool = False,
        policy: LifecyclePolicy | None = None,
        progress: bool = False,
    ) -> MaintenanceReport:
        """See ``MemoryEngine.maintain``. The model and a summarizer without ``asummarize``
        run in a worker thread."""
        self._check_open()
        uid = None if user_id is None else check.user_id(user_id)
        when, chosen, report = self._maintenance(now, dry_run, policy)
        store = await self._ready()
        users = [uid] if uid is not None else await self._drive(
            _maintain.list_users(store.core))
        with progress_bar(len(users), progress) as bar:
            for user in users:
                await store.unlock(user, create=False)
                report.users.append(await self._drive(_maintain.maintain_user(
                    store.core, user, now=when, policy=chosen, dry_run=report.dry_run,
                    summarizer=self.summarizer.name, clock=time.time)))
                bar.update(1)
        return report

    async def undo(self, user_id: str, change_id: str) -> UndoResult:
        """See ``MemoryEngine.undo``."""
        uid, change = check.user_id(user_id), check.memory_id(change_id, "change id")
        store = await self._ready()
        await store.unlock(uid, create=False)
        return await self._drive(_maintain.undo(store.core, uid, change, time.time()))

    async def audit_trail(self, user_id: str, *, limit: int = 100) -> list[AuditEntry]:
        """See ``MemoryEngine.audit_trail``."""
        uid, n = check.user_id(user_id), check.k(limit, 100_000, "limit")
        store = await self._ready()
        await store.unlock(uid, create=False)
        return await self._drive(_maintain.audit_trail(store.core, uid, n))

    async def start_maintainer(
        self, interval: float = 3600.0, *, policy: LifecyclePolicy | None = None
    ) -> TaskMaintainer:
        """Run ``maintain(policy=policy)`` for every user every ``interval`` seconds in an
        asyncio task of this loop, until ``await maintainer.stop()`` or ``close()``."""
        self._check_open()
        maintainer = TaskMaintainer(lambda: self.maintain(policy=policy), interval)
        self._maintainers.append(maintainer)
        return maintainer

    async def backup(
        self, to: str | os.PathLike[str], *, user_id: str | None = None,
        progress: bool = False,
    ) -> BackupReport:
        """See ``MemoryEngine.backup``: Redis is read on this loop, files are compressed,
        sealed and written in a worker thread, so the loop keeps serving meanwhile."""
        self._check_open()
        uid = None if user_id is None else check.user_id(user_id)
        target = open_target(to)
        store = await self._ready()
        started = time.time()
        report = BackupReport(target.describe(), backup.new_snapshot_id(started))
        users = [uid] if uid is not None else await self._drive(
            backup.list_users(store.core), "list users to back up")
        with progress_bar(len(users), progress, "backing up") as bar:
            for user in users:
                await store.unlock(user, create=False)
                records = await self._drive(backup.read_user(store.core, user), "back up a user")
                if records:
                    entry = await asyncio.to_thread(
                        _pack_and_put, store.core, target, report.snapshot_id, user, records)
                    report.users.append(entry)
                bar.update(1)
        manifest = backup.manifest(store.core, report.snapshot_id, report.users, started)
        await asyncio.to_thread(target.put, f"{report.snapshot_id}/{backup.MANIFEST}", manifest)
        report.seconds = time.time() - started
        return report

    async def start_backup(
        self, to: str | os.PathLike[str], *, user_id: str | None = None
    ) -> asyncio.Task[BackupReport]:
        """``backup`` as a task of this loop; returns at once with the task."""
        self._check_open()
        return asyncio.get_running_loop().create_task(self.backup(to, user_id=user_id))

    async def rotate_master_key(self, new_key: str | bytes) -> int:
        """See ``MemoryEngine.rotate_master_key``."""
        self._check_open()
        sealer = self._core.sealer
        if sealer is None:
            raise InvalidArgumentError("encryption is off: there is no master key to rotate")
        store = await self._ready()
        return await store.rotate_master_key(sealer.rotation(MasterKey.parse(new_key)))

    async def start_backups(
        self, to: str | os.PathLike[str] | None = None, interval: float | None = None
    ) -> TaskMaintainer:
        """See ``MemoryEngine.start_backups``: an asyncio task of this loop."""
        self._check_open()
        dest, every = backup.schedule(self.config, to, interval)
        maintainer = TaskMaintainer(lambda: self.backup(dest), every)
        self._maintainers.append(maintainer)
        return maintainer

    async def restore(
        self, source: str | os.PathLike[str], *, user_id: str | None = None,
        snapshot: str | None = None, progress: bool = False,
    ) -> RestoreReport:
        """See ``MemoryEngine.restore``."""
        self._check_open()
        uid = None if user_id is None else check.user_id(user_id)
        target = open_target(source)
        store = await self._ready()
        snap_id, entries = await asyncio.to_thread(
            backup.open_snapshot, store.core, target, snapshot, uid)
        report = RestoreReport(target.describe(), snap_id)
        with progress_bar(len(entries), progress, "restoring") as bar:
            for entry in entries:
                await store.unlock(entry.user_id, create=not entry.encrypted)
                try:
                    blob = await asyncio.to_thread(target.get, entry.file)
                    records = backup.unpack_user(store.core, snap_id, entry, blob)
                except DataKeyMissingError as exc:
                    report.unreadable[entry.user_id] = str(exc)
                    bar.update(1)
                    continue
                commands = backup.restore_commands(store.core, entry.user_id, records)
                await self._drive(backup.replace_user(store.core, entry.user_id, commands),
                                  "restore a user")
                report.restored.append(entry.user_id)
                report.memories += entry.memories
                bar.update(1)
        return report

    async def _drive(self, steps: Steps[T], action: str = "maintain memories") -> T:
        """See ``MemoryEngine._drive``: the same procedure, awaited."""
        store = await self._ready()
        reply: Any = None
        while True:
            try:
                step = steps.send(reply)
            except StopIteration as done:
                result: T = done.value
                return result
            if isinstance(step, _maintain.Call):
                with redis_errors(action):
                    pipe = store.client.pipeline(transaction=step.transaction)
                    for command in step.commands:
                        pipe.execute_command(*command)
                    reply = await pipe.execute()
            elif isinstance(step, _maintain.Embed):
                reply = await asyncio.to_thread(self.embedder.embed_documents, step.texts)
            else:
                reply = self._summary_text(await self._summarize(step.memories),
                                           len(step.memories))

    async def _summarize(self, memories: list[Memory]) -> str:
        summarizer = self.summarizer
        try:
            asummarize = getattr(summarizer, "asummarize", None)
            if asummarize is not None:
                text: str = await asummarize(memories)
                return text
            return await asyncio.to_thread(summarizer.summarize, memories)
        except SummarizerError:
            raise
        except Exception as exc:
            raise SummarizerError(
                f"the summarizer {summarizer.name!r} failed: {exc}") from exc

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
        for maintainer in self._maintainers:
            await maintainer.stop()
        self._maintainers.clear()
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


def _pack_and_put(
    core: Any, target: Target, snapshot_id: str, user_id: str, records: list[dict[str, Any]]
) -> backup.UserSnapshot:
    blob, entry = backup.pack_user(core, snapshot_id, user_id, records)
    target.put(entry.file, blob)
    return entry

