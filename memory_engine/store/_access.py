"""Recording recalls off the hot path: ``last_accessed`` and ``access_count`` in batches.

Recalls are counted in a per-user side hash (``KeySpace.recalls``), never in the memory's own
indexed hash, which RediSearch would re-index on every write.

A search only appends to an in-memory ``AccessLog``; a background flusher (a thread for the
blocking engine, a task for the asyncio one) drains it every ``interval`` seconds, or sooner
when it fills, with one EVAL per user, ``FLUSH_CHUNK`` EVALs per round trip. A memory
deleted in between is skipped, never recreated half-empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator, Sequence

from ..exceptions import MemoryEngineError
from ._records import KeySpace

log = logging.getLogger("memory_engine")

# KEYS[1]: the user's recall hash; KEYS[2..]: the recalled memories' keys.
# ARGV: memory id, count, time for each memory key, in order. A deleted memory is skipped.
RECORD_ACCESS = """
for i = 2, #KEYS do
  local j = (i - 2) * 3
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local count, last = 0, 0
    local old = redis.call('HGET', KEYS[1], ARGV[j + 1])
    if old then
      local sep = string.find(old, '|', 1, true)
      count = tonumber(string.sub(old, 1, sep - 1))
      last = tonumber(string.sub(old, sep + 1))
    end
    count = count + tonumber(ARGV[j + 2])
    local t = tonumber(ARGV[j + 3])
    if t > last then last = t end
    redis.call('HSET', KEYS[1], ARGV[j + 1], string.format('%d|%.17g', count, last))
  end
end
return #KEYS - 1
"""

Command = list[object]
# EVALs per round trip when flushing. A full log (``max_pending`` recalls) can hold one EVAL
# per user for a thousand users; sent as one pipeline they would hold Redis (~30 us each) for
# tens of milliseconds while every search waits, so they go a few at a time, each chunk built
# only when the last is sent, and searches run in between.
FLUSH_CHUNK = 8


def chunks(commands: Iterator[Command], size: int = FLUSH_CHUNK) -> Iterator[list[Command]]:
    """``commands`` ``size`` at a time, each chunk built only when the previous one is sent."""
    while chunk := list(itertools.islice(commands, size)):
        yield chunk


class AccessLog:
    """Pending recalls, merged per memory: how often, and the latest time."""

    def __init__(self, keys: KeySpace, max_pending: int = 1024):
        self._keys = keys
        self._pending: dict[str, dict[str, tuple[int, float]]] = {}
        self._size = 0
        self._lock = threading.Lock()
        self.max_pending = max_pending

    def add(self, user_id: str, memory_ids: Sequence[str], now: float) -> bool:
        """Record a recall; True when the log is full enough to flush now."""
        with self._lock:
            seen = self._pending.setdefault(user_id, {})
            for memory_id in memory_ids:
                count, last = seen.get(memory_id, (0, 0.0))
                if count == 0:
                    self._size += 1
                seen[memory_id] = (count + 1, max(last, now))
            return self._size >= self.max_pending

    def drain(self) -> list[Command]:
        """The EVAL commands for everything pending, which is then cleared."""
        return list(self.drain_lazily()[1])

    def drain_lazily(self) -> tuple[int, Iterator[Command]]:
        """:meth:`drain`, clearing the log now but building each command only when it is
        asked for (a flush builds a chunk, sends it, then builds the next, so it never holds
        the GIL for long while searches wait on it); with the number of commands (users)."""
        with self._lock:
            pending, self._pending, self._size = self._pending, {}, 0
        return len(pending), (self._command(user, seen) for user, seen in pending.items())

    def _command(self, user_id: str, seen: dict[str, tuple[int, float]]) -> Command:
        keys = [self._keys.recalls(user_id)]
        args: list[object] = []
        for memory_id, (count, last) in seen.items():
            keys.append(self._keys.memory(user_id, memory_id))
            args += [memory_id, count, repr(last)]
        return ["EVAL", RECORD_ACCESS, len(keys), *keys, *args]

    def __len__(self) -> int:
        return self._size


def _lost(users: int, exc: MemoryEngineError) -> None:
    """Log the recall writes given up on: one chunk failed, and the rest are not tried."""
    log.warning("memory-engine: could not record the recalls of %d users: %s", users, exc)


class ThreadFlusher:
    """Drains an ``AccessLog`` from a daemon thread with a blocking ``run`` callable."""

    def __init__(self, access: AccessLog, run: Callable[[list[Command]], None], interval: float):
        self._access = access
        self._run = run
        self._interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._writing = threading.Lock()  # flush() waits for a write already under way
        self.failures = 0

    def record(self, user_id: str, memory_ids: Sequence[str], now: float) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="memory-engine-access",
                                            daemon=True)
            self._thread.start()
        if self._access.add(user_id, memory_ids, now):
            self._wake.set()

    def flush(self) -> None:
        """Write everything pending now, in the calling thread; when it returns, every
        recall recorded before the call is in Redis."""
        with self._writing:
            users, commands = self._access.drain_lazily()
            for chunk in chunks(commands):
                try:
                    self._run(chunk)
                except MemoryEngineError as exc:  # a lost recall count must not break searches
                    self.failures += 1
                    _lost(users, exc)
                    break
                users -= len(chunk)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval)
            self._wake.clear()
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()


class TaskFlusher:
    """The asyncio twin of ``ThreadFlusher``: a task on the engine's event loop."""

    def __init__(
        self, access: AccessLog, run: Callable[[list[Command]], Awaitable[None]], interval: float
    ):
        self._access = access
        self._run = run
        self._interval = interval
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._writing: asyncio.Lock | None = None
        self.failures = 0

    def record(self, user_id: str, memory_ids: Sequence[str], now: float) -> None:
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._loop())
        if self._access.add(user_id, memory_ids, now) and self._wake is not None:
            self._wake.set()

    async def flush(self) -> None:
        """See ``ThreadFlusher.flush``."""
        if self._writing is None:
            self._writing = asyncio.Lock()
        async with self._writing:
            users, commands = self._access.drain_lazily()
            for chunk in chunks(commands):
                try:
                    await self._run(chunk)
                except MemoryEngineError as exc:  # a lost recall count must not break searches
                    self.failures += 1
                    _lost(users, exc)
                    break
                users -= len(chunk)

    async def _loop(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._interval)
            self._wake.clear()
            await self.flush()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
