"""Background maintenance for long-running apps: a thread (``MemoryEngine``) or an asyncio
task (``AsyncMemoryEngine``) that runs ``maintain`` (or a backup) every ``interval``
seconds."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from .exceptions import InvalidArgumentError, MemoryEngineError

log = logging.getLogger("memory_engine.maintainer")


def check_interval(interval: object) -> float:
    if isinstance(interval, bool) or not isinstance(interval, int | float) or not (
            0 < interval < float("inf")):
        raise InvalidArgumentError(f"interval must be a positive number of seconds; "
                                   f"got {interval!r}")
    return float(interval)


class _Runs:
    """What a maintainer has done so far."""

    def __init__(self) -> None:
        self.runs = 0
        self.failures = 0
        self.last_report: Any = None  # a MaintenanceReport, or a BackupReport
        self.last_error: BaseException | None = None

    def done(self, report: Any) -> None:
        self.runs += 1
        self.last_report = report

    def failed(self, exc: BaseException) -> None:
        # A failed run (Redis away, a summarizer error) is logged and retried at the next
        # interval: each change is applied whole or not at all, so a retry is safe.
        self.failures += 1
        self.last_error = exc
        log.exception("background maintenance failed; retrying in the next interval")


class ThreadMaintainer(_Runs):
    """Runs ``run()`` every ``interval`` seconds on a daemon thread until ``stop()``."""

    def __init__(self, run: Callable[[], Any], interval: float):
        super().__init__()
        self.interval = check_interval(interval)
        self._run = run
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="memory-engine-maintainer",
                                        daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.done(self._run())
            except MemoryEngineError as exc:
                self.failed(exc)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def stop(self) -> None:
        """Stop after the run in progress, if any, and wait for it."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join()


class TaskMaintainer(_Runs):
    """Awaits ``run()`` every ``interval`` seconds in an asyncio task until ``stop()``."""

    def __init__(self, run: Callable[[], Awaitable[Any]], interval: float):
        super().__init__()
        self.interval = check_interval(interval)
        self._run = run
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                self.done(await self._run())
            except MemoryEngineError as exc:
                self.failed(exc)

    @property
    def running(self) -> bool:
        return not self._task.done()

    async def stop(self) -> None:
        """Cancel the task (a run in progress stops between two of its transactions)."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


__all__ = ["TaskMaintainer", "ThreadMaintainer"]
