"""``AccessLog``: recalls merged in memory, drained as one EVAL per user, flushed a few EVALs
per round trip. No I/O."""

from __future__ import annotations

import asyncio
import logging

import pytest

from memory_engine.exceptions import StoreError
from memory_engine.store._access import (
    FLUSH_CHUNK,
    RECORD_ACCESS,
    AccessLog,
    TaskFlusher,
    ThreadFlusher,
)
from memory_engine.store._records import KeySpace

KEYS = KeySpace("px")
A, B, C = "a" * 32, "b" * 32, "c" * 32


def test_empty_log_drains_nothing() -> None:
    log = AccessLog(KEYS)
    assert len(log) == 0
    assert log.drain() == []


def test_repeated_recalls_are_merged() -> None:
    log = AccessLog(KEYS)
    assert log.add("alice", [A, B], 100.0) is False
    assert log.add("alice", [A], 250.5) is False
    assert log.add("alice", [A], 200.0) is False  # an older time does not win
    assert len(log) == 2  # distinct memories, not recalls
    [command] = log.drain()
    assert command[:3] == ["EVAL", RECORD_ACCESS, 3]
    assert command[3:6] == [KEYS.recalls("alice"), KEYS.memory("alice", A),
                            KEYS.memory("alice", B)]
    assert command[6:] == [A, 3, repr(250.5), B, 1, repr(100.0)]


def test_full_at_max_pending() -> None:
    log = AccessLog(KEYS, max_pending=3)
    assert log.add("alice", [A], 1.0) is False
    assert log.add("alice", [A], 2.0) is False  # a repeat does not grow the log
    assert log.add("bob", [A], 1.0) is False  # the same id for another user does
    assert log.add("alice", [B], 1.0) is True
    assert log.add("alice", [C], 1.0) is True
    assert len(log) == 4
    log.drain()
    assert len(log) == 0
    assert log.add("alice", [A], 3.0) is False


def test_drain_builds_one_eval_per_user() -> None:
    log = AccessLog(KEYS)
    log.add("alice", [A, B], 10.0)
    log.add("bob smith", [C], 20.0)
    log.add("alice", [C], 30.0)
    commands = {c[3]: c for c in log.drain()}
    assert set(commands) == {KEYS.recalls("alice"), KEYS.recalls("bob smith")}
    alice = commands[KEYS.recalls("alice")]
    n_keys = alice[2]
    assert n_keys == 4
    keys, args = alice[3 : 3 + n_keys], alice[3 + n_keys :]
    assert keys == [KEYS.recalls("alice"), KEYS.memory("alice", A), KEYS.memory("alice", B),
                    KEYS.memory("alice", C)]
    assert args == [A, 1, repr(10.0), B, 1, repr(10.0), C, 1, repr(30.0)]
    # ARGV triples line up with KEYS[2..]: memory id at (i-2)*3+1 matches the key's id
    for i, key in enumerate(keys[1:]):
        assert KeySpace.memory_id(key) == args[3 * i]
    bob = commands[KEYS.recalls("bob smith")]
    assert bob[2:] == [2, KEYS.recalls("bob smith"), KEYS.memory("bob smith", C), C, 1,
                       repr(20.0)]
    assert "{bob%20smith}" in bob[3]


def test_drain_clears() -> None:
    log = AccessLog(KEYS)
    log.add("alice", [A], 5.0)
    assert len(log.drain()) == 1
    assert len(log) == 0
    assert log.drain() == []
    log.add("alice", [A], 6.0)
    [command] = log.drain()
    assert command[-3:] == [A, 1, repr(6.0)]  # the count starts over after a drain


def test_times_survive_as_exact_floats() -> None:
    log = AccessLog(KEYS)
    when = 1_700_000_000.123456789
    log.add("alice", [A], when)
    [command] = log.drain()
    assert float(command[-1]) == when


def test_a_flush_goes_a_few_evals_per_round_trip() -> None:
    """Hundreds of users' recalls are not one pipeline holding Redis: chunks of at most
    FLUSH_CHUNK, every command once, in order."""
    log = AccessLog(KEYS)
    users = [f"user-{i}" for i in range(2 * FLUSH_CHUNK + 3)]
    for user in users:
        log.add(user, [A, B], 1.0)
    sent: list[list[list[object]]] = []
    flusher = ThreadFlusher(log, sent.append, interval=3600.0)
    flusher.flush()
    assert [len(chunk) for chunk in sent] == [FLUSH_CHUNK, FLUSH_CHUNK, 3]
    assert [c[3] for chunk in sent for c in chunk] == [KEYS.recalls(u) for u in users]
    assert len(log) == 0
    assert flusher.failures == 0


def test_a_failed_flush_stops_and_counts_once(caplog: pytest.LogCaptureFixture) -> None:
    log = AccessLog(KEYS)
    for i in range(3 * FLUSH_CHUNK):
        log.add(f"user-{i}", [A], 1.0)
    calls = []

    def down(chunk: list[list[object]]) -> None:
        calls.append(chunk)
        raise StoreError("connection refused")

    flusher = ThreadFlusher(log, down, interval=3600.0)
    with caplog.at_level(logging.WARNING, logger="memory_engine"):
        flusher.flush()  # never raises: a lost recall count must not break searches
    assert len(calls) == 1  # the rest is not tried against a server that is down
    assert flusher.failures == 1
    assert f"recalls of {3 * FLUSH_CHUNK} users" in caplog.text
    assert len(log) == 0


def test_the_async_flusher_chunks_too() -> None:
    log = AccessLog(KEYS)
    for i in range(FLUSH_CHUNK + 1):
        log.add(f"user-{i}", [A], 1.0)
    sent: list[int] = []

    async def run(chunk: list[list[object]]) -> None:
        sent.append(len(chunk))

    asyncio.run(TaskFlusher(log, run, interval=3600.0).flush())
    assert sent == [FLUSH_CHUNK, 1]
