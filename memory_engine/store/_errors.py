"""Redis errors, re-raised as memory-engine errors with their cause."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis

from ..exceptions import ServerError, StoreError


@contextlib.contextmanager
def redis_errors(action: str) -> Iterator[None]:
    """Re-raise Redis errors from ``action`` as ``ServerError`` / ``StoreError``."""
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise ServerError(f"Redis unreachable while trying to {action}: {exc}") from exc
    except redis.RedisError as exc:
        raise StoreError(f"Redis failed to {action}: {exc}") from exc


def is_missing_index(exc: Exception) -> bool:
    text = str(exc).lower()
    return "unknown index" in text or "no such index" in text or "not found" in text
