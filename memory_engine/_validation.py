"""Input checks shared by every entry point. Each raises a typed ``InvalidInputError``."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from .exceptions import (
    InvalidArgumentError,
    InvalidMemoryIdError,
    InvalidModeError,
    InvalidTextError,
    InvalidUserIdError,
)
from .models import Kind, Role, SearchMode
from .store import is_memory_id

MAX_ID_CHARS = 256


def _str(value: object) -> str:
    """``value`` if it is a string (enums included); a ValueError otherwise."""
    if not isinstance(value, str):
        raise ValueError(value)
    return value


def _unicode_problem(value: str) -> str | None:
    """Why ``value`` is not storable text (a lone surrogate has no UTF-8 form), or None."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        return f"is not valid Unicode: a lone surrogate at position {exc.start}"
    return None


def user_id(value: object) -> str:
    """A user id: a non-blank string of at most 256 characters, valid Unicode."""
    if not isinstance(value, str):
        raise InvalidUserIdError(f"user_id must be a string; got {type(value).__name__}")
    if not value.strip():
        raise InvalidUserIdError("user_id must not be empty or whitespace")
    if len(value) > MAX_ID_CHARS:
        raise InvalidUserIdError(
            f"user_id has {len(value)} characters; the maximum is {MAX_ID_CHARS}"
        )
    if problem := _unicode_problem(value):
        raise InvalidUserIdError(f"user_id {problem}")
    return value


def session_id(value: object) -> str | None:
    """A session id, or None: a non-blank string of at most 256 characters."""
    if value is None:
        return None
    if (not isinstance(value, str) or not value.strip() or len(value) > MAX_ID_CHARS
            or _unicode_problem(value)):
        raise InvalidArgumentError(
            f"session_id must be None or a non-blank string of valid Unicode, at most "
            f"{MAX_ID_CHARS} characters; got {value!r:.80}"
        )
    return value


def text(value: object, max_chars: int, what: str = "text") -> str:
    """Memory or query text: non-blank, at most ``max_chars`` characters, never truncated."""
    if not isinstance(value, str):
        raise InvalidTextError(f"{what} must be a string; got {type(value).__name__}")
    if not value.strip():
        raise InvalidTextError(f"{what} must not be empty or whitespace")
    if len(value) > max_chars:
        raise InvalidTextError(
            f"{what} has {len(value)} characters; the maximum is {max_chars} "
            "(EngineConfig.max_text_chars). Split it, or raise the limit."
        )
    if "\x00" in value:
        raise InvalidTextError(f"{what} contains a NUL character")
    if problem := _unicode_problem(value):
        raise InvalidTextError(f"{what} {problem}")
    return value


def memory_id(value: object, what: str = "memory id") -> str:
    if not is_memory_id(value):
        raise InvalidMemoryIdError(f"{value!r:.80} is not a {what} (32 hex digits)")
    assert isinstance(value, str)
    return value


def k(value: object, max_k: int, what: str = "k") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= max_k:
        raise InvalidArgumentError(f"{what} must be an integer from 1 to {max_k}; got {value!r}")
    return value


def mode(value: object) -> SearchMode:
    try:
        return SearchMode(_str(value))
    except ValueError:
        modes = ", ".join(m.value for m in SearchMode)
        raise InvalidModeError(f"unknown search mode {value!r}; use one of: {modes}") from None


def kind(value: object) -> Kind:
    try:
        return Kind(_str(value))
    except ValueError:
        kinds = ", ".join(k.value for k in Kind)
        raise InvalidArgumentError(f"unknown kind {value!r}; use one of: {kinds}") from None


def kinds(values: Iterable[object] | None) -> tuple[Kind, ...] | None:
    if values is None:
        return None
    if isinstance(values, str):
        values = [values]
    out = tuple(kind(v) for v in values)
    if not out:
        raise InvalidArgumentError("kinds must name at least one kind, or be None for all")
    return out


def role(value: object) -> Role | None:
    if value is None or value == "":
        return None
    try:
        return Role(_str(value))
    except ValueError:
        roles = ", ".join(r.value for r in Role)
        raise InvalidArgumentError(f"unknown role {value!r}; use one of: {roles}") from None


def name(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > MAX_ID_CHARS:
        raise InvalidArgumentError(f"name must be a string of at most {MAX_ID_CHARS} characters")
    return value or None


def importance(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise InvalidArgumentError(f"importance must be a number from 0 to 1; got {value!r}")
    return float(value)


def timestamp(value: object, what: str) -> float | None:
    """Seconds since the epoch from a number or a ``datetime`` (naive means UTC); None
    passes."""
    if value is None:
        return None
    if isinstance(value, datetime):  # a naive datetime is UTC, whatever the host's zone
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgumentError(f"{what} must be seconds since the epoch or a datetime")
    if value < 0:
        raise InvalidArgumentError(f"{what} must not be before 1970; got {value!r}")
    return float(value)


def metadata(value: object) -> dict[str, Any]:
    """Caller metadata: a JSON-serialisable dict with string keys (copied)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidArgumentError(f"metadata must be a dict; got {type(value).__name__}")
    try:
        copied: dict[str, Any] = json.loads(json.dumps(dict(value), allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"metadata must be JSON-serialisable: {exc}") from None
    if copied != value:
        raise InvalidArgumentError(
            "metadata would not round-trip unchanged through JSON (non-string keys or tuples?)"
        )
    return copied


def optional_number(
    value: object, what: str, low: float | None = None, high: float | None = None
) -> float | None:
    """None, or a finite number within [low, high]."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidArgumentError(f"{what} must be a number; got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise InvalidArgumentError(f"{what} must be between {low} and {high}; got {value!r}")
    return float(value)


def optional_bool(value: object, what: str) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise InvalidArgumentError(f"{what} must be True or False; got {value!r}")


def ttl(value: object) -> int | None:
    """A time-to-live: None, or a whole number of seconds >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(f"ttl must be a whole number of seconds >= 1, not {value!r}")
    return value


def fusion(value: object) -> str:
    if value not in ("rrf", "linear"):
        raise InvalidArgumentError(f"fusion must be 'rrf' or 'linear'; got {value!r}")
    assert isinstance(value, str)
    return value
