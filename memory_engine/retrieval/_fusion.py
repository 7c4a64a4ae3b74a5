"""Fusing keyword and vector rankings into one. Pure functions over ids and scores."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def reciprocal_rank_fusion(
    rankings: Sequence[Sequence[str]], *, k: int = 60, weights: Sequence[float] | None = None
) -> dict[str, float]:
    """RRF (Cormack et al. 2009): ``score(d) = sum_i w_i / (k + rank_i(d))``, ranks from 1.

    Returns scores normalised by the best possible score (first in every ranking), so they
    fall in (0, 1] and a threshold means the same whatever ``k`` is.
    """
    weights = list(weights) if weights is not None else [1.0] * len(rankings)
    if len(weights) != len(rankings):
        raise ValueError("one weight per ranking")
    best = sum(w / (k + 1) for w in weights)
    scores: dict[str, float] = {}
    for ranking, weight in zip(rankings, weights, strict=True):
        for rank, doc in enumerate(ranking, start=1):
            scores[doc] = scores.get(doc, 0.0) + weight / (k + rank)
    return {doc: score / best for doc, score in scores.items()} if best > 0 else scores


def min_max(scores: Mapping[str, float]) -> dict[str, float]:
    """Scale scores to [0, 1]; a single value (or all equal) maps to 1."""
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    if high == low:
        return dict.fromkeys(scores, 1.0)
    return {doc: (s - low) / (high - low) for doc, s in scores.items()}


def linear_fusion(
    keyword: Mapping[str, float], vector: Mapping[str, float], *,
    keyword_weight: float = 0.5, vector_weight: float = 0.5,
) -> dict[str, float]:
    """Weighted sum of min-max-normalised BM25 scores and cosine similarities.

    A document missing from one ranking gets 0 for that part. Scores fall in [0, 1] when the
    weights sum to 1.
    """
    kw, vec = min_max(keyword), min_max(vector)
    total = keyword_weight + vector_weight
    # Keyword documents first, then the vector-only ones, so a stable sort keeps ties in
    # candidate order (a set union would order them by hash, differently in each process).
    return {
        doc: (keyword_weight * kw.get(doc, 0.0) + vector_weight * vec.get(doc, 0.0)) / total
        for doc in [*kw, *(d for d in vec if d not in kw)]
    }
