"""The decay scorer: how present a memory still is, from time, recall and importance. Pure.

Two ideas combined:

* **Forgetting curve** (MemoryBank, Zhong et al. 2023): retention ``R = exp(-dt / S)`` where
  ``dt`` is the time since the memory was last recalled (or written) and ``S`` its strength.
  Every recall makes it stronger: ``S = S0 * (1 + reinforcement * access_count)``, and resets
  ``dt`` because recall updates ``last_accessed``.
* **Importance** (Generative Agents, Park et al. 2023: recency + importance + relevance): a
  memory that matters decays towards its importance, not towards zero:
  ``decay = (1 - importance_weight) * R + importance_weight * importance``.

The ranker multiplies relevance by ``(1 - w) + w * decay`` with ``w = decay_weight``, so
``w = 0`` ignores time and ``w = 1`` lets a forgotten, unimportant memory fall to zero.
``now`` is always passed in; nothing here reads the clock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DAY = 86_400.0


@dataclass(frozen=True, slots=True)
class DecayPolicy:
    """Parameters of the forgetting curve.

    Attributes:
        strength_days: ``S0``: days for an unrecalled memory's retention to fall to 1/e (37%).
        reinforcement: How much each recall multiplies the strength by (``1 + r * count``).
        importance_weight: Share of the decay score given to importance rather than retention.
    """

    strength_days: float = 30.0
    reinforcement: float = 1.0
    importance_weight: float = 0.3

    def __post_init__(self) -> None:
        if not (math.isfinite(self.strength_days) and self.strength_days > 0):
            raise ValueError(f"strength_days must be positive; got {self.strength_days}")
        if not (math.isfinite(self.reinforcement) and self.reinforcement >= 0):
            raise ValueError(f"reinforcement must be finite and >= 0; got {self.reinforcement}")
        if not 0 <= self.importance_weight <= 1:
            raise ValueError(f"importance_weight must be in [0, 1]; got {self.importance_weight}")


def strength(access_count: int, policy: DecayPolicy) -> float:
    """Strength ``S`` in days: grows with every recall."""
    return policy.strength_days * (1.0 + policy.reinforcement * max(access_count, 0))


def retention(last_accessed: float, access_count: int, now: float, policy: DecayPolicy) -> float:
    """``exp(-dt / S)`` in (0, 1]; a memory from the future of ``now`` counts as fresh."""
    elapsed_days = max(now - last_accessed, 0.0) / DAY
    return math.exp(-elapsed_days / strength(access_count, policy))


def decay_score(
    last_accessed: float, access_count: int, importance: float, now: float, policy: DecayPolicy
) -> float:
    """Retention blended with importance, in [0, 1]."""
    kept = retention(last_accessed, access_count, now, policy)
    w = policy.importance_weight
    return (1.0 - w) * kept + w * importance


def decay_factor(decay: float, weight: float) -> float:
    """What relevance is multiplied by: ``(1 - weight) + weight * decay``."""
    return (1.0 - weight) + weight * decay
