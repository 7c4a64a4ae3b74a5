"""What a prefix holds in Redis, key by key, for before/after comparisons in tests, and the
tests' index teardown."""

from __future__ import annotations

from collections.abc import Iterable

import redis

from memory_engine import EngineConfig


def raw_state(
    client: redis.Redis, prefix: str, *, skip: Iterable[bytes] = (), with_ttl: bool = False
) -> dict[bytes, object]:
    """Every key under ``prefix`` (but those containing one of ``skip``) with its full
    content: hash fields with vectors, strings, sorted sets with scores; with ``with_ttl``,
    paired with whether the key expires."""
    skipped = tuple(skip)
    out: dict[bytes, object] = {}
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        if any(part in key for part in skipped):
            continue
        kind = client.type(key)
        value: object
        if kind == b"hash":
            value = client.hgetall(key)
        elif kind == b"string":
            value = client.get(key)
        elif kind == b"zset":
            value = client.zrange(key, 0, -1, withscores=True)
        else:
            raise AssertionError(f"unexpected {kind!r} at {key!r}")
        out[key] = (value, client.ttl(key) > 0) if with_ttl else value
    return out


def drop_index(client: redis.Redis, config: EngineConfig) -> None:
    """Drop a test engine's index with its documents, and the schema record beside it."""
    client.execute_command("FT.DROPINDEX", config.index_name, "DD")
    client.delete(f"{config.key_prefix}:meta")
