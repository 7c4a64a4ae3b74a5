"""Every bad input raises its typed error and writes nothing."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from memory_engine import (
    EmbeddingDimensionError,
    InvalidArgumentError,
    InvalidMemoryIdError,
    InvalidModeError,
    InvalidTextError,
    InvalidUserIdError,
    MemoryEngine,
    MemoryEngineError,
    MemoryNotFoundError,
)

Call = Callable[[MemoryEngine], Any]
GOOD = "a perfectly fine memory"

CASES: list[tuple[str, Call, type[MemoryEngineError]]] = [
    ("empty user", lambda e: e.add("", GOOD), InvalidUserIdError),
    ("blank user", lambda e: e.add("  \t", GOOD), InvalidUserIdError),
    ("long user", lambda e: e.add("u" * 257, GOOD), InvalidUserIdError),
    ("None user", lambda e: e.add(None, GOOD), InvalidUserIdError),
    ("empty text", lambda e: e.add("alice", ""), InvalidTextError),
    ("blank text", lambda e: e.add("alice", " \n\t "), InvalidTextError),
    ("NUL in text", lambda e: e.add("alice", "a\x00b"), InvalidTextError),
    # A lone surrogate has no UTF-8 form: the tokenizer and Redis would fail on it later.
    ("surrogate in text", lambda e: e.add("alice", "ok \ud800"), InvalidTextError),
    ("surrogate in query", lambda e: e.search("alice", "\udfff?"), InvalidTextError),
    ("surrogate in user", lambda e: e.add("al\ud800ice", GOOD), InvalidUserIdError),
    ("surrogate in session", lambda e: e.add("alice", GOOD, session_id="s\ud800"),
     InvalidArgumentError),
    ("text over max", lambda e: e.add("alice", "x" * (e.config.max_text_chars + 1)),
     InvalidTextError),
    ("wrong dims", lambda e: e.add("alice", GOOD, embedding=np.ones(383)), EmbeddingDimensionError),
    ("nan vector", lambda e: e.add("alice", GOOD, embedding=[float("nan")] * 384),
     EmbeddingDimensionError),
    ("bad kind", lambda e: e.add("alice", GOOD, kind="diary"), InvalidArgumentError),
    ("bad role", lambda e: e.add("alice", GOOD, role="robot"), InvalidArgumentError),
    ("bad importance", lambda e: e.add("alice", GOOD, importance=7), InvalidArgumentError),
    ("bad metadata", lambda e: e.add("alice", GOOD, metadata={"x": {1, 2}}), InvalidArgumentError),
    # One bad item among good ones: the good ones are not written either.
    ("bad item in batch", lambda e: e.add_many("alice", [GOOD, GOOD, "  ", GOOD]),
     InvalidTextError),
    ("unknown item field", lambda e: e.add_many("alice", [{"text": GOOD, "colour": "red"}]),
     InvalidArgumentError),
    ("empty batch", lambda e: e.add_many("alice", []), InvalidArgumentError),
    ("unknown mode", lambda e: e.search("alice", "q", mode="psychic"), InvalidModeError),
    ("k zero", lambda e: e.search("alice", "q", k=0), InvalidArgumentError),
    ("k too big", lambda e: e.search("alice", "q", k=e.config.max_k + 1), InvalidArgumentError),
    ("empty query", lambda e: e.search("alice", "   "), InvalidTextError),
    ("since after until", lambda e: e.search("alice", "q", since=10, until=5),
     InvalidArgumentError),
    ("malformed id get", lambda e: e.get("alice", "not-an-id"), InvalidMemoryIdError),
    ("malformed id delete", lambda e: e.delete("alice", "../../x"), InvalidMemoryIdError),
    ("unknown id get", lambda e: e.get("alice", "0" * 32), MemoryNotFoundError),
    ("unknown id delete", lambda e: e.delete("alice", "0" * 32), MemoryNotFoundError),
    ("unknown id update", lambda e: e.update("alice", "0" * 32, text="x"), MemoryNotFoundError),
    ("bad update field", lambda e: e.update("alice", e._seed_id, access_count=99),
     InvalidArgumentError),
    ("blank update text", lambda e: e.update("alice", e._seed_id, text=" "), InvalidTextError),
]


@pytest.mark.parametrize(("call", "error"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_typed_error_and_writes_nothing(
    engine: MemoryEngine, call: Call, error: type[MemoryEngineError]
) -> None:
    seed = engine.add("alice", "the one memory that exists")
    engine._seed_id = seed.id  # type: ignore[attr-defined]
    before = engine.count("alice")
    keys_before = engine._ready().client.dbsize()
    with pytest.raises(error):
        call(engine)
    assert engine.count("alice") == before
    assert engine._ready().client.dbsize() == keys_before
    assert engine.get("alice", seed.id) == seed
