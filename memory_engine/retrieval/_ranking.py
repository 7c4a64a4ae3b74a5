"""From candidate lists to the final ranking: fusion, decay, thresholds, de-duplication. Pure."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple

from ..lifecycle.decay import DecayPolicy, decay_factor, decay_score
from ..models import ScoreParts, SearchMode
from ._fusion import linear_fusion, reciprocal_rank_fusion

_TOKEN = re.compile(r"\w+", re.UNICODE)


class Fusion(StrEnum):
    """How hybrid search merges its keyword and vector rankings."""

    RRF = "rrf"
    LINEAR = "linear"


class Candidate(NamedTuple):
    """What ranking needs to know about one memory a search command returned.

    Search commands return only these fields, not whole memories: ranking sees 20 + 20
    candidates (at k=10), and only the final ``k`` are read in full. ``text`` is filled only when
    de-duplication needs it, the decay inputs only when decay is on. (A named tuple: a
    search builds a hundred of them, and a frozen dataclass is several times slower to make.)
    """

    id: str
    score: float
    previous_id: str | None = None
    text: str = ""
    last_accessed: float = 0.0
    access_count: int = 0
    importance: float = 0.5


@dataclass(frozen=True, slots=True)
class Ranked:
    """A candidate's place in the final ranking: its score and the parts of it."""

    candidate: Candidate
    score: float
    parts: ScoreParts

    @property
    def id(self) -> str:
        return self.candidate.id


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
    keyword: Sequence[Candidate],
    vector: Sequence[Candidate],
    options: RankingOptions,
) -> dict[str, float]:
    if mode is SearchMode.KEYWORD:
        return {h.id: h.score for h in keyword}
    if mode is SearchMode.VECTOR:
        return {h.id: h.score for h in vector}
    if options.fusion is Fusion.LINEAR:
        return linear_fusion(
            {h.id: h.score for h in keyword}, {h.id: h.score for h in vector},
            keyword_weight=options.keyword_weight, vector_weight=options.vector_weight,
        )
    return reciprocal_rank_fusion(
        [[h.id for h in keyword], [h.id for h in vector]],
        k=options.rrf_k, weights=[options.keyword_weight, options.vector_weight],
    )


def _credit_previous(
    base: dict[str, float], candidates: dict[str, Candidate], credit: float
) -> dict[str, float]:
    """Add ``credit`` times each candidate's score to the candidate it follows, then divide
    by ``1 + credit`` so fused scores stay within (0, 1]."""
    out = dict(base)
    for doc, score in base.items():
        previous = candidates[doc].previous_id
        if previous is not None and previous in out:
            out[previous] += credit * score
    return {doc: score / (1.0 + credit) for doc, score in out.items()}


def _words(text: str) -> frozenset[str]:
    return frozenset(_TOKEN.findall(text.lower()))


def _repeats(words: frozenset[str], other: frozenset[str], threshold: float) -> bool:
    """Whether two word sets are near-duplicates (Jaccard similarity at least ``threshold``)."""
    return len(words & other) / max(len(words | other), 1) >= threshold


def rank(
    mode: SearchMode,
    k: int,
    *,
    keyword: Sequence[Candidate] = (),
    vector: Sequence[Candidate] = (),
    options: RankingOptions,
    now: float,
) -> list[Ranked]:
    """The top ``k`` candidates, best first, each with its score and the parts of it.

    Args:
        mode: Which candidate lists count.
        k: How many to return at most.
        keyword: BM25 candidates, best first (``score`` is the BM25 score).
        vector: KNN candidates, best first (``score`` is the cosine similarity).
        options: Fusion, decay, thresholds and de-duplication.
        now: The time decay is measured at (seconds since the epoch).
    """
    if options.min_similarity is not None:
        vector = [h for h in vector if (h.score >= options.min_similarity)]
    # A BM25 "match" scoring 0 matched only words in (nearly) every memory of the user, such
    # as their own name: it is no evidence, and in rank fusion its rank would still count.
    keyword = [h for h in keyword if h.score > 0]
    base = _base_scores(mode, keyword, vector, options)
    candidates: dict[str, Candidate] = {h.id: h for h in (*vector, *keyword)}
    if options.context_credit > 0 and mode is SearchMode.HYBRID:
        base = _credit_previous(base, candidates, options.context_credit)
    decays: dict[str, float] = {}
    if options.decay_weight > 0:
        for doc in base:
            c = candidates[doc]
            decays[doc] = decay_score(c.last_accessed, c.access_count, c.importance, now,
                                      options.decay)
            base[doc] *= decay_factor(decays[doc], options.decay_weight)
    kw_part = {h.id: h.score for h in keyword}
    vec_part = {h.id: h.score for h in vector}
    kept: list[tuple[Ranked, frozenset[str]]] = []
    # Best first; the sort is stable, so ties keep the candidates' own order. Only the hits
    # that make the cut are built.
    for doc in sorted(base, key=base.__getitem__, reverse=True):
        score = base[doc]
        if options.min_score is not None and score < options.min_score:
            break
        hit = Ranked(candidates[doc], score, ScoreParts(
            keyword=kw_part.get(doc), vector=vec_part.get(doc), decay=decays.get(doc)))
        words = _words(hit.candidate.text) if options.dedupe else frozenset()
        if options.dedupe and any(_repeats(words, other, options.dedupe_threshold)
                                  for _, other in kept):
            continue
        kept.append((hit, words))
        if len(kept) == k:
            break
    return [hit for hit, _ in kept]


def with_overrides(options: RankingOptions, **overrides: object) -> RankingOptions:
    """A copy with the non-None overrides applied."""
    changes = {name: value for name, value in overrides.items() if value is not None}
    return dataclasses.replace(options, **changes) if changes else options  # type: ignore[arg-type]
