"""Long-term writes off the caller's path: a queue drained by a daemon thread in batches.

``MemoryEngine.add_later`` validates items at once (a bad item raises in the caller and
nothing is queued), then returns; this thread embeds and writes them with ``add_many``, in
the order they were queued, up to ``batch_size`` items per call. ``flush()`` blocks until
everything queued before it is written. Items still queued when the process dies are lost;
``close()`` writes them first.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence

from .exceptions import MemoryEngineError
from .models import NewMemory

log = logging.getLogger("memory_engine")

Write = Callable[[str, list[NewMemory]], object]


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

    def _next_batch(self) -> tuple[str, list[NewMemory]] | None:
        """The oldest user's next items, in queue order (called holding the lock)."""
        if not self._queue:
            return None
        user_id = self._queue[0][0]
        batch: list[NewMemory] = []
        while self._queue and self._queue[0][0] == user_id and len(batch) < self._batch_size:
            batch.append(self._queue.popleft()[1])
        return user_id, batch

    def _loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stop)
                if not self._queue and self._stop:
                    return
                if len(self._queue) < self._batch_size and not self._stop:
                    # let a burst of messages gather into one embedding batch
                    self._cond.wait(self._interval)
                batch = self._next_batch()
            if batch is None:
                continue
            user_id, items = batch
            try:
                self._write(user_id, items)
            except Exception as exc:  # noqa: BLE001 - the thread must survive, or flush() hangs
                self.failures += len(items)
                log.warning("memory-engine: could not write %d queued memories for a user: %s",
                            len(items), exc)
            finally:
                with self._cond:
                    self._done += len(items)
                    self._cond.notify_all()
