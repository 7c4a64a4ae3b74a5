"""``MemoryEngine`` and ``AsyncMemoryEngine``: the one front of the library.

``MemoryEngine`` lives here; its asyncio twin in ``_async_engine`` (imported from here), what
they share in ``_engine_base``. Both are thin: validation, record building and query
planning live in ``EngineCore``; these classes embed text and run the store's commands,
blocking or awaited. Nothing touches Redis or loads the model until the first call that
needs it (or ``connect()``).
"""

from __future__ import annotations

import concurrent.futures
import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self

import redis

from . import _maintain, backup
from . import _validation as check
from ._async_engine import AsyncMemoryEngine  # the twin, re-exported here
from ._engine_base import WRITE_LATER_BATCH, EngineBase, new_item, progress_bar
from ._maintain import MaintenanceReport, Steps, T, UndoResult
from ._maintainer import ThreadMaintainer
from ._redis_setup import check_search_module, redact
from ._targets import open_target
from ._writer import BackgroundWriter
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
from .store import MemoryStore
from .store._access import AccessLog, ThreadFlusher
from .store._errors import redis_errors


class MemoryEngine(EngineBase):
    """Long-term memory for many users, in one RediSearch index.

    Args:
        config: Settings; ``EngineConfig.from_env()`` when None.
        embedder: Any ``Embedder``; the bundled all-MiniLM-L6-v2 when None.
        redis_url: Overrides ``config.redis_url``. With no URL at all the embedded server is
            started (or reused).
        summarizer: What ``maintain`` rewrites stale memories with; the extractive
            summarizer (no LLM) when None. ``memory_engine.langchain.LLMSummarizer`` wraps
            any LangChain chat model.

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
        summarizer: Summarizer | None = None,
    ) -> None:
        super().__init__(config, embedder=embedder, redis_url=redis_url, summarizer=summarizer)
        self._store: MemoryStore | None = None
        self._flusher: ThreadFlusher | None = None
        self._writer: BackgroundWriter | None = None
        self._maintainers: list[ThreadMaintainer] = []
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
                    self._warm_query_path()
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
        item = new_item(text, session_id, kind, role, name, created_at, importance, metadata,
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
        store.unlock(uid, create=True)
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
        uid, queued = self._core.prepare_later(user_id, items)
        with self._lock:
            if self._writer is None:
                self._writer = BackgroundWriter(
                    lambda user, batch: self.add_many(user, batch), batch_size=WRITE_LATER_BATCH)
        self._writer.submit(uid, queued)

    @property
    def pending_writes(self) -> int:
        """Items queued by ``add_later`` and not yet written."""
        return self._writer.pending if self._writer is not None else 0

    def get(self, user_id: str, memory_id: str) -> Memory:
        """One memory of one user. Raises ``MemoryNotFoundError`` when there is none."""
        uid, mid = check.user_id(user_id), check.memory_id(memory_id)
        store = self._ready()
        store.unlock(uid, create=False)
        memory = store.get(uid, mid)
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
        """Delete everything of one user: memories, chat history, summaries, the audit
        trail, recall counts, and (with encryption on) their data key, first, so copies of
        their data in backups can no longer be decrypted. Cached query embeddings are
        dropped. Returns how many memories were deleted."""
        deleted = self._ready().forget_user(check.user_id(user_id))
        self.embedder.clear()
        return deleted

    def history_append(
        self, user_id: str, session_id: str, messages: Sequence[str], *, ttl: int | None = None
    ) -> int:
        """Append serialized messages to one session's chat history (the storage under
        ``MemoryChatMessageHistory``). ``ttl``: each message expires that many seconds after
        it is written. Returns the first new message's sequence number."""
        keys, texts, ttl = self._core.history_write(user_id, session_id, messages, ttl)
        store = self._ready()
        store.unlock(keys.user_id, create=True)
        return store.history_append(keys, self._core.seal_history(keys, texts), ttl)

    def history_read(self, user_id: str, session_id: str) -> list[tuple[int, str]]:
        """One session's stored messages as (sequence number, text), oldest first."""
        keys = self._core.history_keys(user_id, session_id)
        store = self._ready()
        store.unlock(keys.user_id, create=False)
        return self._core.open_history(keys, store.history_read(keys))

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
        store.unlock(plan.request.user_id, create=False)
        vector = None
        if self._core.needs_vector(plan):
            vector = self.embedder.embed_query(plan.request.query)
        args = self._core.search_args(plan, vector)
        if args is None:
            return []
        user = plan.request.user_id
        reply = store.search(args)
        hits = self._core.final_hits(plan, reply)
        if hits is None:  # the script left the ranking to Python (decay, dedupe, ...)
            ranked, loaded = self._core.read_search(plan, reply)
            if missing := self._core.missing(ranked, loaded):
                loaded.update(zip(missing, store.fetch(user, missing), strict=True))
            hits = self._core.hits(plan, ranked, loaded)
        if hits and self._flusher is not None:
            self._flusher.record(user, [h.memory.id for h in hits], plan.now)
        return hits

    def maintain(
        self,
        user_id: str | None = None,
        *,
        now: float | datetime | None = None,
        dry_run: bool = False,
        policy: LifecyclePolicy | None = None,
        progress: bool = False,
    ) -> MaintenanceReport:
        """Expire, consolidate and prune memories as ``policy`` says (default:
        ``config.lifecycle``), for one user or for every user.

        Each user is planned (``lifecycle.plan``) and changed a bounded chunk at a time. Every
        change is one transaction with its audit-trail entry, so an interrupted run loses
        nothing and ``undo`` can revert any change. ``dry_run`` plans without writing; the
        report then carries the plans (``report.users[i].plans``).

        Args:
            now: The time to plan at (default: the clock); a later ``now`` ages memories.
            progress: Show a progress bar over users.
        """
        self._check_open()
        uid = None if user_id is None else check.user_id(user_id)
        when, chosen, report = self._maintenance(now, dry_run, policy)
        store = self._ready()
        users = [uid] if uid is not None else self._drive(_maintain.list_users(store.core))
        with progress_bar(len(users), progress) as bar:
            for user in users:
                store.unlock(user, create=False)
                report.users.append(self._drive(_maintain.maintain_user(
                    store.core, user, now=when, policy=chosen, dry_run=report.dry_run,
                    summarizer=self.summarizer.name, clock=time.time)))
                bar.update(1)
        return report

    def undo(self, user_id: str, change_id: str) -> UndoResult:
        """Revert one maintenance change: the memories it removed come back exactly as they
        were (text, vector, recalls), and the summary it wrote is deleted.

        Raises:
            ChangeNotFoundError: no such change for this user (or past the audit retention).
            InvalidArgumentError: the change was already undone.
        """
        uid, change = check.user_id(user_id), check.memory_id(change_id, "change id")
        store = self._ready()
        store.unlock(uid, create=False)
        return self._drive(_maintain.undo(store.core, uid, change, time.time()))

    def audit_trail(self, user_id: str, *, limit: int = 100) -> list[AuditEntry]:
        """One user's latest maintenance changes, newest first: what, why, when, and the
        removed memories."""
        uid, n = check.user_id(user_id), check.k(limit, 100_000, "limit")
        store = self._ready()
        store.unlock(uid, create=False)
        return self._drive(_maintain.audit_trail(store.core, uid, n))

    def start_maintainer(
        self, interval: float = 3600.0, *, policy: LifecyclePolicy | None = None
    ) -> ThreadMaintainer:
        """Run ``maintain(policy=policy)`` for every user every ``interval`` seconds on a
        background thread, until ``stop()`` or ``close()``. A failed run is logged
        (``memory_engine.maintainer``) and retried at the next interval."""
        self._check_open()
        maintainer = ThreadMaintainer(lambda: self.maintain(policy=policy), interval)
        self._maintainers.append(maintainer)
        return maintainer

    def backup(
        self, to: str | os.PathLike[str], *, user_id: str | None = None,
        progress: bool = False,
    ) -> BackupReport:
        """Write a snapshot of one user (``user_id``) or of every user to ``to``: a
        directory or an ``s3://bucket/prefix`` URL. Each user is read in one transaction
        (a consistent point in time), compressed, sealed under their data key when
        encryption is on, checksummed; the manifest is written last, so a snapshot cut
        short is never picked up by ``restore``. See ``memory_engine.backup``."""
        self._check_open()
        uid = None if user_id is None else check.user_id(user_id)
        target = open_target(to)
        store = self._ready()
        started = time.time()
        report = BackupReport(target.describe(), backup.new_snapshot_id(started))
        users = [uid] if uid is not None else self._drive(
            backup.list_users(store.core), "list users to back up")
        with progress_bar(len(users), progress, "backing up") as bar:
            for user in users:
                store.unlock(user, create=False)
                records = self._drive(backup.read_user(store.core, user), "back up a user")
                if records:
                    blob, entry = backup.pack_user(store.core, report.snapshot_id, user, records)
                    target.put(entry.file, blob)
                    report.users.append(entry)
                bar.update(1)
        target.put(f"{report.snapshot_id}/{backup.MANIFEST}",
                   backup.manifest(store.core, report.snapshot_id, report.users, started))
        report.seconds = time.time() - started
        return report

    def start_backup(
        self, to: str | os.PathLike[str], *, user_id: str | None = None
    ) -> concurrent.futures.Future[BackupReport]:
        """``backup`` on a background thread; returns at once with its future."""
        self._check_open()
        pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="memory-engine-backup")
        future = pool.submit(self.backup, to, user_id=user_id)
        pool.shutdown(wait=False)
        return future

    def start_backups(
        self, to: str | os.PathLike[str] | None = None, interval: float | None = None
    ) -> ThreadMaintainer:
        """Back every user up to ``to`` (default ``config.backup_to``) every ``interval``
        seconds (default ``config.backup_interval``) on a background thread, until
        ``stop()`` or ``close()``. A failed run is logged and retried at the next one."""
        self._check_open()
        dest, every = backup.schedule(self.config, to, interval)
        maintainer = ThreadMaintainer(lambda: self.backup(dest), every)
        self._maintainers.append(maintainer)
        return maintainer

    def restore(
        self, source: str | os.PathLike[str], *, user_id: str | None = None,
        snapshot: str | None = None, progress: bool = False,
    ) -> RestoreReport:
        """Put back one user (``user_id``) or every user of a snapshot (default: the newest
        in ``source``). Each user's keys are replaced by the snapshot's in one transaction.
        Checksums are verified first; a snapshot of another schema version, model or
        encryption setting is refused with ``BackupError``. A user whose data key is gone
        (forgotten: crypto-shredded) cannot be decrypted: they are listed in
        ``report.unreadable`` and nothing of theirs is written."""
        self._check_open()
        uid = None if user_id is None else check.user_id(user_id)
        target = open_target(source)
        store = self._ready()
        snap_id, entries = backup.open_snapshot(store.core, target, snapshot, uid)
        report = RestoreReport(target.describe(), snap_id)
        with progress_bar(len(entries), progress, "restoring") as bar:
            for entry in entries:
                store.unlock(entry.user_id, create=not entry.encrypted)
                try:
                    records = backup.unpack_user(store.core, snap_id, entry, target.get(entry.file))
                except DataKeyMissingError as exc:
                    report.unreadable[entry.user_id] = str(exc)
                    bar.update(1)
                    continue
                commands = backup.restore_commands(store.core, entry.user_id, records)
                self._drive(backup.replace_user(store.core, entry.user_id, commands),
                            "restore a user")
                report.restored.append(entry.user_id)
                report.memories += entry.memories
                bar.update(1)
        return report

    def rotate_master_key(self, new_key: str | bytes) -> int:
        """Re-wrap every user's data key under ``new_key`` (URL-safe base64 of 32 bytes).
        Values are not re-encrypted and nothing is re-embedded. Afterwards configure
        ``new_key`` as the master key, keeping the old one in ``previous_master_keys`` until
        every process runs with the new one. Returns how many data keys were re-wrapped."""
        self._check_open()
        sealer = self._core.sealer
        if sealer is None:
            raise InvalidArgumentError("encryption is off: there is no master key to rotate")
        return self._ready().rotate_master_key(sealer.rotation(MasterKey.parse(new_key)))

    def _drive(self, steps: Steps[T], action: str = "maintain memories") -> T:
        """Run a maintenance procedure's steps on this engine's client, model and summarizer."""
        store = self._ready()
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
                    reply = pipe.execute()
            elif isinstance(step, _maintain.Embed):
                reply = self.embedder.embed_documents(step.texts)
            else:
                try:
                    text = self.summarizer.summarize(step.memories)
                except SummarizerError:
                    raise
                except Exception as exc:
                    raise SummarizerError(f"the summarizer {self.summarizer.name!r} failed: "
                                          f"{exc}") from exc
                reply = self._summary_text(text, len(step.memories))

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
        for maintainer in self._maintainers:
            maintainer.stop()
        self._maintainers.clear()
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


__all__ = ["AsyncMemoryEngine", "MemoryEngine"]

