"""The decay scorer: forgetting curve, reinforcement by recall, importance floor. Pure."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from memory_engine.lifecycle.decay import (
    DAY,
    DecayPolicy,
    decay_factor,
    decay_score,
    retention,
    strength,
)

NOW = 1_700_000_000.0
POLICY = DecayPolicy(strength_days=30.0, reinforcement=1.0, importance_weight=0.3)


def test_retention_is_one_when_just_accessed() -> None:
    assert retention(NOW, 0, NOW, POLICY) == 1.0
    assert retention(NOW, 7, NOW, POLICY) == 1.0


def test_retention_is_one_over_e_after_one_strength() -> None:
    assert retention(NOW - 30 * DAY, 0, NOW, POLICY) == pytest.approx(math.exp(-1))
    assert retention(NOW - 60 * DAY, 0, NOW, POLICY) == pytest.approx(math.exp(-2))
    short = DecayPolicy(strength_days=2.0)
    assert retention(NOW - 2 * DAY, 0, NOW, short) == pytest.approx(math.exp(-1))


def test_strength_grows_with_every_recall() -> None:
    assert strength(0, POLICY) == 30.0
    assert strength(1, POLICY) == 60.0
    assert strength(4, POLICY) == 150.0
    half = DecayPolicy(strength_days=10.0, reinforcement=0.5)
    assert strength(2, half) == pytest.approx(20.0)
    assert strength(5, DecayPolicy(reinforcement=0.0)) == 30.0
    assert strength(-3, POLICY) == 30.0  # a negative count counts as none
    # a memory recalled twice keeps 1/e after three strengths of its base
    assert retention(NOW - 90 * DAY, 2, NOW, POLICY) == pytest.approx(math.exp(-1))


def test_future_last_accessed_counts_as_fresh() -> None:
    assert retention(NOW + 5 * DAY, 0, NOW, POLICY) == 1.0
    assert decay_score(NOW + 5 * DAY, 0, 0.0, NOW, POLICY) == pytest.approx(0.7)


def test_decay_score_blends_retention_and_importance() -> None:
    assert decay_score(NOW, 0, 0.0, NOW, POLICY) == pytest.approx(0.7)
    assert decay_score(NOW, 0, 1.0, NOW, POLICY) == pytest.approx(1.0)
    old = decay_score(NOW - 30 * DAY, 0, 0.5, NOW, POLICY)
    assert old == pytest.approx(0.7 * math.exp(-1) + 0.3 * 0.5)
    only_time = DecayPolicy(importance_weight=0.0)
    assert decay_score(NOW - 30 * DAY, 0, 1.0, NOW, only_time) == pytest.approx(math.exp(-1))
    only_importance = DecayPolicy(importance_weight=1.0)
    assert decay_score(NOW - 3000 * DAY, 0, 0.4, NOW, only_importance) == pytest.approx(0.4)
    assert decay_score(NOW, 0, 0.4, NOW, only_importance) == pytest.approx(0.4)


@pytest.mark.parametrize("importance", [0.0, 0.25, 0.5, 1.0])
def test_decay_score_falls_to_the_importance_floor(importance: float) -> None:
    forgotten = decay_score(NOW - 1e6 * DAY, 0, importance, NOW, POLICY)
    assert forgotten == pytest.approx(0.3 * importance, abs=1e-12)
    assert 0.0 <= forgotten <= 1.0


@given(
    st.floats(0, 1e4), st.integers(0, 1000), st.floats(0, 1),
    st.floats(0.01, 1e3), st.floats(0, 10), st.floats(0, 1),
)
def test_decay_score_in_unit_interval(
    days: float, count: int, importance: float, s0: float, r: float, w: float
) -> None:
    policy = DecayPolicy(strength_days=s0, reinforcement=r, importance_weight=w)
    score = decay_score(NOW - days * DAY, count, importance, NOW, policy)
    assert -1e-12 <= score <= 1 + 1e-12
    assert score >= w * importance - 1e-12


def test_decay_factor() -> None:
    assert decay_factor(0.2, 0.0) == 1.0  # weight 0 ignores decay
    assert decay_factor(0.2, 1.0) == pytest.approx(0.2)
    assert decay_factor(0.0, 1.0) == 0.0
    assert decay_factor(0.2, 0.5) == pytest.approx(0.6)
    assert decay_factor(1.0, 0.7) == pytest.approx(1.0)  # a fully present memory keeps its score


@pytest.mark.parametrize(
    "kwargs",
    [{"strength_days": 0.0}, {"strength_days": -1.0}, {"strength_days": math.nan},
     {"reinforcement": -0.1}, {"importance_weight": -0.01}, {"importance_weight": 1.01},
     {"importance_weight": math.nan}],
)
def test_policy_rejects_bad_values(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        DecayPolicy(**kwargs)


def test_policy_accepts_edges() -> None:
    DecayPolicy(strength_days=1e-9, reinforcement=0.0, importance_weight=0.0)
    DecayPolicy(importance_weight=1.0)


@given(
    st.floats(0, 1e4), st.floats(0, 1e4), st.integers(0, 100), st.floats(0.1, 365),
    st.floats(0, 5),
)
def test_retention_never_rises_with_time(
    days_a: float, days_b: float, count: int, s0: float, r: float
) -> None:
    policy = DecayPolicy(strength_days=s0, reinforcement=r)
    earlier, later = sorted([days_a, days_b])
    kept_earlier = retention(NOW - earlier * DAY, count, NOW, policy)
    kept_later = retention(NOW - later * DAY, count, NOW, policy)
    assert 0.0 <= kept_later <= kept_earlier <= 1.0


@given(
    st.floats(0, 1e4), st.integers(0, 1000), st.integers(0, 1000), st.floats(0.1, 365),
    st.floats(0, 5),
)
def test_retention_never_falls_with_recalls(
    days: float, count_a: int, count_b: int, s0: float, r: float
) -> None:
    policy = DecayPolicy(strength_days=s0, reinforcement=r)
    fewer, more = sorted([count_a, count_b])
    last = NOW - days * DAY
    assert retention(last, more, NOW, policy) >= retention(last, fewer, NOW, policy)
