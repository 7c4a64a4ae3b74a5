"""From candidate lists to the final ranking: fusion, decay, thresholds, de-duplication. Pure."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from ..lifecycle.decay import DecayPolicy, decay_factor, decay_score
from ..models import Memory, ScoreParts, SearchHit, SearchMode
from ._fusion import linear_fusion, reciprocal_rank_fusion

_TOKEN = re.compile(r"\w+", re.UNICODE)


class Fusion(StrEnum):
    """How hybrid search merges its keyword and vector rankings."""

    RRF = "rrf"
    LINEAR = "linear"


@dataclass(frozen=True, slots=True)
class RankingOptions:
    """How candidates become the final ranking (``EngineConfig`` holds the defaults).

    Attributes:
        fusion: ``rrf`` (reciprocal-rank fusion, default) or ``linear`` (weighted sum of
            min-max-normalised scores).
        rrf_k: The RRF constant; larger flattens the difference between ranks.
        keyword_weight: Weight of the BM25 ranking in fusion.
        vector_weight: Weight of the vector ranking in fusion.
        context_credit: Hybrid mode: share of a candidate's fused score added to the candidate
            it follows in its session (``previous_id``). Turns are indexed with the turn before
            them, so a match on a reply may be a match on what it replies to. Single modes
            keep their raw score (cosine similarity, BM25).
        decay_weight: 0 ignores time; up to 1 lets decayed memories sink (see lifecycle.decay).
        decay: The forgetting-curve parameters.
        min_score: Drop hits whose final score is below this.
        min_similarity: Drop vector candidates whose cosine similarity is below this.
        dedupe: Drop hits whose words nearly repeat a better hit's (MMR-style diversity).
        dedupe_threshold: Word-set Jaccard similarity at which two hits count as repeats.
    """

    fusion: Fusion = Fusion.RRF
    rrf_k: int = 60
    keyword_weight: float = 1.0
    vector_weight: float = 1.0
    context_credit: float = 0.0
    decay_weight: float = 0.0
    decay: DecayPolicy = field(default_factory=DecayPolicy)
    min_score: float | None = None
    min_similarity: float | None = None
    dedupe: bool = False
    dedupe_threshold: float = 0.9


def _base_scores(
    mode: SearchMode,
    keyword: Sequence[SearchHit],
    vector: Sequence[SearchHit],
    options: RankingOptions,
) -> dict[str, float]:
    if mode is SearchMode.KEYWORD:
        return {h.memory.id: h.score for h in keyword}
    if mode is SearchMode.VECTOR:
        return {h.memory.id: h.score for h in vector}
    if options.fusion is Fusion.LINEAR:
        return linear_fusion(
            {h.memory.id: h.score for h in keyword}, {h.memory.id: h.score for h in vector},
            keyword_weight=options.keyword_weight, vector_weight=options.vector_weight,
        )
    return reciprocal_rank_fusion(
        [[h.memory.id for h in keyword], [h.memory.id for h in vector]],
        k=options.rrf_k, weights=[options.keyword_weight, options.vector_weight],
    )


def _credit_previous(
    base: dict[str, float], memories: dict[str, Memory], credit: float
) -> dict[str, float]:
    """Add ``credit`` times each candidate's score to the candidate it follows, then divide
    by ``1 + credit`` so fused scores stay within (0, 1]."""
    out = dict(base)
    for doc, score in base.items():
        previous = memories[doc].previous_id
        if previous is not None and previous in out:
            out[previous] += credit * score
    return {doc: score / (1.0 + credit) for doc, score in out.items()}


def _words(text: str) -> frozenset[str]:
    return frozenset(_TOKEN.findall(text.lower()))


def _near_duplicates_removed(hits: list[SearchHit], threshold: float) -> list[SearchHit]:
    kept: list[tuple[SearchHit, frozenset[str]]] = []
    for hit in hits:
        words = _words(hit.memory.text)
        repeat = any(
            len(words & other) / max(len(words | other), 1) >= threshold for _, other in kept
        )
        if not repeat:
            kept.append((hit, words))
    return [hit for hit, _ in kept]


def rank(
    mode: SearchMode,
    k: int,
    *,
    keyword: Sequence[SearchHit] = (),
    vector: Sequence[SearchHit] = (),
    options: RankingOptions,
    now: float,
) -> list[SearchHit]:
    """The top ``k`` hits, best first, each with its score and the parts of it.

    Args:
        mode: Which candidate lists count.
        k: How many hits to return at most.
        keyword: BM25 candidates, best first (``parts.keyword`` set).
        vector: KNN candidates, best first (``parts.vector`` set).
        options: Fusion, decay, thresholds and de-duplication.
        now: The time decay is measured at (seconds since the epoch).
    """
    if options.min_similarity is not None:
        vector = [h for h in vector if (h.score >= options.min_similarity)]
    # A BM25 "match" scoring 0 matched only words in (nearly) every memory of the user, such
    # as their own name: it is no evidence, and in rank fusion its rank would still count.
    keyword = [h for h in keyword if h.score > 0]
    base = _base_scores(mode, keyword, vector, options)
    memories: dict[str, Memory] = {h.memory.id: h.memory for h in (*vector, *keyword)}
    if options.context_credit > 0 and mode is SearchMode.HYBRID:
        base = _credit_previous(base, memories, options.context_credit)
    kw_part = {h.memory.id: h.score for h in keyword}
    vec_part = {h.memory.id: h.score for h in vector}
    order = {doc: i for i, doc in enumerate(base)}  # ties keep the candidates' own order
    hits = []
    for doc, score in base.items():
        memory = memories[doc]
        decay = None
        if options.decay_weight > 0:
            decay = decay_score(memory.last_accessed, memory.access_count, memory.importance,
                                now, options.decay)
            score *= decay_factor(decay, options.decay_weight)
        parts = ScoreParts(keyword=kw_part.get(doc), vector=vec_part.get(doc), decay=decay)
        hits.append(SearchHit(memory, score, parts))
    hits.sort(key=lambda h: (-h.score, order[h.memory.id]))
    if options.min_score is not None:
        hits = [h for h in hits if h.score >= options.min_score]
    if options.dedupe:
        hits = _near_duplicates_removed(hits, options.dedupe_threshold)
    return hits[:k]


def with_overrides(options: RankingOptions, **overrides: object) -> RankingOptions:
    """A copy with the non-None overrides applied."""
    changes = {name: value for name, value in overrides.items() if value is not None}
    return dataclasses.replace(options, **changes) if changes else options  # type: ignore[arg-type]
