"""Turning FT.SEARCH replies into ranking candidates. No I/O."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from ..exceptions import StoreError
from ..store._records import recall_stat
from ._queries import DECAY_FIELDS, DEDUPE_FIELDS, DISTANCE, RANK_FIELDS
from ._ranking import Candidate


def _rows(
    reply: list[Any], with_scores: bool, owner_prefix: str
) -> Iterator[tuple[str, float, dict[Any, Any]]]:
    """``[total, key, (score,) [field, value, ...], ...]`` (RESP2) as (memory id, score,
    fields) rows; field names and values stay as the client returned them (bytes, or str
    with ``decode_responses``). Every key must lie in ``owner_prefix``, the searched user's
    key space; the user filter makes anything else impossible, and such a row is never
    returned (fail closed)."""
    if len(reply) < 2:
        return
    step = 3 if with_scores else 2
    owner: str | bytes = owner_prefix.encode() if isinstance(reply[1], bytes) else owner_prefix
    cut = len(owner)
    for i in range(1, len(reply), step):
        key = reply[i]
        if not key.startswith(owner):
            raise StoreError(f"isolation check failed: a search for one user returned key {key!r}")
        flat = reply[i + step - 1]
        memory_id = key[cut:]
        yield (memory_id.decode() if isinstance(memory_id, bytes) else memory_id,
               float(reply[i + 1]) if with_scores else 0.0,
               dict(zip(flat[::2], flat[1::2], strict=True)))


_RANK_ONLY = frozenset([*RANK_FIELDS, DISTANCE, *(f.encode() for f in (*RANK_FIELDS, DISTANCE))])


def _get(fields: dict[Any, Any], name: str, default: str) -> str:
    value = fields.get(_ENCODED[name], fields.get(name))
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


_ENCODED = {name: name.encode() for name in (
    *RANK_FIELDS, *DECAY_FIELDS, *DEDUPE_FIELDS, DISTANCE)}
_PREVIOUS = ("previous_id", b"previous_id")


def _candidate(memory_id: str, score: float, fields: dict[Any, Any]) -> Candidate:
    if not fields.keys() - _RANK_ONLY:  # the common case: no decay, no de-duplication
        previous = fields.get(_PREVIOUS[1]) or fields.get(_PREVIOUS[0])
        if isinstance(previous, bytes):
            previous = previous.decode()
        return Candidate(memory_id, score, previous or None)
    try:
        return Candidate(
            memory_id, score, _get(fields, "previous_id", "") or None, _get(fields, "text", ""),
            float(_get(fields, "last_accessed", "0")),
            int(float(_get(fields, "access_count", "0"))),
            float(_get(fields, "importance", "0.5")),
        )
    except ValueError as exc:
        raise StoreError(f"memory {memory_id} is stored in an unreadable form: {exc}") from exc


def vector_candidates(reply: list[Any], owner_prefix: str) -> list[Candidate]:
    """Candidates of a KNN search; the score is the cosine similarity (1 - cosine distance)."""
    out = []
    for memory_id, _, fields in _rows(reply, False, owner_prefix):
        distance = _get(fields, DISTANCE, "")
        if not distance:
            raise StoreError(f"the vector search returned memory {memory_id} without a distance")
        out.append(_candidate(memory_id, 1.0 - float(distance), fields))
    return out


def keyword_candidates(reply: list[Any], owner_prefix: str) -> list[Candidate]:
    """Candidates of a BM25 search; the score is the BM25 score."""
    return [_candidate(i, score, fields) for i, score, fields in _rows(reply, True, owner_prefix)]


def with_recall_stats(candidates: Sequence[Candidate], stats: dict[str, Any]) -> list[Candidate]:
    """``candidates`` with the recalls recorded since each was written folded in (``stats``:
    memory id -> ``"<count>|<last recall time>"``, as in the recall side hash)."""
    out = []
    for c in candidates:
        parsed = recall_stat(stats.get(c.id))
        if parsed is not None:
            count, last = parsed
            c = c._replace(access_count=c.access_count + count,
                           last_accessed=max(c.last_accessed, last))
        out.append(c)
    return out

