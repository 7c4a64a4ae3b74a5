"""Long-term writes off the caller's path: a queue drained in batches, by a daemon thread
(``BackgroundWriter``, for ``MemoryEngine``) or an asyncio task (``TaskWriter``, for
``AsyncMemoryEngine``).

``add_later`` validates items at once (a bad item raises in the caller and nothing is
queued), then returns; the writer embeds and writes them with ``add_many``, in the order they
were queued, up to ``batch_size`` items of one user per call. ``flush()`` waits until
everything queued before it is written. Items still queued when the process dies are lost;
``close()`` writes them first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from .exceptions import MemoryEngineError
from .models import NewMemory

log = logging.getLogger("memory_engine")

Write = Callable[[str, list[NewMemory]], object]
AsyncWrite = Callable[[str, list[NewMemory]], Awaitable[object]]


def next_batch(
    queue: deque[tuple[str, NewMemory]], batch_size: int
) -> tuple[str, list[NewMemory]] | None:
    """The oldest user's next items, in queue order, taken off ``queue``."""
    if not queue:
        return None
    user_id = queue[0][0]
    batch: list[NewMemory] = []
    while queue and queue[0][0] == user_id and len(batch) < batch_size:
        batch.append(queue.popleft()[1])
    return user_id, batch


def _failed(count: int, exc: BaseException) -> None:
    log.warning("memory-engine: could not write %d queued memories for a user: %s", count, exc)


class BackgroundWriter:
    """Drains queued ``(user_id, item)`` pairs through ``write`` from one daemon thread.

    Args:
        write: Writes a batch of one user's items (``MemoryEngine.add_many``).
        batch_size: Most items per ``write`` call.
        interval: How long the thread waits for more items before writing what it has.
    """

    def __init__(self, write: Write, *, batch_size: int = 64, interval: float = 0.05):
        self._write = write
        self._batch_size = batch_size
        self._interval = interval
        self._queue: deque[tuple[str, NewMemory]] = deque()
        self._cond = threading.Condition()
        self._queued = 0  # items ever queued
        self._done = 0  # items written or given up on
        self._stop = False
        self._thread: threading.Thread | None = None
        self.failures = 0  # items that could not be written (logged)

    @property
    def pending(self) -> int:
        """Items queued and not yet written."""
        with self._cond:
            return self._queued - self._done

    def submit(self, user_id: str, items: Sequence[NewMemory]) -> None:
        """Queue items (already validated) for one user; never blocks on I/O."""
        with self._cond:
            if self._stop:
                raise MemoryEngineError("this engine is closed")
            self._queue.extend((user_id, item) for item in items)
            self._queued += len(items)
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._loop, name="memory-engine-writer", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued before this call is written. False on timeout."""
        with self._cond:
            target = self._queued
            self._cond.notify_all()
            return self._cond.wait_for(lambda: self._done >= target, timeout)

    def close(self, timeout: float = 60.0) -> None:
        """Write what is queued, then stop the thread."""
        self.flush(timeout)
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stop)
                if not self._queue and self._stop:
                    return
                if len(self._queue) < self._batch_size and not self._stop:
                    # let a burst of messages gather into one embedding batch
                    self._cond.wait(self._interval)
                batch = next_batch(self._queue, self._batch_size)
            if batch is None:
                continue
            user_id, items = batch
            try:
                self._write(user_id, items)
            except Exception as exc:  # noqa: BLE001 - the thread must survive, or flush() hangs
                self.failures += len(items)
                _failed(len(items), exc)
            finally:
                with self._cond:
                    self._done += len(items)
                    self._cond.notify_all()


class TaskWriter:
    """The asyncio twin of ``BackgroundWriter``: one task on the engine's event loop."""

    def __init__(self, write: AsyncWrite, *, batch_size: int = 64, interval: float = 0.05):
        self._write = write
        self._batch_size = batch_size
        self._interval = interval
        self._queue: deque[tuple[str, NewMemory]] = deque()
        self._cond: asyncio.Condition | None = None
        self._queued = 0
        self._done = 0
        self._stop = False
        self._task: asyncio.Task[None] | None = None
        self.failures = 0

    @property
    def pending(self) -> int:
        return self._queued - self._done

    def submit(self, user_id: str, items: Sequence[NewMemory]) -> None:
        """Queue items (already validated) for one user; call on the engine's loop."""
        if self._stop:
            raise MemoryEngineError("this engine is closed")
        self._queue.extend((user_id, item) for item in items)
        self._queued += len(items)
        if self._task is None:
            self._cond = asyncio.Condition()
            self._task = asyncio.get_running_loop().create_task(self._loop())
        self._task.get_loop().create_task(self._notify())

    async def _notify(self) -> None:
        assert self._cond is not None
        async with self._cond:
            self._cond.notify_all()

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued before this call is written. False on timeout."""
        if self._cond is None:
            return True
        target = self._queued
        async with self._cond:
            self._cond.notify_all()
            try:
                await asyncio.wait_for(
                    self._cond.wait_for(lambda: self._done >= target), timeout)
            except TimeoutError:
                return False
        return True

    async def close(self, timeout: float = 60.0) -> None:
        """Write what is queued, then stop the task."""
        await self.flush(timeout)
        self._stop = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _loop(self) -> None:
        assert self._cond is not None
        while True:
            async with self._cond:
                await self._cond.wait_for(lambda: bool(self._queue))
                if len(self._queue) < self._batch_size:
                    with contextlib.suppress(TimeoutError):  # let a burst gather
                        await asyncio.wait_for(self._cond.wait(), self._interval)
                batch = next_batch(self._queue, self._batch_size)
            if batch is None:
                continue
            user_id, items = batch
            try:
                await self._write(user_id, items)
            except Exception as exc:  # noqa: BLE001 - the task must survive, or flush() hangs
                self.failures += len(items)
                _failed(len(items), exc)
            finally:
                async with self._cond:
                    self._done += len(items)
                    self._cond.notify_all()
