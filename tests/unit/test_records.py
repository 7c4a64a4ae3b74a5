import re

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from memory_engine.models import Kind, Memory, Role
from memory_engine.store._records import (
    MEMORY_FIELDS,
    KeySpace,
    decode_tag,
    encode_tag,
    from_hash,
    from_values,
    is_memory_id,
    new_id,
    tag_clause,
    to_hash,
)

SAFE = re.compile(r"^[A-Za-z0-9_.~%-]*$")


@given(st.text(min_size=1, max_size=64), st.text(min_size=1, max_size=64))
def test_encode_tag_is_safe_and_injective(a: str, b: str) -> None:
    ea, eb = encode_tag(a), encode_tag(b)
    assert SAFE.match(ea)
    assert SAFE.match(eb)
    assert decode_tag(ea) == a
    assert (ea == eb) == (a == b)


@given(st.text(min_size=1, max_size=64))
def test_tag_clause_escapes_every_character_outside_alphanumerics(value: str) -> None:
    # Underscores included: "@user_id:{_}" is a RediSearch syntax error, "{\\_}" is not.
    clause = str(tag_clause("user_id", value))
    assert clause.startswith("@user_id:{")
    assert clause.endswith("}")
    body = clause[len("@user_id:{"):-1]
    assert re.fullmatch(r"(?:[A-Za-z0-9]|\\[_.~%-])*", body), body
    assert re.sub(r"\\(.)", r"\1", body) == encode_tag(value)


def test_case_and_whitespace_stay_distinct() -> None:
    assert len({encode_tag(x) for x in ["Alice", "alice", " alice", "alice ", "a,lice"]}) == 5


def test_keys_put_the_user_in_a_hash_tag() -> None:
    keys = KeySpace("me")
    key = keys.memory("a}|{b", "0" * 32)
    assert key == "me:mem:{a%7D%7C%7Bb}:" + "0" * 32
    assert key.count("{") == 1
    assert key.count("}") == 1
    assert keys.user_pattern("a*") == "me:mem:{a%2A}:*"
    assert KeySpace.memory_id(key) == "0" * 32


def test_ids_are_well_formed_and_time_ordered() -> None:
    first, second = new_id(1000.0), new_id(2000.0)
    assert is_memory_id(first)
    assert is_memory_id(second)
    assert first < second
    assert len({new_id(5.0) for _ in range(1000)}) == 1000


def test_hash_round_trip() -> None:
    memory = Memory(
        id="0" * 32, user_id="ü s,e{r}", text="hello", kind=Kind.FACT, session_id="s 1",
        role=Role.USER, name="Ana", created_at=1.5, last_accessed=2.5, access_count=3,
        importance=0.7, metadata={"k": [1, "é"]}, replaces=("a" * 32,),
    )
    fields = to_hash(memory, np.ones(4, dtype=np.float32))
    assert fields["embedding"] == np.ones(4, dtype=np.float32).tobytes()
    raw = {k.encode(): (v if isinstance(v, bytes) else str(v).encode()) for k, v in fields.items()}
    assert from_hash("0" * 32, raw) == memory
    assert "embedding" not in to_hash(memory, None)


_TEXT = st.text(min_size=1, max_size=12)
_TIME = st.floats(min_value=0, max_value=4e9, allow_nan=False)
MEMORIES = st.builds(
    Memory,
    id=st.just("1" * 32), user_id=_TEXT, text=_TEXT, kind=st.sampled_from(Kind),
    session_id=st.none() | _TEXT, role=st.none() | st.sampled_from(Role),
    name=st.none() | _TEXT, created_at=_TIME, last_accessed=_TIME,
    access_count=st.integers(0, 10**6), importance=st.floats(0, 1),
    metadata=st.dictionaries(_TEXT, st.integers() | _TEXT, max_size=3),
    replaces=st.lists(st.just("2" * 32), max_size=2).map(tuple),
    previous_id=st.none() | st.just("3" * 32),
    replaced_sessions=st.lists(_TEXT, max_size=2).map(tuple),
    replaced_span=st.none() | st.tuples(_TIME, _TIME),
)


@given(MEMORIES)
def test_the_search_paths_constructor_builds_the_same_memory(memory: Memory) -> None:
    """``from_values`` (what a search reads, HMGET rows as bytes) fills Memory through its
    slots, bypassing ``__init__``: every field set, equal to the memory that was written."""
    fields = to_hash(memory, None)
    row = [str(fields[name]).encode() for name in MEMORY_FIELDS]
    rebuilt = from_values(memory.id, row, None)
    assert rebuilt == memory
    assert repr(rebuilt) == repr(memory)  # reads every slot: an unset one would raise
    # a recall recorded since the memory was written is folded in
    later = from_values(memory.id, row, f"2|{memory.last_accessed + 1}".encode())
    assert later is not None
    assert (later.access_count, later.last_accessed) == (
        memory.access_count + 2, memory.last_accessed + 1)
