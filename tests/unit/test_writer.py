"""BackgroundWriter: order, batching per user, flush, failures. A recording FAKE write
function stands in for ``add_many``; no Redis, no model."""

from __future__ import annotations

import threading

import pytest

from memory_engine._writer import BackgroundWriter, TaskWriter
from memory_engine.exceptions import MemoryEngineError, StoreError
from memory_engine.models import NewMemory


class Recorder:
    def __init__(self, fail_on: str | None = None, gate: threading.Event | None = None):
        self.calls: list[tuple[str, list[str]]] = []
        self.fail_on = fail_on
        self.gate = gate

    def __call__(self, user_id: str, items: list[NewMemory]) -> None:
        if self.gate is not None:
            self.gate.wait(5)
        texts = [i.text for i in items]
        if self.fail_on in texts:
            raise StoreError("redis went away")
        self.calls.append((user_id, texts))


def items(*texts: str) -> list[NewMemory]:
    return [NewMemory(text=t) for t in texts]


def test_writes_in_order_in_batches_of_one_user() -> None:
    gate = threading.Event()
    write = Recorder(gate=gate)
    writer = BackgroundWriter(write, batch_size=2, interval=0.01)
    writer.submit("a", items("a1", "a2", "a3"))
    writer.submit("b", items("b1"))
    writer.submit("a", items("a4"))
    assert writer.pending == 5
    gate.set()
    assert writer.flush(timeout=5)
    assert writer.pending == 0
    assert write.calls == [("a", ["a1", "a2"]), ("a", ["a3"]), ("b", ["b1"]), ("a", ["a4"])]
    writer.close()


def test_a_failed_batch_is_counted_and_the_thread_goes_on() -> None:
    write = Recorder(fail_on="bad")
    writer = BackgroundWriter(write, batch_size=1, interval=0.0)
    writer.submit("a", items("bad", "good"))
    assert writer.flush(timeout=5)
    assert writer.failures == 1
    assert write.calls == [("a", ["good"])]
    writer.close()


def test_flush_times_out_while_a_write_is_stuck() -> None:
    gate = threading.Event()
    writer = BackgroundWriter(Recorder(gate=gate), interval=0.0)
    writer.submit("a", items("x"))
    assert writer.flush(timeout=0.1) is False
    gate.set()
    assert writer.flush(timeout=5) is True
    writer.close()


def test_close_writes_what_is_queued_then_refuses_more() -> None:
    write = Recorder()
    writer = BackgroundWriter(write, interval=1.0)  # would wait a second for more items
    writer.submit("a", items("last words"))
    writer.close()
    assert write.calls == [("a", ["last words"])]
    with pytest.raises(MemoryEngineError, match="closed"):
        writer.submit("a", items("too late"))


class AsyncRecorder(Recorder):
    async def awrite(self, user_id: str, items: list[NewMemory]) -> None:
        self(user_id, items)


async def test_task_writer_writes_in_order_and_survives_a_failure() -> None:
    write = AsyncRecorder(fail_on="bad")
    writer = TaskWriter(write.awrite, batch_size=2, interval=0.01)
    writer.submit("a", items("a1", "a2", "a3"))
    writer.submit("b", items("bad"))
    writer.submit("a", items("a4"))
    assert writer.pending == 5
    assert await writer.flush(timeout=5)
    assert writer.pending == 0
    assert writer.failures == 1
    assert write.calls == [("a", ["a1", "a2"]), ("a", ["a3"]), ("a", ["a4"])]
    await writer.close()
    with pytest.raises(MemoryEngineError, match="closed"):
        writer.submit("a", items("too late"))


async def test_task_writer_close_writes_what_is_queued() -> None:
    write = AsyncRecorder()
    writer = TaskWriter(write.awrite, interval=1.0)
    writer.submit("a", items("last words"))
    await writer.close()
    assert write.calls == [("a", ["last words"])]
