"""Maintenance planning: which memories expire, which stale ones become one summary, which a
budget prunes, and why. Pure: memories and ``now`` in, a plan out; nothing is read or written.

The engine applies a plan (``MemoryEngine.maintain``); tests and dry runs read it.

Rules, per user (memories of different users are never compared, grouped or counted
together):

1. A memory listed in a stored summary's ``replaces`` is a leftover of an interrupted
   consolidation: it is removed (``dedupe``), since the summary already stands for it.
2. A memory older than its kind's TTL expires.
3. A pinned memory (``metadata["pinned"] is True``) is kept, whatever else applies.
4. Stale memories (decay score below ``stale_below``) of a consolidatable kind are grouped:
   within one session (or, without a session, one time window), in time order, a memory joins
   the open group only if every member stays at least ``cohesion`` similar to the mean of
   the other members. Groups of ``min_group`` or more are consolidated into one summary each.
5. If a user still has more than ``budget`` memories (counting each summary as one), some
   are pruned until the user is within budget: first memories that carry no fact (chatter:
   "Wow, thanks!"); then stale before fresh, and among the stale, single memories before
   groups (a summary stands for several, the smallest groups go first); within each, the
   least present (lowest decay score), oldest first.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import numpy as np

from ..models import Kind, Memory, Vector
from .decay import decay_score
from .policy import PIN_KEY, LifecyclePolicy
from .summarize import informative


class Action(StrEnum):
    """What maintenance does to one memory."""

    KEEP = "keep"
    EXPIRE = "expire"
    CONSOLIDATE = "consolidate"
    PRUNE = "prune"
    DEDUPE = "dedupe"


@dataclass(frozen=True, slots=True)
class Decision:
    """The fate of one memory, and why."""

    memory_id: str
    user_id: str
    action: Action
    reason: str


@dataclass(frozen=True, slots=True)
class Group:
    """Stale memories of one user and one topic that one summary will replace.

    Attributes:
        memory_ids: The members, oldest first.
        session_ids: Their sessions (empty when none had one).
        start, end: ``created_at`` of the oldest and newest member.
        cohesion: The least cosine similarity of a member to the mean of the others.
        importance: The highest importance of a member (the summary keeps it).
        last_accessed, access_count: The latest recall and the recalls of all members (the
            summary inherits them, so it decays like its freshest source).
    """

    user_id: str
    memory_ids: tuple[str, ...]
    session_ids: tuple[str, ...]
    start: float
    end: float
    cohesion: float
    importance: float
    last_accessed: float
    access_count: int
    reason: str


@dataclass(frozen=True, slots=True)
class MaintenancePlan:
    """What maintenance will do: one decision per memory, and the groups to consolidate."""

    now: float
    decisions: tuple[Decision, ...]
    groups: tuple[Group, ...]
    warnings: tuple[str, ...] = field(default=())

    def _with(self, action: Action) -> list[Decision]:
        return [d for d in self.decisions if d.action is action]

    @property
    def expire(self) -> list[Decision]:
        return self._with(Action.EXPIRE)

    @property
    def prune(self) -> list[Decision]:
        return self._with(Action.PRUNE)

    @property
    def dedupe(self) -> list[Decision]:
        return self._with(Action.DEDUPE)

    @property
    def keep(self) -> list[Decision]:
        return self._with(Action.KEEP)

    @property
    def consolidated(self) -> list[Decision]:
        return self._with(Action.CONSOLIDATE)

    @property
    def before(self) -> int:
        """Memories planned over."""
        return len(self.decisions)

    @property
    def after(self) -> int:
        """Memories left once the plan is applied: those kept, plus one summary per group."""
        return len(self.keep) + len(self.groups)

    def users(self) -> dict[str, tuple[int, int]]:
        """User -> (memories before, memories after)."""
        before: dict[str, int] = defaultdict(int)
        after: dict[str, int] = defaultdict(int)
        for d in self.decisions:
            before[d.user_id] += 1
            after[d.user_id] += d.action is Action.KEEP
        for g in self.groups:
            after[g.user_id] += 1
        return {u: (before[u], after[u]) for u in before}

    def as_dict(self) -> dict[str, Any]:
        """The plan as JSON-ready data (``memory-engine maintain --dry-run --json``)."""
        return {
            "now": self.now,
            "before": self.before,
            "after": self.after,
            "decisions": [
                {"memory_id": d.memory_id, "user_id": d.user_id, "action": d.action.value,
                 "reason": d.reason} for d in self.decisions
            ],
            "groups": [
                {"user_id": g.user_id, "memory_ids": list(g.memory_ids),
                 "session_ids": list(g.session_ids), "start": g.start, "end": g.end,
                 "cohesion": round(g.cohesion, 4), "reason": g.reason} for g in self.groups
            ],
            "warnings": list(self.warnings),
        }


def is_pinned(memory: Memory) -> bool:
    """Whether maintenance must leave ``memory`` alone."""
    return memory.metadata.get(PIN_KEY) is True


def cohesion(vectors: Sequence[Vector]) -> float:
    """How well one summary could stand for every member: the least cosine similarity of a
    member to the mean of the *other* members (1.0 for a single vector).

    Leaving the member out matters: in a small group a member's own vector pulls the mean
    towards itself, so an off-topic memory beside two related ones would still look close.
    """
    matrix = np.asarray(vectors, dtype=np.float64)
    if len(matrix) < 2:
        return 1.0
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    unit = matrix / np.where(norms == 0, 1.0, norms)
    others = unit.sum(axis=0) - unit
    sizes = np.linalg.norm(others, axis=1)
    sims = np.einsum("ij,ij->i", unit, others) / np.where(sizes == 0, 1.0, sizes)
    return float(sims.min())


def _span(seconds: float) -> str:
    """A TTL in words: ``120 days``, ``6 hours``, ``45s``."""
    for unit, size in (("days", 86_400.0), ("hours", 3_600.0)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g}s"


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d")


def plan(
    memories: Sequence[Memory],
    *,
    now: float,
    policy: LifecyclePolicy,
    vectors: Mapping[str, Vector] | None = None,
) -> MaintenancePlan:
    """Plan maintenance of ``memories`` (of one or several users) at time ``now``.

    ``vectors`` (memory id -> embedding of the memory's own text) is what stale memories
    are grouped by; a memory without one is never consolidated (``consolidation_candidates``
    says which need one). Every memory gets exactly one decision.
    """
    by_user: dict[str, list[Memory]] = defaultdict(list)
    for m in memories:
        by_user[m.user_id].append(m)
    decisions: list[Decision] = []
    groups: list[Group] = []
    warnings: list[str] = []
    for user_id, mine in by_user.items():
        d, g, w = _plan_user(user_id, mine, now, policy, vectors or {})
        decisions += d
        groups += g
        warnings += w
    return MaintenancePlan(now, tuple(decisions), tuple(groups), tuple(warnings))


def consolidation_candidates(
    memories: Sequence[Memory], *, now: float, policy: LifecyclePolicy
) -> list[Memory]:
    """The memories ``plan`` could consolidate: alive, unpinned, stale, of a consolidatable
    kind. Only these need a vector (the engine embeds their text alone for ``plan``)."""
    by_user: dict[str, list[Memory]] = defaultdict(list)
    for m in memories:
        by_user[m.user_id].append(m)
    out: list[Memory] = []
    for user_id, mine in by_user.items():
        out += _triage(user_id, _ordered(mine), now, policy)[3]
    return out


def _ordered(memories: Sequence[Memory]) -> list[Memory]:
    return sorted(memories, key=lambda m: (m.created_at, m.id))


def _triage(
    user_id: str, ordered: Sequence[Memory], now: float, policy: LifecyclePolicy
) -> tuple[dict[str, Decision], list[Memory], dict[str, float], list[Memory]]:
    """Rules 1-3 (dedupe, expire, pinned): the decisions made, the memories still alive,
    their decay scores and the stale ones that may be consolidated."""
    fate: dict[str, Decision] = {}
    present = {m.id for m in ordered}
    summarized = {
        source: m.id for m in ordered if m.kind is Kind.SUMMARY for source in m.replaces
        if source in present
    }
    alive: list[Memory] = []
    for m in ordered:
        ttl = policy.ttl_of(m.kind)
        if is_pinned(m):
            fate[m.id] = Decision(m.id, user_id, Action.KEEP, "pinned")
        elif m.id in summarized:
            fate[m.id] = Decision(m.id, user_id, Action.DEDUPE,
                                  f"already summarized by {summarized[m.id]}")
        elif ttl is not None and m.created_at + ttl <= now:
            fate[m.id] = Decision(
                m.id, user_id, Action.EXPIRE,
                f"{m.kind.value} created {_day(m.created_at)} is past its ttl of {_span(ttl)}")
        else:
            alive.append(m)
    score = {m.id: decay_score(m.last_accessed, m.access_count, m.importance, now, policy.decay)
             for m in alive}
    stale = [
        m for m in alive
        if policy.consolidate and m.kind in policy.consolidate_kinds
        and score[m.id] < policy.stale_below
    ]
    return fate, alive, score, stale


def _plan_user(
    user_id: str, memories: Sequence[Memory], now: float, policy: LifecyclePolicy,
    vectors: Mapping[str, Vector],
) -> tuple[list[Decision], list[Group], list[str]]:
    ordered = _ordered(memories)
    fate, alive, score, candidates = _triage(user_id, ordered, now, policy)

    def decide(m: Memory, action: Action, reason: str) -> None:
        fate[m.id] = Decision(m.id, user_id, action, reason)

    stale = [m for m in candidates if m.id in vectors]
    stale_ids = {m.id for m in stale}
    by_id = {m.id: m for m in alive}
    groups = _groups(user_id, stale, vectors, policy)
    grouped = {i: g for g in groups for i in g.memory_ids}

    # Budget: each kept memory and each summary-to-be is one unit. Pruned first: chatter (no
    # fact in it); then stale units before fresh ones, and among the stale, single memories
    # before summaries-to-be (which stand for several); then the least present, oldest first.
    units: list[tuple[tuple[bool, bool, int, float, float], Memory | Group]] = []
    for m in alive:
        if m.id not in grouped:
            value = score[m.id]
            fresh = value >= policy.stale_below
            size = max(1, len(m.replaces))  # a stored summary stands for what it replaced
            units.append(((informative(m.text), fresh, size, value, m.created_at), m))
    for g in groups:
        value = decay_score(g.last_accessed, g.access_count, g.importance, now, policy.decay)
        units.append(((True, False, len(g.memory_ids), value, g.end), g))
    pinned = sum(1 for d in fate.values() if d.action is Action.KEEP)
    warnings: list[str] = []
    pruned: set[int] = set()
    total = len(units) + pinned
    if policy.budget is not None and total > policy.budget:
        excess = total - policy.budget
        order = sorted(range(len(units)), key=lambda i: units[i][0])
        pruned = set(order[:excess])
        if excess > len(units):
            warnings.append(f"user {user_id!r} keeps {pinned} pinned memories, more than the "
                            f"budget of {policy.budget}")
    for i, ((has_facts, _, _, value, _), unit) in enumerate(units):
        why = (f"over budget ({total} > {policy.budget}): among the {total - (policy.budget or 0)}"
               + (f" least present (decay {value:.3f})" if has_facts else " that carry no fact"))
        if isinstance(unit, Group):
            for mid in unit.memory_ids:
                member = by_id[mid]
                if i in pruned:
                    decide(member, Action.PRUNE, why + ", summary not written")
                else:
                    decide(member, Action.CONSOLIDATE, unit.reason)
        elif i in pruned:
            decide(unit, Action.PRUNE, why)
        elif unit.id in stale_ids:
            decide(unit, Action.KEEP,
                   f"stale (decay {value:.3f}) but in no cohesive group of {policy.min_group}")
        else:
            decide(unit, Action.KEEP, f"decay {value:.3f}")
    kept_groups = [
        g for i, (_, g) in enumerate(units) if isinstance(g, Group) and i not in pruned]
    return [fate[m.id] for m in ordered], kept_groups, warnings


def _groups(
    user_id: str, stale: Sequence[Memory], vectors: Mapping[str, Vector],
    policy: LifecyclePolicy,
) -> list[Group]:
    """Cohesive groups of ``min_group`` or more stale memories, per session (or time window)."""
    buckets: dict[str | None, list[Memory]] = defaultdict(list)
    for m in stale:  # already in time order
        buckets[m.session_id].append(m)
    out: list[Group] = []
    for session, members in buckets.items():
        current: list[Memory] = []
        for m in members:
            candidate = [*current, m]
            fits = (
                current
                and len(current) < policy.max_group
                and (session is not None or m.created_at - current[0].created_at <= policy.window)
                and cohesion([vectors[c.id] for c in candidate]) >= policy.cohesion
            )
            if fits:
                current = candidate
                continue
            if len(current) >= policy.min_group:
                out.append(_group(user_id, current, vectors, policy))
            current = [m]
        if len(current) >= policy.min_group:
            out.append(_group(user_id, current, vectors, policy))
    return sorted(out, key=lambda g: (g.start, g.memory_ids))


def _group(
    user_id: str, members: Sequence[Memory], vectors: Mapping[str, Vector],
    policy: LifecyclePolicy,
) -> Group:
    score = cohesion([vectors[m.id] for m in members])
    sessions = tuple(dict.fromkeys(m.session_id for m in members if m.session_id))
    return Group(
        user_id=user_id,
        memory_ids=tuple(m.id for m in members),
        session_ids=sessions,
        start=members[0].created_at,
        end=members[-1].created_at,
        cohesion=score,
        importance=max(m.importance for m in members),
        last_accessed=max(m.last_accessed for m in members),
        access_count=sum(m.access_count for m in members),
        reason=(f"stale (decay < {policy.stale_below:g}): {len(members)} memories of "
                f"{', '.join(sessions) or 'no session'} from {_day(members[0].created_at)} to "
                f"{_day(members[-1].created_at)}, cohesion {score:.2f} >= {policy.cohesion:g}"),
    )


__all__ = [
    "Action", "Decision", "Group", "MaintenancePlan", "cohesion", "consolidation_candidates",
    "is_pinned", "plan",
]
