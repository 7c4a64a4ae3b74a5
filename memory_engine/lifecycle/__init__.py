"""Lifecycle building blocks, all pure: the decay scorer (and, later, maintenance planning)."""

from .decay import DAY, DecayPolicy, decay_factor, decay_score, retention, strength

__all__ = ["DAY", "DecayPolicy", "decay_factor", "decay_score", "retention", "strength"]
