"""Records that cross the public API: memories in, memories and hits out."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


class Kind(StrEnum):
    """What a memory is: a conversation turn, a stated fact, or a summary of others."""

    TURN = "turn"
    FACT = "fact"
    SUMMARY = "summary"


class Role(StrEnum):
    """Who produced a memory."""

    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"
    TOOL = "tool"


class SearchMode(StrEnum):
    """How ``search`` finds candidates: both indexes fused (default), or one of them."""

    HYBRID = "hybrid"
    VECTOR = "vector"
    KEYWORD = "keyword"


@dataclass(frozen=True, slots=True)
class NewMemory:
    """A memory to be written with ``add_many``.

    Args:
        text: What to remember. Stored whole; see ``EngineConfig.max_text_chars``.
        session_id: The conversation it came from, if any.
        kind: ``turn`` (default), ``fact`` or ``summary``.
        role: ``user``, ``assistant``, ``system`` or ``tool``; None when unknown.
        name: The speaker's name, if known.
        created_at: Seconds since the epoch; defaults to the time of the write.
        importance: 0.0 to 1.0, default 0.5.
        metadata: Caller data, JSON-serialisable, returned untouched in hits.
        embedding: A precomputed vector of the index's dimension; the text is not embedded then.
    """

    text: str
    session_id: str | None = None
    kind: Kind | str = Kind.TURN
    role: Role | str | None = None
    name: str | None = None
    created_at: float | None = None
    importance: float = 0.5
    metadata: dict[str, Any] = field(default_factory=dict)
    embedding: Vector | list[float] | None = None


@dataclass(frozen=True, slots=True)
class Memory:
    """A stored memory, as ``get``, ``add`` and ``search`` return it.

    ``previous_id`` is the turn written before this one in the same session (None for the
    first turn, and for memories without a session). A summary (``kind="summary"``, written by
    maintenance) lists what it replaced: ``replaces`` (memory ids), ``replaced_sessions`` and
    ``replaced_span`` (``created_at`` of the oldest and newest memory it replaced).
    """

    id: str
    user_id: str
    text: str
    kind: Kind
    session_id: str | None
    role: Role | None
    name: str | None
    created_at: float
    last_accessed: float
    access_count: int
    importance: float
    metadata: dict[str, Any]
    replaces: tuple[str, ...] = ()
    previous_id: str | None = None
    replaced_sessions: tuple[str, ...] = ()
    replaced_span: tuple[float, float] | None = None


@dataclass(frozen=True, slots=True)
class ScoreParts:
    """The parts of a hit's score, so a caller can see why it ranked where it did.

    Attributes:
        keyword: The BM25 score from the keyword index, None when the keyword index did not
            return this memory.
        vector: Cosine similarity between query and memory (1 is identical), None when the
            vector index did not return this memory.
        decay: The recency/strength weight applied to the score, None when decay is off.
    """

    keyword: float | None = None
    vector: float | None = None
    decay: float | None = None


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One search result: the memory, its final score and the parts of that score."""

    memory: Memory
    score: float
    parts: ScoreParts

    @property
    def metadata(self) -> dict[str, Any]:
        """The caller metadata stored with the memory."""
        return self.memory.metadata
