"""From candidate lists to the final ranking: ``rank()`` on hand-built candidates. Pure."""

from __future__ import annotations

import math

import pytest

from memory_engine.lifecycle.decay import DAY, DecayPolicy
from memory_engine.models import ScoreParts, SearchMode
from memory_engine.retrieval._ranking import (
    Candidate,
    Fusion,
    Ranked,
    RankingOptions,
    _credit_previous,
    rank,
    with_overrides,
)

NOW = 1_700_000_000.0
PLAIN = RankingOptions()


def mem(
    memory_id: str, text: str | None = None, *, last_accessed: float = NOW,
    access_count: int = 0, importance: float = 0.5, previous_id: str | None = None,
) -> Candidate:
    return Candidate(
        id=memory_id, score=0.0, previous_id=previous_id, text=text or f"memory {memory_id}",
        last_accessed=last_accessed, access_count=access_count, importance=importance,
    )


def kw(candidate: Candidate | str, score: float) -> Candidate:
    """A BM25 candidate: the score is the BM25 score."""
    return (mem(candidate) if isinstance(candidate, str) else candidate)._replace(score=score)


vec = kw  # a KNN candidate: the score is the cosine similarity


def ids(hits: list[Ranked]) -> list[str]:
    return [h.id for h in hits]


KEYWORD = [kw("a", 5.0), kw("b", 3.0)]
VECTOR = [vec("c", 0.9), vec("a", 0.4)]


def test_keyword_mode_uses_keyword_candidates_only() -> None:
    hits = rank(SearchMode.KEYWORD, 10, keyword=KEYWORD, vector=VECTOR, options=PLAIN, now=NOW)
    assert ids(hits) == ["a", "b"]
    assert [h.score for h in hits] == [5.0, 3.0]
    assert hits[1].parts == ScoreParts(keyword=3.0)


def test_vector_mode_uses_vector_candidates_only() -> None:
    hits = rank(SearchMode.VECTOR, 10, keyword=KEYWORD, vector=VECTOR, options=PLAIN, now=NOW)
    assert ids(hits) == ["c", "a"]
    assert [h.score for h in hits] == [0.9, 0.4]
    assert hits[0].parts == ScoreParts(vector=0.9)


def test_hybrid_fuses_and_carries_both_parts() -> None:
    keyword = [kw("a", 5.0), kw("b", 3.0)]
    vector = [vec("a", 0.8), vec("c", 0.6)]
    hits = rank(SearchMode.HYBRID, 10, keyword=keyword, vector=vector, options=PLAIN, now=NOW)
    assert ids(hits) == ["a", "b", "c"]
    assert hits[0].score == pytest.approx(1.0)  # first in both rankings
    assert hits[0].parts == ScoreParts(keyword=5.0, vector=0.8, decay=None)
    by_id = {h.id: h for h in hits}
    assert by_id["b"].parts == ScoreParts(keyword=3.0, vector=None)
    assert by_id["c"].parts == ScoreParts(keyword=None, vector=0.6)
    # second in one ranking only: (1/62) / (2/61) with rrf_k=60
    assert by_id["b"].score == pytest.approx((1 / 62) / (2 / 61))


def test_hybrid_weights_and_linear_fusion() -> None:
    keyword = [kw("k", 9.0), kw("v", 1.0)]
    vector = [vec("v", 0.9), vec("k", 0.1)]
    kw_heavy = with_overrides(PLAIN, keyword_weight=3.0)
    assert ids(rank(SearchMode.HYBRID, 2, keyword=keyword, vector=vector, options=kw_heavy,
                    now=NOW)) == ["k", "v"]
    vec_heavy = with_overrides(PLAIN, vector_weight=3.0)
    assert ids(rank(SearchMode.HYBRID, 2, keyword=keyword, vector=vector, options=vec_heavy,
                    now=NOW)) == ["v", "k"]
    linear = with_overrides(PLAIN, fusion=Fusion.LINEAR, keyword_weight=1.0, vector_weight=1.0)
    hits = rank(SearchMode.HYBRID, 2, keyword=keyword, vector=vector, options=linear, now=NOW)
    assert [h.score for h in hits] == pytest.approx([0.5, 0.5])


def test_decay_off_leaves_scores_and_parts_alone() -> None:
    old = mem("old", last_accessed=NOW - 1000 * DAY, importance=0.0)
    hits = rank(SearchMode.KEYWORD, 10, keyword=[kw(old, 4.0), kw("new", 2.0)],
                options=RankingOptions(decay_weight=0.0), now=NOW)
    assert ids(hits) == ["old", "new"]
    assert [h.score for h in hits] == [4.0, 2.0]
    assert all(h.parts.decay is None for h in hits)


def test_decay_demotes_an_old_unrecalled_unimportant_memory() -> None:
    policy = DecayPolicy(strength_days=30.0, reinforcement=1.0, importance_weight=0.3)
    options = RankingOptions(decay_weight=1.0, decay=policy)
    old = mem("old", last_accessed=NOW - 365 * DAY, access_count=0, importance=0.0)
    fresh = mem("fresh", last_accessed=NOW, access_count=0, importance=0.0)
    # the old one comes first and ties with the fresh one on relevance
    hits = rank(SearchMode.VECTOR, 10, vector=[vec(old, 0.8), vec(fresh, 0.8)],
                options=options, now=NOW)
    assert ids(hits) == ["fresh", "old"]
    by_id = {h.id: h for h in hits}
    assert by_id["fresh"].parts.decay == pytest.approx(0.7)
    assert by_id["old"].parts.decay == pytest.approx(0.7 * math.exp(-365 / 30))
    assert by_id["fresh"].score == pytest.approx(0.8 * 0.7)
    assert by_id["old"].score == pytest.approx(0.8 * 0.7 * math.exp(-365 / 30))
    assert by_id["old"].parts.vector == 0.8  # the relevance part itself is untouched


def test_partial_decay_weight() -> None:
    options = RankingOptions(decay_weight=0.5, decay=DecayPolicy(importance_weight=0.0))
    old = mem("old", last_accessed=NOW - 30 * DAY, importance=0.0)
    hit = rank(SearchMode.VECTOR, 1, vector=[vec(old, 0.6)], options=options, now=NOW)[0]
    assert hit.parts.decay == pytest.approx(math.exp(-1))
    assert hit.score == pytest.approx(0.6 * (0.5 + 0.5 * math.exp(-1)))


def test_min_score_filters() -> None:
    hits = rank(SearchMode.KEYWORD, 10, keyword=[kw("a", 5.0), kw("b", 3.0), kw("c", 1.0)],
                options=RankingOptions(min_score=3.0), now=NOW)
    assert ids(hits) == ["a", "b"]
    assert rank(SearchMode.KEYWORD, 10, keyword=[kw("a", 5.0)],
                options=RankingOptions(min_score=6.0), now=NOW) == []


def test_min_similarity_filters_vector_candidates() -> None:
    vector = [vec("close", 0.9), vec("far", 0.2)]
    options = RankingOptions(min_similarity=0.5)
    assert ids(rank(SearchMode.VECTOR, 10, vector=vector, options=options, now=NOW)) == ["close"]
    # in hybrid a keyword match stays, but without a vector part
    hits = rank(SearchMode.HYBRID, 10, keyword=[kw("far", 2.0)], vector=vector,
                options=options, now=NOW)
    assert set(ids(hits)) == {"close", "far"}
    far = next(h for h in hits if h.id == "far")
    assert far.parts == ScoreParts(keyword=2.0, vector=None)
    # keyword candidates are not filtered by similarity
    assert ids(rank(SearchMode.KEYWORD, 10, keyword=[kw("x", 0.1)], options=options,
                    now=NOW)) == ["x"]


def test_dedupe_drops_near_identical_lower_hits() -> None:
    vector = [
        vec(mem("a", "I love hiking in the Swiss Alps"), 0.9),
        vec(mem("b", "I love hiking in the Swiss Alps!"), 0.85),
        vec(mem("c", "My cat is called Sardinha"), 0.5),
        vec(mem("d", "i LOVE hiking, in the swiss alps"), 0.4),
    ]
    plain = rank(SearchMode.VECTOR, 10, vector=vector, options=PLAIN, now=NOW)
    assert ids(plain) == ["a", "b", "c", "d"]
    deduped = rank(SearchMode.VECTOR, 10, vector=vector, options=RankingOptions(dedupe=True),
                   now=NOW)
    assert ids(deduped) == ["a", "c"]


def test_dedupe_keeps_distinct_hits_and_threshold_counts() -> None:
    vector = [
        vec(mem("a", "one two three four five"), 0.9),
        vec(mem("b", "one two three four six"), 0.8),  # Jaccard 4/6
    ]
    strict = RankingOptions(dedupe=True, dedupe_threshold=0.9)
    assert ids(rank(SearchMode.VECTOR, 10, vector=vector, options=strict, now=NOW)) == ["a", "b"]
    loose = RankingOptions(dedupe=True, dedupe_threshold=0.6)
    assert ids(rank(SearchMode.VECTOR, 10, vector=vector, options=loose, now=NOW)) == ["a"]


def test_dedupe_happens_before_k() -> None:
    vector = [vec(mem("a", "same words"), 0.9), vec(mem("b", "same words"), 0.8),
              vec(mem("c", "other words entirely"), 0.7)]
    hits = rank(SearchMode.VECTOR, 2, vector=vector, options=RankingOptions(dedupe=True),
                now=NOW)
    assert ids(hits) == ["a", "c"]


def test_context_credit_goes_to_the_previous_candidate() -> None:
    before = mem("before")
    reply = mem("reply", previous_id="before")
    orphan = mem("orphan", previous_id="not-a-candidate")
    lonely = mem("lonely")  # its follower exists but is not a candidate
    memories = {m.id: m for m in (before, reply, orphan, lonely)}
    base = {"reply": 4.0, "orphan": 2.5, "before": 1.0, "lonely": 1.0}
    scores = _credit_previous(base, memories, 0.5)
    # credit added, then everything divided by 1 + credit so fused scores stay in (0, 1]
    assert scores == pytest.approx(
        {"reply": 4.0 / 1.5, "orphan": 2.5 / 1.5, "before": 3.0 / 1.5, "lonely": 1.0 / 1.5})
    assert "not-a-candidate" not in scores


def test_context_credit_uses_the_followers_own_score() -> None:
    chain = [mem("t1"), mem("t2", previous_id="t1"), mem("t3", previous_id="t2")]
    scores = _credit_previous({"t3": 2.0, "t2": 2.0, "t1": 2.0}, {m.id: m for m in chain}, 0.5)
    # t2 gets half of t3's base score, t1 half of t2's base score (not t2's credited one)
    assert scores == pytest.approx({"t3": 2.0 / 1.5, "t2": 3.0 / 1.5, "t1": 3.0 / 1.5})


def test_context_credit_applies_to_hybrid_only() -> None:
    before = mem("before")
    reply = mem("reply", previous_id="before")
    other = mem("other")
    keyword = [kw(reply, 4.0), kw(other, 3.0), kw(before, 1.0)]
    vector = [vec(reply, 0.9), vec(other, 0.8), vec(before, 0.1)]
    options = RankingOptions(context_credit=0.5)
    single = rank(SearchMode.KEYWORD, 10, keyword=keyword, options=options, now=NOW)
    assert {h.id: h.score for h in single} == {"reply": 4.0, "other": 3.0, "before": 1.0}
    fused = rank(SearchMode.HYBRID, 10, keyword=keyword, vector=vector, options=options,
                 now=NOW)
    plain = rank(SearchMode.HYBRID, 10, keyword=keyword, vector=vector, options=PLAIN, now=NOW)
    assert ids(plain) == ["reply", "other", "before"]
    # the reply lifted what it answers above the unrelated candidate
    assert ids(fused).index("before") < ids(fused).index("other")
    assert all(0 < h.score <= 1 for h in fused)
    # the parts still show the candidate's own scores
    assert next(h for h in fused if h.id == "before").parts.keyword == 1.0


def test_k_truncates() -> None:
    keyword = [kw(f"m{i}", 10.0 - i) for i in range(8)]
    assert ids(rank(SearchMode.KEYWORD, 3, keyword=keyword, options=PLAIN, now=NOW)) == [
        "m0", "m1", "m2"]
    assert len(rank(SearchMode.KEYWORD, 100, keyword=keyword, options=PLAIN, now=NOW)) == 8


def test_ties_keep_candidate_order() -> None:
    forward = [kw("x", 1.0), kw("y", 1.0), kw("z", 1.0)]
    assert ids(rank(SearchMode.KEYWORD, 10, keyword=forward, options=PLAIN, now=NOW)) == [
        "x", "y", "z"]
    assert ids(rank(SearchMode.KEYWORD, 10, keyword=forward[::-1], options=PLAIN, now=NOW)) == [
        "z", "y", "x"]
    # in hybrid a keyword-only and a vector-only doc at the same rank tie: keyword first
    hits = rank(SearchMode.HYBRID, 10, keyword=[kw("k", 1.0)], vector=[vec("v", 0.5)],
                options=PLAIN, now=NOW)
    assert ids(hits) == ["k", "v"]
    assert hits[0].score == pytest.approx(hits[1].score)


def test_empty_candidates() -> None:
    for mode in SearchMode:
        assert rank(mode, 5, options=PLAIN, now=NOW) == []


def test_with_overrides_ignores_none() -> None:
    assert with_overrides(PLAIN, min_score=None, dedupe=None) is PLAIN
    changed = with_overrides(PLAIN, min_score=0.2, dedupe=None)
    assert changed.min_score == 0.2
    assert changed.dedupe is False
    assert PLAIN.min_score is None


def test_zero_score_keyword_matches_are_not_evidence() -> None:
    # A BM25 score of 0 means the query matched only words every memory has (the user's own
    # name); in rank fusion that rank would otherwise still earn credit.
    real, noise = mem("real"), mem("noise")
    keyword = [kw(real, 0.08), kw(noise, 0.0)]
    vector = [vec(noise, 0.6), vec(real, 0.2)]
    hits = rank(SearchMode.HYBRID, 10, keyword=keyword, vector=vector, options=PLAIN, now=NOW)
    assert ids(hits) == ["real", "noise"]
    assert next(h for h in hits if h.id == "noise").parts.keyword is None
    only = rank(SearchMode.KEYWORD, 10, keyword=keyword, options=PLAIN, now=NOW)
    assert ids(only) == ["real"]
