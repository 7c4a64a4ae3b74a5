"""Rank fusion: reciprocal-rank fusion, min-max scaling and linear fusion. Pure functions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memory_engine.retrieval._fusion import linear_fusion, min_max, reciprocal_rank_fusion


def test_rrf_ranks_start_at_one() -> None:
    # One ranking, weight 1, k=60: first doc 1/61, second 1/62; normalised by 1/61.
    scores = reciprocal_rank_fusion([["a", "b", "c"]], k=60)
    assert scores["a"] == pytest.approx(1.0)
    assert scores["b"] == pytest.approx(61 / 62)
    assert scores["c"] == pytest.approx(61 / 63)


def test_rrf_first_in_every_list_scores_one() -> None:
    scores = reciprocal_rank_fusion([["a", "b", "c"], ["a", "c", "b"], ["a", "b"]], k=10)
    assert scores["a"] == pytest.approx(1.0)
    assert all(0 < s < 1 for doc, s in scores.items() if doc != "a")


def test_rrf_sums_over_lists() -> None:
    k = 10
    scores = reciprocal_rank_fusion([["a", "b"], ["b", "a"]], k=k)
    both = 1 / (k + 1) + 1 / (k + 2)
    assert scores["a"] == pytest.approx(both / (2 / (k + 1)))
    assert scores["a"] == pytest.approx(scores["b"])


def test_rrf_doc_in_one_list_only() -> None:
    k = 60
    scores = reciprocal_rank_fusion([["a", "b"], ["a", "c"]], k=k)
    assert set(scores) == {"a", "b", "c"}
    # b is second in one list and absent from the other: half of a second-place doc
    assert scores["b"] == pytest.approx((1 / (k + 2)) / (2 / (k + 1)))
    assert scores["b"] == pytest.approx(scores["c"])
    assert scores["b"] < 0.5


def test_rrf_weights() -> None:
    k = 10
    scores = reciprocal_rank_fusion([["kw", "vec"], ["vec", "kw"]], k=k, weights=[3.0, 1.0])
    assert scores["kw"] > scores["vec"]
    best = 4.0 / (k + 1)
    assert scores["kw"] == pytest.approx((3 / (k + 1) + 1 / (k + 2)) / best)
    assert scores["vec"] == pytest.approx((3 / (k + 2) + 1 / (k + 1)) / best)
    # equal weights give the same result as no weights
    assert reciprocal_rank_fusion([["a", "b"], ["b"]], k=5, weights=[2.0, 2.0]) == pytest.approx(
        reciprocal_rank_fusion([["a", "b"], ["b"]], k=5)
    )


def test_rrf_zero_weight_ignores_a_list() -> None:
    scores = reciprocal_rank_fusion([["a", "b"], ["b", "a"]], k=10, weights=[1.0, 0.0])
    assert scores["a"] == pytest.approx(1.0)
    assert scores["b"] == pytest.approx(11 / 12)


def test_rrf_k_flattens_differences() -> None:
    ranking = [[f"d{i}" for i in range(10)]]
    small = reciprocal_rank_fusion(ranking, k=1)
    large = reciprocal_rank_fusion(ranking, k=1000)
    assert small["d0"] == pytest.approx(1.0)
    assert large["d0"] == pytest.approx(1.0)
    assert small["d9"] == pytest.approx(2 / 11)
    assert large["d9"] == pytest.approx(1001 / 1010)
    assert small["d9"] < large["d9"]
    assert small["d0"] - small["d1"] > large["d0"] - large["d1"]


def test_rrf_weight_length_mismatch() -> None:
    with pytest.raises(ValueError, match="one weight per ranking"):
        reciprocal_rank_fusion([["a"], ["b"]], weights=[1.0])
    with pytest.raises(ValueError, match="one weight per ranking"):
        reciprocal_rank_fusion([["a"]], weights=[1.0, 1.0])


def test_rrf_empty() -> None:
    assert reciprocal_rank_fusion([[], []]) == {}
    assert reciprocal_rank_fusion([]) == {}


@st.composite
def _rankings(draw: st.DrawFn) -> tuple[list[list[str]], list[float], int]:
    docs = [f"d{i}" for i in range(draw(st.integers(1, 8)))]
    n_lists = draw(st.integers(1, 4))
    rankings = [
        draw(st.permutations(docs).flatmap(
            lambda p: st.integers(0, len(p)).map(lambda n, p=p: list(p[:n]))
        ))
        for _ in range(n_lists)
    ]
    weights = draw(st.lists(st.floats(0.01, 10.0), min_size=n_lists, max_size=n_lists))
    k = draw(st.integers(1, 200))
    return rankings, weights, k


def _dominates(a: str, b: str, rankings: list[list[str]]) -> bool:
    """Whether ``a`` is ranked above ``b`` in every list (absent counts as below all)."""
    for ranking in rankings:
        if b in ranking and (a not in ranking or ranking.index(a) > ranking.index(b)):
            return False
    return True


@given(_rankings())
def test_rrf_property_bounds_and_dominance(case: tuple[list[list[str]], list[float], int]) -> None:
    rankings, weights, k = case
    scores = reciprocal_rank_fusion(rankings, k=k, weights=weights)
    assert set(scores) == {d for r in rankings for d in r}
    for score in scores.values():
        assert 0 < score <= 1 + 1e-12
    for a in scores:
        for b in scores:
            if a != b and _dominates(a, b, rankings):
                assert scores[a] >= scores[b] - 1e-12, (a, b, scores)


def test_min_max() -> None:
    assert min_max({}) == {}
    assert min_max({"a": 3.0}) == {"a": 1.0}
    assert min_max({"a": 2.0, "b": 2.0}) == {"a": 1.0, "b": 1.0}
    scaled = min_max({"a": 10.0, "b": 5.0, "c": 0.0})
    assert scaled == pytest.approx({"a": 1.0, "b": 0.5, "c": 0.0})
    assert min_max({"a": -0.2, "b": 0.8}) == pytest.approx({"a": 0.0, "b": 1.0})


def test_linear_fusion_missing_part_counts_zero() -> None:
    fused = linear_fusion({"a": 12.0, "b": 4.0, "c": 8.0}, {"a": 0.9, "d": 0.1})
    assert set(fused) == {"a", "b", "c", "d"}
    assert fused["a"] == pytest.approx(1.0)  # best on both sides
    assert fused["b"] == pytest.approx(0.0)  # worst keyword, no vector
    assert fused["c"] == pytest.approx(0.5 * 0.5)  # half-way keyword, no vector
    assert fused["d"] == pytest.approx(0.0)  # worst vector, no keyword


def test_linear_fusion_weights() -> None:
    keyword = {"kw": 10.0, "vec": 0.0}
    vector = {"kw": 0.1, "vec": 0.9}
    even = linear_fusion(keyword, vector)
    assert even["kw"] == pytest.approx(0.5)
    assert even["vec"] == pytest.approx(0.5)
    kw_heavy = linear_fusion(keyword, vector, keyword_weight=3.0, vector_weight=1.0)
    assert kw_heavy["kw"] == pytest.approx(0.75)
    assert kw_heavy["vec"] == pytest.approx(0.25)
    vec_only = linear_fusion(keyword, vector, keyword_weight=0.0, vector_weight=2.0)
    assert vec_only == pytest.approx({"kw": 0.0, "vec": 1.0})


def test_linear_fusion_one_side_empty() -> None:
    assert linear_fusion({}, {"a": 0.3, "b": 0.6}) == pytest.approx({"a": 0.0, "b": 0.5})
    assert linear_fusion({}, {}) == {}


@given(
    st.dictionaries(st.sampled_from("abcdef"), st.floats(0, 100), max_size=6),
    st.dictionaries(st.sampled_from("abcdef"), st.floats(-1, 1), max_size=6),
    st.floats(0.01, 5), st.floats(0.01, 5),
)
def test_linear_fusion_in_unit_interval(
    keyword: dict[str, float], vector: dict[str, float], kw_w: float, vec_w: float
) -> None:
    fused = linear_fusion(keyword, vector, keyword_weight=kw_w, vector_weight=vec_w)
    assert set(fused) == set(keyword) | set(vector)
    assert all(-1e-12 <= s <= 1 + 1e-12 for s in fused.values())


def test_linear_fusion_lists_keyword_documents_then_vector_only_ones() -> None:
    """The order ties keep after a stable sort, as the search script keeps them: the keyword
    candidates in their order, then the vector-only ones in theirs (not a set's hash order,
    which changes from one process to the next for str keys)."""
    keyword = {f"k{i}": 1.0 for i in range(20)}
    vector = {**{f"v{i}": 0.5 for i in range(20)}, "k3": 0.5}
    fused = linear_fusion(keyword, vector)
    assert list(fused) == [*keyword, *(f"v{i}" for i in range(20))]
