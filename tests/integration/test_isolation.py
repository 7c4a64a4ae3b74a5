"""Property: whatever the user ids and query text, a search never returns another user's memory."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memory_engine import MemoryEngine

ADVERSARIAL_USERS = [
    "a}|@user_id:{b", "*", "-", "'", '"', "\\", "a,b", "a", "A", " a", "a ", "@user_id:{*}",
    "ü", "😀", "a b", "(x|y)", "-a", "%2A", "a%7D", "user:1", "{a}", "..", "$vec", "_", "__",
    "_a", "a_", "-_",
]
# NUL and lone surrogates (no UTF-8 form) are what the engine refuses in text and ids
# (tested in test_bad_input).
characters = st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",))
text = st.text(alphabet=characters, min_size=1, max_size=40)
users = st.one_of(
    st.sampled_from(ADVERSARIAL_USERS),
    st.text(alphabet=characters, min_size=1, max_size=30).filter(lambda s: s.strip() != ""),
)
queries = st.one_of(
    st.sampled_from(["*", "@user_id:{*}", "-a", "a | b", "(", "\\", "%", "'", "$vec", "~x"]),
    text.filter(lambda s: s.strip() != ""),
)


@pytest.mark.integration
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_no_search_returns_another_users_memory(engine: MemoryEngine, data: st.DataObject) -> None:
    group = data.draw(st.lists(users, min_size=2, max_size=4, unique=True), label="users")
    texts = data.draw(st.lists(text.filter(str.strip), min_size=1, max_size=3), label="texts")
    for user in group:  # a failed earlier example may have left memories behind
        engine.forget_user(user)
    owners: dict[str, str] = {}
    for user in group:
        # Every user gets the same texts plus the query-like strings, so both modes have
        # something to match in every other user's memories.
        for memory in engine.add_many(user, [*texts, f"shared words {user!r}"]):
            owners[memory.id] = user
    query = data.draw(queries, label="query")
    for user in group:
        for mode in ("vector", "keyword"):
            for hit in engine.search(user, query, k=50, mode=mode):
                assert hit.memory.user_id == user
                assert owners.get(hit.memory.id, user) == user
        assert engine.count(user) == len(texts) + 1
    for user in group:
        engine.forget_user(user)
        assert engine.count(user) == 0


def test_prefix_and_case_variants_do_not_see_each_other(engine: MemoryEngine) -> None:
    variants = ["alice", "Alice", "alice ", " alice", "alice*", "alic", "alice,bob", "bob"]
    for user in variants:
        engine.add(user, f"secret of {user!r}: the vault code")
    for user in variants:
        for mode in ("vector", "keyword"):
            hits = engine.search(user, "vault code secret", k=20, mode=mode)
            assert [h.memory.user_id for h in hits] == [user], (user, mode)


@pytest.mark.parametrize("query", ["_", "__", "_ _", "__init__", "snake_case_word"])
def test_underscore_queries_search_without_error(engine: MemoryEngine, query: str) -> None:
    engine.add("a", "the __init__ method of a snake_case_word class")
    hits = engine.search("a", query, mode="keyword")
    if query in ("__init__", "snake_case_word"):
        assert [h.memory.text for h in hits] == ["the __init__ method of a snake_case_word class"]
    else:
        assert hits == []


@pytest.mark.parametrize("name", ["_", "__", "_a", "a_b", "-_", "%5F"])
def test_underscore_ids_add_search_count_and_forget(engine: MemoryEngine, name: str) -> None:
    # "{_}" is a RediSearch syntax error: a user or session called "_" once failed forget_user.
    others = {"a_b", "_a"} - {name}
    for other in others:
        engine.add(other, "the lighthouse keeper's log", session_id=other)
    engine.add(name, "the lighthouse keeper's log", session_id=name)
    engine.add(name, "a second entry", session_id="elsewhere")
    for mode in ("vector", "keyword", "hybrid"):
        hits = engine.search(name, "lighthouse keeper", mode=mode, session_id=name)
        assert [(h.memory.user_id, h.memory.session_id) for h in hits] == [(name, name)], mode
    assert engine.count(name) == 2
    assert engine.forget_user(name) == 2
    assert engine.count(name) == 0
    assert all(engine.count(other) == 1 for other in others)
