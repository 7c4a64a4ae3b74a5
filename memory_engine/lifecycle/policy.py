"""What maintenance may do to a user's memories: one frozen policy. Pure."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NoReturn

from ..exceptions import ConfigurationError
from ..models import Kind
from .decay import DecayPolicy

PIN_KEY = "pinned"  # metadata key: ``{"pinned": true}`` keeps a memory through any maintenance


class _TTL(dict[Kind, float]):
    """The policy's TTLs: read-only and hashable, so a policy (and a config holding one)
    can be a dict key."""

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(tuple(sorted(self.items())))

    def __reduce__(self) -> tuple[type[_TTL], tuple[dict[Kind, float]]]:
        return (_TTL, (dict(self),))  # copy and pickle rebuild it whole, never item by item

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("LifecyclePolicy.ttl is read-only; build a new policy")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _read_only


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and (
        math.isfinite(value) and value > 0)


@dataclass(frozen=True, slots=True)
class LifecyclePolicy:
    """How maintenance expires, consolidates and prunes memories.

    Nothing is removed by the defaults except stale turns, which are consolidated into
    summaries (their words survive in the summary; ``undo`` brings the turns back).

    Attributes:
        ttl: Seconds a memory lives after ``created_at``, per kind (``turn``, ``fact``,
            ``summary``); a kind not listed never expires. Empty by default.
        budget: Most memories one user may keep; maintenance consolidates, then prunes the
            least present memories (lowest decay score) until each user is within it. None:
            no budget. Every user has the whole budget to themselves.
        stale_below: A memory whose decay score (``lifecycle.decay``) is below this is stale:
            it may be consolidated into a summary.
        consolidate: Whether stale memories are consolidated into summaries at all.
        consolidate_kinds: Kinds that may be consolidated. Summaries never are: a summary of
            summaries is how "mega-memories" mixing everything grow.
        min_group: Fewest stale memories that make a summary.
        max_group: Most memories one summary replaces.
        cohesion: Least cosine similarity of every member of a group to the mean of the
            other members (``planning.cohesion``); a memory that would break it starts a
            new group, so no summary mixes topics.
        window: Memories without a session are grouped only within this many seconds.
        batch_size: Memories planned at once; a user with more is maintained in chunks of
            about this size (cut between sessions; at most twice it), oldest first, each held
            to its share of the budget.
        audit_retention: Seconds an audit-trail entry (and with it ``undo``) is kept.
        decay: The forgetting curve that decides staleness and what a budget prunes first.
    """

    ttl: Mapping[Kind, float] = field(default_factory=dict)
    budget: int | None = None
    stale_below: float = 0.3
    consolidate: bool = True
    consolidate_kinds: frozenset[Kind] = frozenset({Kind.TURN, Kind.FACT})
    min_group: int = 3
    max_group: int = 10
    cohesion: float = 0.2
    window: float = 86_400.0
    batch_size: int = 2_000
    audit_retention: float = 90 * 86_400.0
    decay: DecayPolicy = field(default_factory=DecayPolicy)

    def __post_init__(self) -> None:
        ttl: dict[Kind, float] = {}
        for kind, seconds in dict(self.ttl).items():
            try:
                key = Kind(kind)
            except ValueError:
                raise ConfigurationError(
                    f"ttl has an unknown kind {kind!r}; kinds: {[k.value for k in Kind]}"
                ) from None
            if not _positive(seconds):
                raise ConfigurationError(f"ttl[{key.value}] must be a positive number of "
                                         f"seconds; got {seconds!r}")
            ttl[key] = float(seconds)
        object.__setattr__(self, "ttl", _TTL(ttl))
        try:
            kinds = frozenset(Kind(k) for k in self.consolidate_kinds)
        except ValueError:
            raise ConfigurationError(
                f"consolidate_kinds has an unknown kind in "
                f"{sorted(map(str, self.consolidate_kinds))}; kinds: {[k.value for k in Kind]}"
            ) from None
        if Kind.SUMMARY in kinds:
            raise ConfigurationError("summaries cannot be consolidated again (consolidate_kinds)")
        object.__setattr__(self, "consolidate_kinds", kinds)
        if self.budget is not None and (
                isinstance(self.budget, bool) or not isinstance(self.budget, int)
                or self.budget < 1):
            raise ConfigurationError(f"budget must be a positive integer or None; "
                                     f"got {self.budget!r}")
        for name in ("min_group", "max_group", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 2:
                raise ConfigurationError(f"{name} must be an integer >= 2; got {value!r}")
        if self.min_group > self.max_group:
            raise ConfigurationError(
                f"min_group ({self.min_group}) is larger than max_group ({self.max_group})")
        if not isinstance(self.stale_below, int | float) or not 0 <= self.stale_below <= 1:
            raise ConfigurationError(f"stale_below must be from 0 to 1; got {self.stale_below!r}")
        if not isinstance(self.cohesion, int | float) or not -1 <= self.cohesion <= 1:
            raise ConfigurationError(f"cohesion must be from -1 to 1; got {self.cohesion!r}")
        for name in ("window", "audit_retention"):
            if not _positive(getattr(self, name)):
                raise ConfigurationError(f"{name} must be a positive number of seconds; "
                                         f"got {getattr(self, name)!r}")

    def ttl_of(self, kind: Kind) -> float | None:
        return self.ttl.get(kind)


__all__ = ["PIN_KEY", "LifecyclePolicy"]
