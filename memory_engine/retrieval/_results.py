"""Turning FT.SEARCH replies into hits. No I/O."""

from __future__ import annotations

from typing import Any

from ..exceptions import StoreError
from ..models import Memory, ScoreParts, SearchHit
from ..store._records import KeySpace, from_fields
from ._queries import DISTANCE


def _rows(reply: list[Any], with_scores: bool) -> list[tuple[str, float | None, dict[str, str]]]:
    """``[total, key, (score,) [field, value, ...], ...]`` (bytes, RESP2) as (key, score,
    decoded fields) rows."""
    step = 3 if with_scores else 2
    rows = []
    for i in range(1, len(reply), step):
        key = reply[i].decode() if isinstance(reply[i], bytes) else str(reply[i])
        score = float(reply[i + 1]) if with_scores else None
        flat = reply[i + step - 1]
        fields = {
            flat[j].decode(): flat[j + 1].decode() for j in range(0, len(flat), 2)
        }
        rows.append((key, score, fields))
    return rows


def _memory(user_id: str, key: str, fields: dict[str, str]) -> Memory:
    memory = from_fields(KeySpace.memory_id(key), fields)
    if memory.user_id != user_id:
        # Fail closed: the filter should make this impossible; never return such a hit.
        raise StoreError(f"isolation check failed: a search for one user returned key {key!r}")
    return memory


def vector_hits(user_id: str, reply: list[Any]) -> list[SearchHit]:
    """Hits of a KNN search; the score is the cosine similarity (1 - cosine distance)."""
    hits = []
    for key, _, fields in _rows(reply, with_scores=False):
        similarity = 1.0 - float(fields.pop(DISTANCE))
        memory = _memory(user_id, key, fields)
        hits.append(SearchHit(memory, similarity, ScoreParts(vector=similarity)))
    return hits


def keyword_hits(user_id: str, reply: list[Any]) -> list[SearchHit]:
    """Hits of a BM25 search; the score is the BM25 score."""
    hits = []
    for key, score, fields in _rows(reply, with_scores=True):
        assert score is not None
        hits.append(SearchHit(_memory(user_id, key, fields), score, ScoreParts(keyword=score)))
    return hits


def result_keys(reply: list[Any]) -> list[str]:
    """Keys of a NOCONTENT search."""
    return [k.decode() if isinstance(k, bytes) else str(k) for k in reply[1:]]
