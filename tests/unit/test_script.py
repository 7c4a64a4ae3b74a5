"""The search script's arguments and reply, without Redis (``retrieval._script``). That the
script ranks as ``rank`` does is checked on real searches in
``tests/integration/test_search_script.py``."""

from __future__ import annotations

import pytest

from memory_engine.exceptions import StoreError
from memory_engine.models import ScoreParts, SearchMode
from memory_engine.retrieval._ranking import Fusion, RankingOptions
from memory_engine.retrieval._script import read_reply, script_args, script_ranks

DEFAULT = RankingOptions(context_credit=0.5)


@pytest.mark.parametrize(("mode", "options", "ranks"), [
    (SearchMode.HYBRID, DEFAULT, True),
    (SearchMode.VECTOR, DEFAULT, True),
    (SearchMode.KEYWORD, DEFAULT, True),
    (SearchMode.HYBRID, RankingOptions(fusion=Fusion.LINEAR, context_credit=0.5), True),
    (SearchMode.VECTOR, RankingOptions(fusion=Fusion.LINEAR), True),
    (SearchMode.HYBRID, RankingOptions(decay_weight=0.2), False),
    (SearchMode.HYBRID, RankingOptions(dedupe=True), False),
    (SearchMode.HYBRID, RankingOptions(min_score=0.1), False),
    (SearchMode.VECTOR, RankingOptions(min_similarity=0.1), False),
])
def test_the_script_ranks_only_what_it_mirrors(
    mode: SearchMode, options: RankingOptions, ranks: bool
) -> None:
    assert script_ranks(mode, options) is ranks


def test_arguments_carry_the_ranking_options_and_both_commands() -> None:
    args = script_args(
        owner_prefix="p:mem:{alice}:", recall_key="p:acc:{alice}", mode=SearchMode.HYBRID,
        options=RankingOptions(rrf_k=30, keyword_weight=1.5, vector_weight=0.25,
                               context_credit=0.5),
        k=7, keyword=["FT.SEARCH", "ix", "kw"],
        vector=["FT.SEARCH", "ix", "vec", "PARAMS"], exact_limit=500,
        search_filter="@user_id:{alice}", exact_query="exact",
    )
    assert args == [
        1, "p:acc:{alice}", "p:mem:{alice}:", "hybrid", 1, 7, 30, "1.5", "0.25", "0.5", 0,
        500, "@user_id:{alice}", "exact", "rrf",
        3, "FT.SEARCH", "ix", "kw", 4, "FT.SEARCH", "ix", "vec", "PARAMS",
    ]
    keyword_only = script_args(
        owner_prefix="o", recall_key="r", mode=SearchMode.KEYWORD,
        options=RankingOptions(decay_weight=0.5, fusion=Fusion.LINEAR), k=3,
        keyword=["FT.SEARCH"], vector=None, exact_limit=500,
    )
    # not ranked by the script: twice k prefetched, every candidate's recall entry asked
    # for; no vector search, so nothing to count for it
    assert keyword_only[4:6] == [0, 6]
    assert keyword_only[10:12] == [1, 0]
    assert keyword_only[-4:] == ["linear", 1, "FT.SEARCH", 0]


def test_an_exact_reply_is_the_final_ranking() -> None:
    reply = [
        [b"m2", b"m1"], [b"0.75", b"0.5"], [b"3.25", None], [b"0.25", b"0.5"],
        [[b"alice"], [b"alice"]], [b"2|100.5", None],
    ]
    got = read_reply(reply)
    assert [(r.id, r.score, r.parts) for r in got.ranked] == [
        ("m2", 0.75, ScoreParts(keyword=3.25, vector=0.75)),
        ("m1", 0.5, ScoreParts(keyword=None, vector=0.5)),
    ]
    assert got.rows == {"m2": ([b"alice"], b"2|100.5"), "m1": ([b"alice"], None)}
    assert got.keyword is None
    assert got.vector is None
    assert got.recalls is None


def test_a_prefetch_reply_carries_the_candidates_and_recalls() -> None:
    reply = [
        [b"m1"], [b"1"], [None], [b"0.5"], [[b"alice"]], [None],
        [0], [1, b"p:mem:{alice}:m1", [b"vector_distance", b"0.5"]], [b"m1"], [b"1|2.0"],
    ]
    got = read_reply(reply)
    assert got.vector == reply[7]
    assert got.keyword == [0]
    assert got.recalls == {"m1": b"1|2.0"}


def test_an_unreadable_reply_is_a_store_error() -> None:
    with pytest.raises(StoreError, match="unreadable reply"):
        read_reply([[b"m1"], [b"not a number"], [None], [None], [[]], [None]])
    with pytest.raises(StoreError, match="unreadable reply"):
        read_reply([[b"m1", b"m2"], [b"1"], [None], [None], [[]], [None]])
