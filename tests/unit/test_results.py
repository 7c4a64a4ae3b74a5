"""Search replies -> ranking candidates -> hits, and what each search asks Redis for. No I/O."""

from __future__ import annotations

import numpy as np
import pytest

from memory_engine import EngineConfig
from memory_engine._core import EngineCore
from memory_engine.exceptions import StoreError
from memory_engine.models import Kind, Memory, ScoreParts
from memory_engine.retrieval._ranking import Candidate
from memory_engine.retrieval._results import (
    keyword_candidates,
    vector_candidates,
    with_recall_stats,
)
from memory_engine.store._records import MEMORY_FIELDS
from tests.fakes import HashingEmbedder

OWNER = "me:mem:{alice}:"


def test_keyword_reply_becomes_candidates_with_scores() -> None:
    reply = [2, b"me:mem:{alice}:m1", b"3.5", [b"previous_id", b""],
             b"me:mem:{alice}:m2", b"1.25", [b"previous_id", b"m1"]]
    assert keyword_candidates(reply, OWNER) == [
        Candidate("m1", 3.5, None), Candidate("m2", 1.25, "m1")]


def test_vector_reply_scores_are_cosine_similarity() -> None:
    reply = [1, b"me:mem:{alice}:m1", [b"previous_id", b"", b"vector_distance", b"0.25"]]
    (candidate,) = vector_candidates(reply, OWNER)
    assert candidate.id == "m1"
    assert candidate.score == pytest.approx(0.75)


def test_decay_and_dedupe_fields_are_read_when_returned() -> None:
    reply = [1, b"me:mem:{alice}:m1", b"2", [
        b"previous_id", b"", b"last_accessed", b"100.5", b"access_count", b"3",
        b"importance", b"0.9", b"text", b"hello"]]
    assert keyword_candidates(reply, OWNER) == [
        Candidate("m1", 2.0, None, "hello", 100.5, 3, 0.9)]


@pytest.mark.parametrize("key", [b"me:mem:{bob}:m1", b"me:mem:{alice2}:m1", b"other:m1"])
def test_a_key_outside_the_users_key_space_fails_closed(key: bytes) -> None:
    with pytest.raises(StoreError, match="isolation check failed"):
        keyword_candidates([1, key, b"1", [b"previous_id", b""]], OWNER)


def test_recall_stats_fold_into_candidates() -> None:
    candidates = [Candidate("a", 1.0, last_accessed=50.0, access_count=1), Candidate("b", 0.5)]
    folded = with_recall_stats(candidates, {"a": b"2|80.0", "b": None})
    assert (folded[0].access_count, folded[0].last_accessed) == (3, 80.0)
    assert folded[1] == candidates[1]


def _core(**overrides: object) -> EngineCore:
    return EngineCore(EngineConfig(index_name="ix", key_prefix="me").with_(**overrides),
                      HashingEmbedder(dims=8))


def _memory(memory_id: str, user_id: str) -> Memory:
    return Memory(id=memory_id, user_id=user_id, text="t", kind=Kind.TURN, session_id=None,
                  role=None, name=None, created_at=1.0, last_accessed=1.0, access_count=0,
                  importance=0.5, metadata={})


def _returned(command: list[object]) -> list[object]:
    at = command.index("RETURN")
    count = command[at + 1]
    assert isinstance(count, int)
    return command[at + 2:at + 2 + count]


def test_search_commands_return_only_what_ranking_reads() -> None:
    core = _core()
    plan = core.plan_search("alice", "hiking plans", k=5, mode="hybrid", clock=1.0)
    keyword, vector = core.search_commands(plan, np.full(8, 0.1, dtype=np.float32))
    assert _returned(keyword) == ["previous_id"]
    assert _returned(vector) == ["previous_id", "vector_distance"]
    plan = core.plan_search("alice", "hiking plans", k=5, mode="hybrid", clock=1.0,
                            decay_weight=0.3, dedupe=True)
    keyword, _ = core.search_commands(plan, np.full(8, 0.1, dtype=np.float32))
    assert _returned(keyword) == [
        "previous_id", "last_accessed", "access_count", "importance", "text"]
    args = core.search_args(plan, np.full(8, 0.1, dtype=np.float32))
    assert args is not None
    # not ranked by the script (decay, de-duplication): 2k prefetched, every recall entry
    assert args[3:6] == ["hybrid", 0, 10]
    assert args[10] == 1


def test_previous_id_is_read_only_where_context_credit_uses_it() -> None:
    """RediSearch opens a candidate's hash for any stored field it returns; a KNN's distance
    needs none. ``previous_id`` serves hybrid context credit alone."""
    vector = np.full(8, 0.1, dtype=np.float32)
    core = _core()
    (only,) = core.search_commands(
        core.plan_search("alice", "hiking", k=5, mode="vector", clock=1.0), vector)
    assert _returned(only) == ["vector_distance"]
    plan = core.plan_search("alice", "hiking", k=5, mode="vector", clock=1.0, decay_weight=0.3)
    (only,) = core.search_commands(plan, vector)
    assert _returned(only) == ["last_accessed", "access_count", "importance", "vector_distance"]
    # a keyword reply keeps one field: with none (NOCONTENT) its rows take another shape
    (only,) = core.search_commands(
        core.plan_search("alice", "hiking", k=5, mode="keyword", clock=1.0), None)
    assert _returned(only) == ["previous_id"]
    no_credit = _core(context_credit=0.0)
    keyword, knn = no_credit.search_commands(
        no_credit.plan_search("alice", "hiking", k=5, mode="hybrid", clock=1.0), vector)
    assert (_returned(keyword), _returned(knn)) == (["previous_id"], ["vector_distance"])


def test_hits_skip_memories_deleted_since_and_fail_closed_on_another_user() -> None:
    core = _core()
    plan = core.plan_search("alice", "hiking", k=5, mode="hybrid", clock=1.0)
    ranked = core.ranked(plan, [Candidate("a", 2.0), Candidate("b", 1.0)], [])
    hits = core.hits(plan, ranked, {"a": None, "b": _memory("b", "alice")})
    assert [h.memory.id for h in hits] == ["b"]
    with pytest.raises(StoreError, match="isolation check failed"):
        core.hits(plan, ranked, {"a": _memory("a", "bob"), "b": None})


def _row(user_id: str, text: str) -> list[bytes]:
    """An HMGET row of ``MEMORY_FIELDS`` as Redis returns it."""
    values = {"user_id": user_id, "kind": "turn", "text": text, "created_at": "1.5",
              "last_accessed": "2.5", "access_count": "1", "importance": "0.5",
              "metadata": "{}"}
    return [values.get(name, "").encode() for name in MEMORY_FIELDS]


def test_final_hits_come_straight_from_a_ranked_reply() -> None:
    core = _core()
    plan = core.plan_search("alice", "hiking", k=5, mode="hybrid", clock=1.0)
    gone = [None] * len(MEMORY_FIELDS)  # deleted between the search and the read
    reply = [[b"a", b"b", b"c"], [b"0.75", b"0.5", b"0.25"], [b"3.5", None, b"1"],
             [b"0.25", b"0.5", None], [_row("alice", "first"), gone, _row("alice", "third")],
             [b"2|9.5", None, None]]
    hits = core.final_hits(plan, reply)
    assert hits is not None
    assert [(h.memory.id, h.memory.text, h.score) for h in hits] == [
        ("a", "first", 0.75), ("c", "third", 0.25)]
    assert hits[0].parts == ScoreParts(keyword=3.5, vector=0.75)
    assert hits[1].parts == ScoreParts(keyword=1.0, vector=None)
    # the recall entry counts: 1 stored + 2 recorded since, last recalled at 9.5
    assert (hits[0].memory.access_count, hits[0].memory.last_accessed) == (3, 9.5)
    assert (hits[1].memory.access_count, hits[1].memory.last_accessed) == (1, 2.5)
    # the same reply through the general path gives the same hits
    ranked, loaded = core.read_search(plan, reply)
    assert core.hits(plan, ranked, loaded) == hits
    # a reply that carries the candidates (Python ranks) is not final
    assert core.final_hits(plan, [*reply, [0], [0], [b"a"], []]) is None


def test_final_hits_fail_closed_on_another_users_memory() -> None:
    core = _core()
    plan = core.plan_search("alice", "hiking", k=5, mode="hybrid", clock=1.0)
    reply = [[b"a"], [b"1"], [None], [b"0"], [_row("bob", "not yours")], [None]]
    with pytest.raises(StoreError, match="isolation check failed"):
        core.final_hits(plan, reply)
    with pytest.raises(StoreError, match="unreadable reply"):
        core.final_hits(plan, [[b"a"], [b"one"], [None], [None], [_row("alice", "x")], [None]])


def test_dedupe_text_is_kept_when_it_is_the_only_extra_field() -> None:
    reply = [1, b"me:mem:{alice}:m1", b"2", [b"previous_id", b"", b"text", b"hello"]]
    assert keyword_candidates(reply, OWNER)[0].text == "hello"


def test_decoded_replies_parse_the_same() -> None:
    reply = [1, "me:mem:{alice}:m1", ["previous_id", "m0", "vector_distance", "0.5"]]
    assert vector_candidates(reply, OWNER) == [Candidate("m1", 0.5, "m0")]
