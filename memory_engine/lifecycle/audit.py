"""Audit-trail records: what maintenance changed, why, when, and what it removed, exactly
enough for ``undo`` to put it back. Pure: the engine stores them (one key per change, expiring
after ``LifecyclePolicy.audit_retention``)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any


@dataclass(frozen=True, slots=True)
class RemovedMemory:
    """A memory as it was stored when maintenance removed it.

    Attributes:
        memory_id: Its id.
        fields: Its HASH exactly as stored (vector and keyword context included).
        recall: Its entry in the user's recall hash (``"<count>|<time>"``), if any.
    """

    memory_id: str
    fields: Mapping[str, bytes]
    recall: bytes | None = None

    @property
    def text(self) -> str:
        return self.fields.get("text", b"").decode("utf-8", "replace")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change maintenance made to one user's memories.

    Attributes:
        change_id: What ``undo`` takes.
        action: ``expire``, ``prune``, ``dedupe`` or ``consolidate``.
        reason: Why, in words (the plan's reason).
        at: When it was applied (the clock).
        now: The ``now`` maintenance planned at (may be simulated).
        source_ids: The memories it removed.
        summary_id: The summary it wrote (``consolidate`` only).
        summarizer: Which summarizer wrote it.
        removed: The removed memories in full.
        undone_at: When ``undo`` reverted it, if it did.
    """

    change_id: str
    user_id: str
    action: str
    reason: str
    at: float
    now: float
    source_ids: tuple[str, ...]
    summary_id: str | None = None
    summarizer: str | None = None
    removed: tuple[RemovedMemory, ...] = field(default=())
    undone_at: float | None = None

    @property
    def removed_text(self) -> list[str]:
        return [r.text for r in self.removed]

    def undone(self, at: float) -> AuditEntry:
        return replace(self, undone_at=at)

    def to_json(self) -> str:
        data: dict[str, Any] = {
            "change_id": self.change_id, "user_id": self.user_id, "action": self.action,
            "reason": self.reason, "at": self.at, "now": self.now,
            "source_ids": list(self.source_ids), "summary_id": self.summary_id,
            "summarizer": self.summarizer, "undone_at": self.undone_at,
            "removed": [
                {"memory_id": r.memory_id,
                 "fields": {k: _b64(v) for k, v in r.fields.items()},
                 "recall": None if r.recall is None else _b64(r.recall)}
                for r in self.removed
            ],
        }
        return json.dumps(data, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> AuditEntry:
        data = json.loads(raw)
        return cls(
            change_id=data["change_id"], user_id=data["user_id"], action=data["action"],
            reason=data["reason"], at=float(data["at"]), now=float(data["now"]),
            source_ids=tuple(data["source_ids"]), summary_id=data["summary_id"],
            summarizer=data["summarizer"], undone_at=data["undone_at"],
            removed=tuple(
                RemovedMemory(
                    r["memory_id"], {k: base64.b64decode(v) for k, v in r["fields"].items()},
                    None if r["recall"] is None else base64.b64decode(r["recall"]))
                for r in data["removed"]
            ),
        )


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


__all__ = ["AuditEntry", "RemovedMemory"]
