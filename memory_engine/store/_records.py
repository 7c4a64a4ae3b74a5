"""Keys, ids and the HASH layout of a memory. No I/O."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import numpy as np
from redisvl.query.filter import FilterExpression
from redisvl.utils.token_escaper import TokenEscaper

from ..exceptions import StoreError
from ..models import Kind, Memory, Role, Vector

if TYPE_CHECKING:
    from ._crypto import Sealer

_ID = re.compile(r"^[0-9a-f]{32}$")
_ESCAPER = TokenEscaper()

# Fields read back for a Memory (everything but the vector).
MEMORY_FIELDS = (
    "user_id", "session_id", "kind", "role", "name", "text", "created_at",
    "last_accessed", "access_count", "importance", "metadata", "replaces", "previous_id",
    "summary_of",
)


@functools.lru_cache(maxsize=4096)
def encode_tag(value: str) -> str:
    """Injective, TAG- and key-safe form of a user or session id.

    Percent-encoding leaves only ``[A-Za-z0-9_.~%-]``: no TAG separator, no whitespace for
    RediSearch to trim, no brace to break the cluster hash tag, no glob character for SCAN.
    Combined with a case-sensitive TAG field, two different ids never share a tag. (Cached:
    a search builds several keys and a filter of the same user.)
    """
    return quote(value, safe="")


def tag_clause(field: str, value: str) -> FilterExpression:
    """``@field:{...}`` matching exactly the documents whose ``field`` holds
    ``encode_tag(value)``.

    redisvl's ``Tag`` escaping leaves ``_`` alone, and a tag of one underscore (``{_}``) is
    a syntax error in RediSearch 2.10; ``\\_`` is valid anywhere and matches the same tag,
    so every underscore is escaped.
    """
    escaped = _ESCAPER.escape(encode_tag(value)).replace("_", "\\_")
    return FilterExpression(f"@{field}:{{{escaped}}}")


def decode_tag(value: str) -> str:
    """Inverse of ``encode_tag``."""
    return unquote(value)


def new_id(now: float | None = None) -> str:
    """A 32-hex-digit id: 48 bits of milliseconds, then 80 random bits (sortable by time)."""
    ms = int((time.time() if now is None else now) * 1000) & ((1 << 48) - 1)
    return f"{ms:012x}{os.urandom(10).hex()}"


def is_memory_id(value: object) -> bool:
    """Whether ``value`` has the shape of an id this engine issues."""
    return isinstance(value, str) and bool(_ID.match(value))


class KeySpace:
    """Key names under one prefix. A user's keys share the hash tag ``{<user>}``."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.memory_prefix = f"{prefix}:mem:"
        self.meta_key = f"{prefix}:meta"

    def recalls(self, user_id: str) -> str:
        """The user's recall hash: memory id -> ``"<count>|<last recall time>"``."""
        return f"{self.prefix}:acc:{{{encode_tag(user_id)}}}"

    def tails(self, user_id: str) -> str:
        """The user's session tails: session -> ids of its latest turns, oldest first."""
        return f"{self.prefix}:tail:{{{encode_tag(user_id)}}}"

    def audit_index(self, user_id: str) -> str:
        """The user's audit trail: a sorted set of change ids by time."""
        return f"{self.prefix}:audit:{{{encode_tag(user_id)}}}"

    def audit(self, user_id: str, change_id: str) -> str:
        """One audit-trail entry (JSON), expiring with the trail's retention."""
        return f"{self.audit_index(user_id)}:{change_id}"

    def audit_pattern(self, user_id: str) -> str:
        """SCAN pattern of the user's audit trail and its entries."""
        return f"{self.audit_index(user_id)}*"

    def memory(self, user_id: str, memory_id: str) -> str:
        return f"{self.memory_prefix}{{{encode_tag(user_id)}}}:{memory_id}"

    def user_keys(self, user_id: str) -> list[str]:
        """The user's keys that are not memories."""
        return [self.recalls(user_id), self.tails(user_id)]

    def user_pattern(self, user_id: str) -> str:
        """SCAN pattern of every memory key of one user."""
        return f"{self.memory_prefix}{{{encode_tag(user_id)}}}:*"

    @staticmethod
    def memory_id(key: str) -> str:
        return key.rsplit(":", 1)[1]


def to_hash(
    memory: Memory, vector: Vector | None, context: str | None = None
) -> dict[str, str | bytes | float | int]:
    """The HASH fields stored for a memory; without ``embedding`` when ``vector`` is None and
    without ``context`` (the words of the turn before it, keyword-indexed) when that is None."""
    fields: dict[str, str | bytes | float | int] = {
        "user_id": encode_tag(memory.user_id),
        "session_id": encode_tag(memory.session_id) if memory.session_id else "",
        "kind": memory.kind.value,
        "role": memory.role.value if memory.role else "",
        "name": memory.name or "",
        "text": memory.text,
        "created_at": memory.created_at,
        "last_accessed": memory.last_accessed,
        "access_count": memory.access_count,
        "importance": memory.importance,
        "metadata": json.dumps(memory.metadata, ensure_ascii=False, allow_nan=False),
        "replaces": json.dumps(list(memory.replaces)) if memory.replaces else "",
        "previous_id": memory.previous_id or "",
        "summary_of": _summary_of(memory),
    }
    if context is not None:
        fields["context"] = context
    if vector is not None:
        fields["embedding"] = np.asarray(vector, dtype=np.float32).tobytes()
    return fields


def _summary_of(memory: Memory) -> str:
    if memory.replaced_span is None and not memory.replaced_sessions:
        return ""
    span = list(memory.replaced_span) if memory.replaced_span is not None else None
    return json.dumps({"sessions": list(memory.replaced_sessions), "span": span})


_WANTED = frozenset(MEMORY_FIELDS)
_KINDS = {k.value: k for k in Kind}
_ROLES = {r.value: r for r in Role}


def _decoded(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else ("" if value is None else str(value))


def from_hash(
    memory_id: str, raw: dict[Any, Any], stat: bytes | str | None = None,
    sealer: Sealer | None = None,
) -> Memory:
    """Rebuild a Memory from HASH fields (keys and values as str or bytes), with its recall
    side-hash entry ``stat`` folded in."""
    fields = {}
    for key, value in raw.items():
        name = key.decode() if isinstance(key, bytes) else key
        if name in _WANTED:  # never the vector, which is not text
            fields[name] = _decoded(value)
    return from_fields(memory_id, fields, stat, sealer)


def from_values(
    memory_id: str, values: Sequence[Any], stat: bytes | str | None,
    sealer: Sealer | None = None,
) -> Memory | None:
    """A Memory from HMGET values of ``MEMORY_FIELDS`` (None when the hash does not exist),
    with its recall side-hash entry folded in and, with encryption on, its sealed fields
    opened by ``sealer``. The search path's final read: one pass, no copies."""
    if None in values:
        if all(v is None for v in values):
            return None
        decoded = [_decoded(v) for v in values]
    else:
        try:  # every field is written with every memory: the usual case, all bytes
            decoded = [v.decode() for v in values]
        except AttributeError:  # a client that decodes replies itself
            decoded = [_decoded(v) for v in values]
    if sealer is not None:
        sealer.open_row(memory_id, decoded)
    return _memory(memory_id, decoded, stat)


def recall_stat(stat: bytes | str | None) -> tuple[int, float] | None:
    """A recall side-hash entry ``"<count>|<last recall time>"`` as (count, last), or None."""
    if not stat:
        return None
    text = stat.decode() if isinstance(stat, bytes) else stat
    count, _, last = text.partition("|")
    return int(count), float(last)


_OPTIONAL = frozenset({"name", "previous_id", "summary_of"})


def from_fields(
    memory_id: str, f: dict[str, str], stat: bytes | str | None = None,
    sealer: Sealer | None = None,
) -> Memory:
    """Rebuild a Memory from decoded HASH fields, with the recalls recorded since it was last
    written (``stat``, from the recall side hash) folded in.

    Recalls live in a side hash rather than the memory's own: rewriting an indexed hash makes
    RediSearch re-index the whole document (vector included) and skews BM25 statistics.
    """
    try:
        values = [f.get(name, "") if name in _OPTIONAL else f[name] for name in MEMORY_FIELDS]
    except KeyError as exc:
        raise StoreError(f"memory {memory_id} is stored in an unreadable form: {exc}") from exc
    if sealer is not None:
        sealer.open_row(memory_id, values)
    return _memory(memory_id, values, stat)


# ``_memory`` is the search path's constructor (ten Memory objects per search): it fills a
# bare instance through the slots' own setters, the way a frozen dataclass's ``__init__``
# does through ``object.__setattr__``, at half the cost (0.9 against 1.6 us here). The
# setters are taken in ``dataclasses.fields`` order, checked here, at import, against the
# names ``_memory`` unpacks them into.
_MEMORY_ORDER = (
    "id", "user_id", "text", "kind", "session_id", "role", "name", "created_at",
    "last_accessed", "access_count", "importance", "metadata", "replaces", "previous_id",
    "replaced_sessions", "replaced_span",
)
if tuple(f.name for f in dataclasses.fields(Memory)) != _MEMORY_ORDER:
    raise ImportError("Memory's fields changed order: update _records._memory")
(_set_id, _set_user_id, _set_text, _set_kind, _set_session_id, _set_role, _set_name,
 _set_created_at, _set_last_accessed, _set_access_count, _set_importance, _set_metadata,
 _set_replaces, _set_previous_id, _set_replaced_sessions, _set_replaced_span) = (
    getattr(Memory, name).__set__ for name in _MEMORY_ORDER)
_new = object.__new__


def _memory(memory_id: str, values: Sequence[str], stat: bytes | str | None) -> Memory:
    """A Memory from decoded ``MEMORY_FIELDS`` values (in that order; "" where unset)."""
    (user_id, session, kind, role, name, text, created_at, last_accessed, access_count,
     importance, metadata, replaces, previous_id, summary) = values
    try:
        accessed, count = float(last_accessed), int(float(access_count))
        if stat:
            recalls, last = recall_stat(stat) or (0, 0.0)
            accessed, count = max(accessed, last), count + recalls
        sessions: tuple[str, ...] = ()
        span = None
        if summary:  # only summaries carry it
            summary_of = json.loads(summary)
            sessions = tuple(summary_of.get("sessions", ()))
            if bounds := summary_of.get("span"):
                span = (float(bounds[0]), float(bounds[1]))
        memory = _new(Memory)
        _set_id(memory, memory_id)
        _set_user_id(memory, unquote(user_id) if "%" in user_id else user_id)
        _set_text(memory, text)
        _set_kind(memory, _KINDS[kind])
        _set_session_id(
            memory, (unquote(session) if "%" in session else session) if session else None)
        _set_role(memory, _ROLES[role] if role else None)
        _set_name(memory, name or None)
        _set_created_at(memory, float(created_at))
        _set_last_accessed(memory, accessed)
        _set_access_count(memory, count)
        _set_importance(memory, float(importance))
        _set_metadata(memory, json.loads(metadata) if metadata and metadata != "{}" else {})
        _set_replaces(memory, tuple(json.loads(replaces)) if replaces else ())
        _set_previous_id(memory, previous_id or None)
        _set_replaced_sessions(memory, sessions)
        _set_replaced_span(memory, span)
        return memory
    except (KeyError, ValueError) as exc:
        raise StoreError(f"memory {memory_id} is stored in an unreadable form: {exc}") from exc
