"""Maintenance and undo, written once as I/O-free step generators.

A procedure here yields what it needs done — Redis commands (``Call``), texts to embed
(``Embed``), a group to summarize (``Summarize``) — and is sent the answer. ``MemoryEngine``
drives the steps with a blocking client, ``AsyncMemoryEngine`` awaits them: the logic (what
is read, planned, written, in which order) exists once.

Applying a plan is crash-safe: each consolidation is one MULTI/EXEC holding the summary, its
audit entry and the deletion of its sources, so a process killed at any point leaves either
all of it or none of it; each removal likewise goes with its audit entry. A summary whose
sources survive anyway (written by another tool, or restored around it) has them removed
by the next run (``dedupe``).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

from .exceptions import ChangeNotFoundError, InvalidArgumentError, StoreError
from .lifecycle.audit import AuditEntry, RemovedMemory
from .lifecycle.planning import (
    Action,
    Group,
    MaintenancePlan,
    consolidation_candidates,
    plan,
)
from .lifecycle.policy import LifecyclePolicy
from .models import Kind, Memory, Vector
from .store import StoreCore, decode_tag, new_id
from .store._records import from_hash

IDS_PAGE = 10_000  # memory ids read per FT.SEARCH while listing a user's memories
USERS_PAGE = 1_000  # users per FT.AGGREGATE cursor read
REMOVALS_PER_TRANSACTION = 100


@dataclass(frozen=True, slots=True)
class Call:
    """Redis commands to run in one round trip (a MULTI/EXEC when ``transaction``)."""

    commands: list[list[Any]]
    transaction: bool = False


@dataclass(frozen=True, slots=True)
class Embed:
    texts: list[str]


@dataclass(frozen=True, slots=True)
class Summarize:
    memories: list[Memory]


Step = Call | Embed | Summarize
T = TypeVar("T")
Steps = Generator[Step, Any, T]  # a procedure: yields steps, is sent their answers, returns T


@dataclass(slots=True)
class UserReport:
    """What maintenance did (or, in a dry run, would do) to one user's memories."""

    user_id: str
    before: int = 0
    after: int = 0
    expired: int = 0
    pruned: int = 0
    deduped: int = 0
    consolidated: int = 0
    summaries: int = 0
    changes: list[str] = field(default_factory=list)
    plans: list[MaintenancePlan] = field(default_factory=list)

    def add(self, p: MaintenancePlan) -> None:
        self.plans.append(p)
        self.after += p.after
        self.expired += len(p.expire)
        self.pruned += len(p.prune)
        self.deduped += len(p.dedupe)
        self.consolidated += len(p.consolidated)
        self.summaries += len(p.groups)


@dataclass(slots=True)
class MaintenanceReport:
    """What ``maintain`` did, per user and in total."""

    now: float
    dry_run: bool
    summarizer: str
    users: list[UserReport] = field(default_factory=list)

    def total(self, name: str) -> int:
        return sum(int(getattr(u, name)) for u in self.users)

    @property
    def before(self) -> int:
        return self.total("before")

    @property
    def after(self) -> int:
        return self.total("after")

    @property
    def changes(self) -> list[str]:
        return [c for u in self.users for c in u.changes]

    def as_dict(self, *, decisions: bool = False) -> dict[str, Any]:
        names = ("before", "after", "expired", "pruned", "deduped", "consolidated", "summaries")
        out: dict[str, Any] = {
            "now": self.now, "dry_run": self.dry_run, "summarizer": self.summarizer,
            "totals": {n: self.total(n) for n in names},
            "users": [
                {"user_id": u.user_id, **{n: getattr(u, n) for n in names},
                 "changes": list(u.changes)}
                for u in self.users
            ],
        }
        if decisions:
            for entry, u in zip(out["users"], self.users, strict=True):
                entry["plan"] = [p.as_dict() for p in u.plans]
        return out


@dataclass(frozen=True, slots=True)
class UndoResult:
    """What ``undo`` put back (``restored``) and took away (the summary it removed)."""

    change_id: str
    restored: tuple[str, ...]
    removed_summary: str | None


def list_users(store: StoreCore) -> Steps[list[str]]:
    """Every user with at least one memory (decoded ids, sorted)."""
    name = store.index_name
    reply = yield Call([["FT.AGGREGATE", name, "*", "LOAD", 1, "@user_id", "GROUPBY", 1,
                         "@user_id", "WITHCURSOR", "COUNT", USERS_PAGE, "DIALECT", 2]])
    users: set[str] = set()
    rows, cursor = reply[0]
    while True:
        for row in rows[1:]:
            fields = dict(zip(row[::2], row[1::2], strict=True))
            value = fields.get(b"user_id", fields.get("user_id"))
            if value:
                users.add(decode_tag(value.decode() if isinstance(value, bytes) else value))
        if not int(cursor):
            return sorted(users)
        reply = yield Call([["FT.CURSOR", "READ", name, cursor]])
        rows, cursor = reply[0]


def memory_ids(store: StoreCore, user_id: str) -> Steps[list[tuple[str, str]]]:
    """(id, session tag) of one user's memories, oldest first: no more than that, so a
    million fit."""
    rows: list[tuple[str, str]] = []
    query = store.user_query(user_id)
    cut = len(store.keys.memory(user_id, ""))
    while True:
        reply = yield Call([["FT.SEARCH", store.index_name, query, "RETURN", 1, "session_id",
                             "SORTBY", "created", "ASC", "LIMIT", len(rows), IDS_PAGE,
                             "DIALECT", 2]])
        page = reply[0]
        for key, fields in zip(page[1::2], page[2::2], strict=True):
            named = dict(zip(fields[::2], fields[1::2], strict=True))
            session = named.get(b"session_id", named.get("session_id")) or b""
            rows.append((_text(key)[cut:], _text(session)))
        if (len(page) - 1) // 2 < IDS_PAGE:
            return list({row[0]: row for row in rows}.values())


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def chunks(rows: Sequence[tuple[str, str]], size: int) -> list[list[str]]:
    """Ids in chunks of about ``size``, cut between sessions where possible (a group never
    spans two chunks): a chunk ends once it holds ``size`` and the session changes, or at
    twice ``size`` in any case."""
    out: list[list[str]] = []
    current: list[str] = []
    previous: str | None = None
    for memory_id, session in rows:
        if current and (len(current) >= 2 * size or (
                len(current) >= size and (session != previous or not session))):
            out.append(current)
            current = []
        current.append(memory_id)
        previous = session
    if current:
        out.append(current)
    return out


@dataclass(frozen=True, slots=True)
class Loaded:
    """A chunk of one user's memories as stored: parsed, and their raw hashes."""

    memories: list[Memory]
    raw: dict[str, RemovedMemory]


def load(store: StoreCore, user_id: str, ids: Sequence[str]) -> Steps[Loaded]:
    keys = store.keys
    reply = yield Call([*(["HGETALL", keys.memory(user_id, i)] for i in ids),
                        ["HMGET", keys.recalls(user_id), *ids]])
    *hashes, recalls = reply
    loaded = Loaded([], {})
    for memory_id, raw, recall in zip(ids, hashes, recalls, strict=True):
        if not raw:
            continue  # deleted since the ids were listed
        fields = {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}
        memory = from_hash(memory_id, fields, recall, store.sealer)
        if memory.user_id != user_id:
            raise StoreError(f"isolation check failed: memory {memory_id} is not {user_id!r}'s")
        loaded.memories.append(memory)
        loaded.raw[memory_id] = RemovedMemory(
            memory_id, {k: v if isinstance(v, bytes) else str(v).encode()
                        for k, v in fields.items()}, recall)
    return loaded


def maintain_user(
    store: StoreCore, user_id: str, *, now: float, policy: LifecyclePolicy, dry_run: bool,
    summarizer: str, clock: Callable[[], float],
) -> Steps[UserReport]:
    """Plan and (unless ``dry_run``) apply maintenance of one user, a chunk at a time."""
    rows = yield from memory_ids(store, user_id)
    report = UserReport(user_id, before=len(rows))
    parts = chunks(rows, policy.batch_size)
    for chunk in parts:
        budget = policy.budget
        if budget is not None and len(parts) > 1:  # each chunk gets its share of the budget
            budget = max(1, budget * len(chunk) // len(rows))
        loaded = yield from load(store, user_id, chunk)
        chunk_policy = dataclasses.replace(policy, budget=budget)
        # Topics are told apart by each memory's own words: the stored vectors also hold the
        # turns before it, which would make neighbours on different topics look alike.
        candidates = consolidation_candidates(loaded.memories, now=now, policy=chunk_policy)
        own = (yield Embed([m.text for m in candidates])) if candidates else []
        p = plan(loaded.memories, now=now, policy=chunk_policy,
                 vectors={m.id: v for m, v in zip(candidates, own, strict=True)})
        report.add(p)
        if dry_run:
            continue
        by_id = {m.id: m for m in loaded.memories}
        texts = []
        for g in p.groups:
            texts.append((yield Summarize([by_id[i] for i in g.memory_ids])))
        vectors = (yield Embed(texts)) if texts else []
        for g, text, vector in zip(p.groups, texts, vectors, strict=True):
            commands, change = _consolidation(store, g, text, vector, loaded, now, policy,
                                              summarizer, clock())
            yield Call(commands, transaction=True)
            report.changes.append(change)
        removals = [d for d in p.decisions if d.action in _REMOVALS]
        for i in range(0, len(removals), REMOVALS_PER_TRANSACTION):
            commands = []
            for d in removals[i : i + REMOVALS_PER_TRANSACTION]:
                at = clock()
                entry = AuditEntry(new_id(at), user_id, d.action.value, d.reason, at, now,
                                   (d.memory_id,), removed=(loaded.raw[d.memory_id],))
                commands += _audit_commands(store, entry, policy)
                commands += _delete(store, d.user_id, d.memory_id)
                report.changes.append(entry.change_id)
            yield Call(commands, transaction=True)
    return report


_REMOVALS = (Action.EXPIRE, Action.PRUNE, Action.DEDUPE)


def _delete(store: StoreCore, user_id: str, memory_id: str) -> list[list[Any]]:
    """Delete a memory and its recall entry."""
    return [["DEL", store.keys.memory(user_id, memory_id)],
            ["HDEL", store.keys.recalls(user_id), memory_id]]


def summary_memory(group: Group, text: str, clock: float) -> Memory:
    """The memory a group is rewritten as: dated at its newest source, as important as the
    most important, recalled as often as all of them together."""
    sessions = group.session_ids
    return Memory(
        id=new_id(clock), user_id=group.user_id, text=text, kind=Kind.SUMMARY,
        session_id=sessions[0] if len(sessions) == 1 else None, role=None, name=None,
        created_at=group.end, last_accessed=group.last_accessed,
        access_count=group.access_count, importance=group.importance, metadata={},
        replaces=group.memory_ids, replaced_sessions=sessions,
        replaced_span=(group.start, group.end),
    )


def _consolidation(
    store: StoreCore, group: Group, text: str, vector: Vector, loaded: Loaded, now: float,
    policy: LifecyclePolicy, summarizer: str, clock: float,
) -> tuple[list[list[Any]], str]:
    summary = summary_memory(group, text, clock)
    entry = AuditEntry(
        new_id(clock), group.user_id, Action.CONSOLIDATE.value, group.reason, clock, now,
        group.memory_ids, summary_id=summary.id, summarizer=summarizer,
        removed=tuple(loaded.raw[i] for i in group.memory_ids),
    )
    fields = store.hash_of(summary, np.asarray(vector, dtype=np.float32))
    commands: list[list[Any]] = [
        ["HSET", store.keys.memory(group.user_id, summary.id),
         *(x for pair in fields.items() for x in pair)],
        *_audit_commands(store, entry, policy),
    ]
    for memory_id in group.memory_ids:
        commands += _delete(store, group.user_id, memory_id)
    return commands, entry.change_id


def _audit_commands(
    store: StoreCore, entry: AuditEntry, policy: LifecyclePolicy
) -> list[list[Any]]:
    keep_ms = int(policy.audit_retention * 1000)
    index = store.keys.audit_index(entry.user_id)
    return [
        ["SET", store.keys.audit(entry.user_id, entry.change_id), _sealed(store, entry), "PX",
         keep_ms],
        ["ZADD", index, entry.at, entry.change_id],
        ["ZREMRANGEBYSCORE", index, "-inf", f"({entry.at - policy.audit_retention}"],
        ["PEXPIRE", index, keep_ms],
    ]


def _sealed(store: StoreCore, entry: AuditEntry) -> str:
    """An audit entry as stored: its JSON, encrypted when encryption is on (it holds the
    removed memories' fields)."""
    text = entry.to_json()
    if store.sealer is None:
        return text
    return store.sealer.seal_text(entry.user_id, entry.change_id, "audit", text)


def _opened(store: StoreCore, user_id: str, change_id: str, raw: bytes | str) -> AuditEntry:
    if store.sealer is None:
        return AuditEntry.from_json(raw)
    return AuditEntry.from_json(store.sealer.open_text(user_id, change_id, "audit", raw))


def audit_trail(store: StoreCore, user_id: str, limit: int) -> Steps[list[AuditEntry]]:
    """The user's latest ``limit`` audit entries, newest first (expired ones skipped)."""
    index = store.keys.audit_index(user_id)
    reply = yield Call([["ZREVRANGE", index, 0, limit - 1]])
    ids = [i.decode() if isinstance(i, bytes) else i for i in reply[0]]
    if not ids:
        return []
    reply = yield Call([["GET", store.keys.audit(user_id, i)] for i in ids])
    return [_opened(store, user_id, i, raw) for i, raw in zip(ids, reply, strict=True)
            if raw is not None]


def undo(
    store: StoreCore, user_id: str, change_id: str, clock: float
) -> Steps[UndoResult]:
    """Put back what one change removed and take away the summary it wrote."""
    key = store.keys.audit(user_id, change_id)
    raw = (yield Call([["GET", key]]))[0]
    if raw is None:
        raise ChangeNotFoundError(user_id, change_id)
    entry = _opened(store, user_id, change_id, raw)
    if entry.user_id != user_id:
        raise StoreError(f"isolation check failed: change {change_id} is not {user_id!r}'s")
    if entry.undone_at is not None:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(entry.undone_at))
        raise InvalidArgumentError(f"change {change_id} was already undone at {when} UTC")
    keys = store.keys
    commands: list[list[Any]] = []
    for r in entry.removed:
        memory_key = keys.memory(user_id, r.memory_id)
        commands += [["DEL", memory_key],
                     ["HSET", memory_key, *(x for pair in r.fields.items() for x in pair)]]
        if r.recall is not None:
            commands.append(["HSET", keys.recalls(user_id), r.memory_id, r.recall])
    if entry.summary_id:
        commands += _delete(store, user_id, entry.summary_id)
    commands.append(["SET", key, _sealed(store, entry.undone(clock)), "KEEPTTL"])
    yield Call(commands, transaction=True)
    return UndoResult(change_id, tuple(r.memory_id for r in entry.removed), entry.summary_id)


__all__ = [
    "Call",
    "Embed",
    "MaintenanceReport",
    "Summarize",
    "UndoResult",
    "UserReport",
    "audit_trail",
    "list_users",
    "maintain_user",
    "undo",
]
