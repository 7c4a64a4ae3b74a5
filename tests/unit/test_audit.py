"""Audit-trail records: a JSON round trip that keeps every stored byte, and undo marks."""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError

import numpy as np
import pytest

from memory_engine.lifecycle.audit import AuditEntry, RemovedMemory

NOW = 1_700_000_000.0


def fake_vector_bytes(seed: int, dims: int = 384) -> bytes:
    """FAKE embedding bytes (seeded float32 noise), shaped like a stored vector field."""
    return np.random.default_rng(seed).normal(size=dims).astype(np.float32).tobytes()


def removed(mid: str, seed: int, recall: bytes | None = b"3|1699999000.25") -> RemovedMemory:
    return RemovedMemory(
        memory_id=mid,
        fields={
            "text": "Caroline adopted a dog named Max — on 8 May 2023 🐕".encode(),
            "user_id": b"ana",
            "kind": b"turn",
            "created_at": b"1683540000.0",
            "vector": fake_vector_bytes(seed),
            "every_byte": bytes(range(256)),
            "empty": b"",
            "not_utf8": b"\xff\xfe\x00\x80",
        },
        recall=recall,
    )


def entry() -> AuditEntry:
    return AuditEntry(
        change_id="c-1", user_id="ana", action="consolidate",
        reason="stale (decay < 0.3): 2 memories of s1 from 2023-05-08 to 2023-05-08, « ok »",
        at=NOW + 5.5, now=NOW, source_ids=("m1", "m2"), summary_id="sum-1",
        summarizer="extractive", removed=(removed("m1", 1), removed("m2", 2, recall=None)),
    )


def test_round_trip_keeps_every_field_and_byte() -> None:
    original = entry()
    back = AuditEntry.from_json(original.to_json())
    assert back == original
    assert back.removed[0].fields["vector"] == fake_vector_bytes(1)
    assert back.removed[0].fields["every_byte"] == bytes(range(256))
    assert back.removed[0].fields["not_utf8"] == b"\xff\xfe\x00\x80"
    assert back.removed[0].fields["empty"] == b""
    assert back.removed[0].recall == b"3|1699999000.25"
    assert back.removed[1].recall is None
    assert back.source_ids == ("m1", "m2")
    assert isinstance(back.source_ids, tuple)
    assert isinstance(back.removed, tuple)


def test_vector_bytes_decode_to_the_same_floats() -> None:
    back = AuditEntry.from_json(entry().to_json())
    vector = np.frombuffer(back.removed[1].fields["vector"], dtype=np.float32)
    expected = np.frombuffer(fake_vector_bytes(2), dtype=np.float32)
    assert vector.shape == (384,)
    assert np.array_equal(vector, expected)


def test_round_trip_from_bytes_as_redis_returns_them() -> None:
    original = entry()
    assert AuditEntry.from_json(original.to_json().encode("utf-8")) == original


def test_round_trip_of_an_entry_without_summary_or_removed_memories() -> None:
    bare = AuditEntry(change_id="c-2", user_id="bo", action="expire", reason="turn past ttl",
                      at=NOW, now=NOW - 10, source_ids=())
    back = AuditEntry.from_json(bare.to_json())
    assert back == bare
    assert back.summary_id is None
    assert back.summarizer is None
    assert back.removed == ()
    assert back.undone_at is None


def test_to_json_is_plain_json_with_base64_bytes() -> None:
    raw = entry().to_json()
    data = json.loads(raw)
    assert data["change_id"] == "c-1"
    assert data["source_ids"] == ["m1", "m2"]
    assert data["removed"][0]["fields"]["user_id"] == "YW5h"  # base64 of b"ana"
    assert data["removed"][1]["recall"] is None
    assert "«" in raw  # unicode kept as is, not escaped


def test_undone_sets_undone_at_and_leaves_the_original_alone() -> None:
    original = entry()
    undone = original.undone(NOW + 60)
    assert undone.undone_at == NOW + 60
    assert original.undone_at is None
    assert undone.change_id == original.change_id
    assert undone.removed == original.removed
    back = AuditEntry.from_json(undone.to_json())
    assert back.undone_at == NOW + 60
    assert back == undone


def test_entries_are_frozen() -> None:
    with pytest.raises(FrozenInstanceError):
        entry().undone_at = 1.0  # type: ignore[misc]


def test_removed_text_decodes_the_stored_text() -> None:
    e = entry()
    assert e.removed_text == ["Caroline adopted a dog named Max — on 8 May 2023 🐕"] * 2
    no_text = RemovedMemory("m9", {"vector": fake_vector_bytes(3)})
    assert no_text.text == ""
    broken = RemovedMemory("m8", {"text": b"caf\xe9"})
    assert broken.text == "caf\ufffd"
