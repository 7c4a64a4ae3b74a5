"""Lifecycle building blocks, all pure: the decay scorer, the maintenance policy and planner,
summarizers and audit records."""

from .audit import AuditEntry, RemovedMemory
from .decay import DAY, DecayPolicy, decay_factor, decay_score, retention, strength
from .planning import Action, Decision, Group, MaintenancePlan, cohesion, is_pinned, plan
from .policy import PIN_KEY, LifecyclePolicy
from .summarize import SUMMARY_PROMPT, ExtractiveSummarizer, Summarizer, transcript

__all__ = [
    "DAY",
    "PIN_KEY",
    "SUMMARY_PROMPT",
    "Action",
    "AuditEntry",
    "DecayPolicy",
    "Decision",
    "ExtractiveSummarizer",
    "Group",
    "LifecyclePolicy",
    "MaintenancePlan",
    "RemovedMemory",
    "Summarizer",
    "cohesion",
    "decay_factor",
    "decay_score",
    "is_pinned",
    "plan",
    "retention",
    "strength",
    "transcript",
]
