"""The search path's kept connections (``store._lane.Lane`` and ``AsyncLane``) on the real
embedded Redis: they survive the server closing them, are never shared by two searches at
once, stay usable after an error reply or a cancelled search, and are not inherited by a
forked child."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import NoScriptError

from memory_engine import AsyncMemoryEngine, EmbeddedServer, EngineConfig, MemoryEngine
from memory_engine.embeddings import SentenceTransformerEmbedder
from memory_engine.exceptions import ServerError
from memory_engine.store._lane import KEEP_AT_MOST, AsyncLane, Lane

pytestmark = pytest.mark.integration

TURNS = [
    "I adopted a grey cat called Miso last spring",
    "My sister lives in Porto and teaches maths",
    "I am training for a half marathon in October",
    "Our team moved the release to the first week of June",
    "I switched from coffee to green tea in the mornings",
    "The dentist appointment is on Thursday at nine",
]
QUERIES = ["what is my cat called", "where does my sister live", "which race am I training for",
           "when is the release", "what do I drink in the morning", "when is the dentist"]


def local_port(conn: redis.connection.Connection) -> int:
    assert conn._sock is not None, "the kept connection is not connected"
    port: int = conn._sock.getsockname()[1]
    return port


def kept(engine: MemoryEngine) -> Lane:
    return engine._ready()._lane


def ids(engine: MemoryEngine, query: str) -> list[str]:
    return [hit.memory.id for hit in engine.search("lane-user", query, k=3)]


async def async_ids(engine: AsyncMemoryEngine, query: str) -> list[str]:
    return [hit.memory.id for hit in await engine.search("lane-user", query, k=3)]


async def filled(engine: AsyncMemoryEngine) -> tuple[list[list[str]], AsyncLane]:
    """Write the turns; each query's hits, searched one at a time; and the engine's lane."""
    await engine.add_many("lane-user", TURNS)
    expected = [await async_ids(engine, q) for q in QUERIES]
    return expected, (await engine._ready())._lane


def test_search_reconnects_when_the_server_closes_its_connection(
    engine: MemoryEngine, admin_client: redis.Redis
) -> None:
    engine.add_many("lane-user", TURNS)
    before = ids(engine, QUERIES[0])
    lane = kept(engine)
    assert len(lane._idle) == 1
    old_port = local_port(lane._idle[0])
    assert admin_client.client_kill(f"127.0.0.1:{old_port}")
    # The next search finds its connection closed, reconnects (the client's retry policy) and
    # answers as before: the caller never sees the dropped connection.
    assert ids(engine, QUERIES[0]) == before
    assert len(lane._idle) == 1
    assert local_port(lane._idle[0]) != old_port


def test_closing_the_engine_closes_its_kept_connections(
    config: EngineConfig, minilm: SentenceTransformerEmbedder, admin_client: redis.Redis,
    redis_client: redis.Redis,
) -> None:
    engine = MemoryEngine(config, embedder=minilm)
    try:
        engine.add_many("lane-user", TURNS)
        assert ids(engine, QUERIES[3])
        lane = kept(engine)  # held past close: the socket must close with the client, not by GC
        port = local_port(lane._idle[0])
        listed = [c["addr"] for c in admin_client.client_list()]
        assert f"127.0.0.1:{port}" in listed
    finally:
        engine.close()
    # the server no longer lists the kept connection (it closes on its side within moments)
    for _ in range(50):
        if f"127.0.0.1:{port}" not in [c["addr"] for c in admin_client.client_list()]:
            break
        time.sleep(0.02)
    assert f"127.0.0.1:{port}" not in [c["addr"] for c in admin_client.client_list()]
    assert lane._idle[0]._sock is None
    redis_client.execute_command("FT.DROPINDEX", config.index_name, "DD")


def test_concurrent_searches_never_share_a_connection(engine: MemoryEngine) -> None:
    engine.add_many("lane-user", TURNS)
    expected = {q: ids(engine, q) for q in QUERIES}
    results: dict[int, list[tuple[str, list[str]]]] = {}
    start = threading.Barrier(4)

    def worker(n: int) -> None:
        start.wait()
        results[n] = [(q, ids(engine, q)) for _ in range(15) for q in QUERIES[n:] + QUERIES[:n]]

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # A reply read by the wrong search would put one query's hits under another's.
    assert sorted(results) == [0, 1, 2, 3]
    for got in results.values():
        assert all(hits == expected[q] for q, hits in got)
    lane = kept(engine)
    assert 1 <= len(lane._idle) <= 4
    assert len({id(conn) for conn in lane._idle}) == len(lane._idle)


@pytest.mark.parametrize(("limit", "keep"), [(16, 2), (4, 0)])
def test_a_limited_pool_gets_its_connections_back(
    config: EngineConfig, minilm: SentenceTransformerEmbedder, redis_client: redis.Redis,
    limit: int, keep: int,
) -> None:
    """Kept connections count against the pool's ``max_connections``: the lane keeps at most
    an eighth of it, and every other connection a search borrowed goes back to the pool."""
    limited = dataclasses.replace(config, redis_url=f"{config.redis_url}?max_connections={limit}")
    try:
        with MemoryEngine(limited, embedder=minilm) as engine:
            engine.add_many("lane-user", TURNS)
            expected = {q: ids(engine, q) for q in QUERIES}
            start = threading.Barrier(3)
            wrong: list[str] = []

            def worker() -> None:
                start.wait()
                for _ in range(20):
                    wrong.extend(q for q in QUERIES if ids(engine, q) != expected[q])

            threads = [threading.Thread(target=worker) for _ in range(3)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert wrong == []
            lane = kept(engine)
            pool = engine._ready().client.connection_pool
            assert pool.max_connections == limit
            assert len(lane._idle) <= keep
            assert pool._in_use_connections == set(lane._idle)  # the rest went back
    finally:
        redis_client.execute_command("FT.DROPINDEX", config.index_name, "DD")


def test_an_error_reply_leaves_the_connection_usable(redis_client: redis.Redis) -> None:
    lane = Lane(redis_client)
    with pytest.raises(NoScriptError):
        lane.execute("EVALSHA", "0" * 40, 0)
    with pytest.raises(redis.ResponseError, match="unknown command"):
        lane.execute("NO-SUCH-COMMAND")
    assert lane.execute("ECHO", "still in step") == b"still in step"
    assert len(lane._idle) == 1


def test_search_after_the_server_forgets_its_scripts(
    engine: MemoryEngine, admin_client: redis.Redis
) -> None:
    engine.add_many("lane-user", TURNS)
    before = ids(engine, QUERIES[1])
    admin_client.script_flush()
    assert ids(engine, QUERIES[1]) == before  # NOSCRIPT: sent again with EVAL, on the lane


def test_a_forked_child_opens_its_own_connection(redis_client: redis.Redis) -> None:
    lane = Lane(redis_client)
    assert lane.execute("PING")
    parent_port = local_port(lane._idle[0])
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report the port of the connection it used, then leave at once
        code = 1
        try:
            lane.execute("PING")
            os.write(write, str(local_port(lane._idle[-1])).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write)
    child_port = int(os.read(read, 64) or b"0")
    os.close(read)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert child_port not in (0, parent_port)
    assert lane.execute("ECHO", "parent") == b"parent"  # the parent's socket is untouched
    assert local_port(lane._idle[0]) == parent_port


def test_search_fails_clearly_when_the_server_is_gone(
    tmp_path: Path, minilm: SentenceTransformerEmbedder
) -> None:
    server = EmbeddedServer(tmp_path)
    state = server.start(persistent=False)
    try:
        with MemoryEngine(EngineConfig(redis_url=state.url), embedder=minilm) as engine:
            engine.add_many("lane-user", TURNS)
            assert ids(engine, QUERIES[2])
            assert server.stop()
            # The kept connection fails, and so does the fresh one it is sent on again.
            with pytest.raises(ServerError, match="Redis unreachable while trying to search"):
                engine.search("lane-user", QUERIES[2])
    finally:
        server.stop()


async def test_async_searches_never_share_a_connection_and_survive_a_kill(
    config: EngineConfig, minilm: SentenceTransformerEmbedder, admin_client: redis.Redis,
    redis_client: redis.Redis,
) -> None:
    try:
        async with AsyncMemoryEngine(config, embedder=minilm) as engine:
            expected, lane = await filled(engine)
            together = await asyncio.gather(*(async_ids(engine, q) for q in QUERIES * 4))
            assert together == expected * 4  # a crossed reply would swap two queries' hits
            assert 1 <= len(lane._idle) <= KEEP_AT_MOST
            for conn in lane._idle:
                port = conn._writer.get_extra_info("sockname")[1]
                assert admin_client.client_kill(f"127.0.0.1:{port}")
            assert await asyncio.gather(*(async_ids(engine, q) for q in QUERIES)) == expected
    finally:
        redis_client.execute_command("FT.DROPINDEX", config.index_name, "DD")


async def test_a_limited_async_pool_gets_its_connections_back(
    config: EngineConfig, minilm: SentenceTransformerEmbedder, redis_client: redis.Redis,
) -> None:
    limited = dataclasses.replace(config, redis_url=f"{config.redis_url}?max_connections=16")
    try:
        async with AsyncMemoryEngine(limited, embedder=minilm) as engine:
            expected, lane = await filled(engine)
            together = await asyncio.gather(*(async_ids(engine, q) for q in QUERIES * 2))
            assert together == expected * 2
            pool = (await engine._ready()).client.connection_pool
            assert len(lane._idle) == 2  # twelve at once: two kept, ten handed back
            assert pool._in_use_connections == set(lane._idle)
    finally:
        redis_client.execute_command("FT.DROPINDEX", config.index_name, "DD")


async def test_a_cancelled_command_leaves_no_reply_behind(redis_url: str) -> None:
    client = aioredis.Redis.from_url(redis_url, protocol=2)
    try:
        lane = AsyncLane(client)
        # BLPOP on a missing key answers nil after 0.3 s; cancelled before that, its reply
        # must not be read as the next command's.
        slow = asyncio.create_task(lane.execute("BLPOP", "lane-test-missing-key", 0.3))
        await asyncio.sleep(0.05)
        slow.cancel()
        with pytest.raises(asyncio.CancelledError):
            await slow
        assert await lane.execute("ECHO", "next") == b"next"
        await asyncio.sleep(0.4)  # past the BLPOP's timeout: a reply left unread would be there
        assert await lane.execute("ECHO", "after") == b"after"
    finally:
        await client.aclose()
