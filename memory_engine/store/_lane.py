"""Connections the search path keeps between searches.

redis-py's ``execute_command`` borrows a connection from the pool and hands it back around
every command, locking the pool and recording observability counters both ways (a PING
takes 94 us that way against 71 us sent on a connection held). A search is one command, so
this is a visible share of it. Measured in situ (5,000 memories / 50 users,
``MemoryEngine.search`` with a filled query cache, the two paths taking turns in blocks of
50 searches, four rounds): a hybrid search takes 0.50-0.54 ms on a kept connection against
0.53-0.57 ms through ``execute_command`` (0.94-0.95x), a vector search 0.375 against
0.408 ms (0.92x).

``Lane`` keeps the connections instead: one per search running at the same time, up to
:func:`keep_limit`, taken from the client's own pool on first use (so they carry its
address, credentials and timeouts) and handed back only past that limit; closing the client
closes them with the pool.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.connection import Connection

KEEP_AT_MOST = 8


def keep_limit(pool: redis.ConnectionPool | aioredis.ConnectionPool) -> int:
    """How many idle connections a lane keeps out of ``pool``: 8, or an eighth of the pool's
    connection limit if that is less (redis-py 8 limits a pool to 100 connections unless told
    otherwise; a URL can set ``max_connections``). Kept connections count against that limit
    while they wait, so the rest of the engine (writes, maintenance, recall bookkeeping) must
    still find connections in the pool: a search beyond the limit borrows one and hands it
    back. 0 (a pool of fewer than 8 connections) keeps none."""
    return min(KEEP_AT_MOST, pool.max_connections // 8)


class Lane:
    """Runs single read-only commands on connections kept out of ``client``'s pool.

    Safe to share between threads: a connection is popped off the idle list for one command
    (list ``pop`` is atomic) and put back after it, or handed back to the pool when the lane
    already keeps :func:`keep_limit` (decided under a lock), so two commands never share
    one. A connection that fails mid-command is disconnected by redis-py itself (it could
    hold a reply nobody read) and connects again on its next use.

    A kept connection can be closed while it waits (the server restarted, an idle timeout,
    ``CLIENT KILL``); the pool checks a connection for that when it lends one (a ``poll``
    each time), the lane finds out from the failed round trip and sends the command once more
    on a fresh connection. That is why it only carries commands that are safe to send twice:
    the search and fetch scripts, which only read.
    """

    def __init__(self, client: redis.Redis):
        self._pool = client.connection_pool
        self._keep = keep_limit(self._pool)
        self._idle: list[Connection] = []
        self._pid = os.getpid()
        self._lock = threading.Lock()  # keep or hand back: decided one search at a time

    def execute(self, *args: Any) -> Any:
        """Send one command and return its reply, as ``client.execute_command`` does (the
        same exceptions)."""
        if self._pid != os.getpid():  # a forked child: the parent's sockets are not its own
            self._idle, self._pid = [], os.getpid()
        try:
            conn = self._idle.pop()
            kept = True
        except IndexError:
            conn = self._pool.get_connection()
            kept = False
        try:
            try:
                return _round_trip(conn, args)
            except redis.ConnectionError:
                if not kept:
                    raise
                return _round_trip(conn, args)  # redis-py disconnected it: this reconnects
        finally:
            with self._lock:
                keep = len(self._idle) < self._keep
                if keep:
                    self._idle.append(conn)
            if not keep:
                self._pool.release(conn)


def _round_trip(conn: Connection, args: tuple[Any, ...]) -> Any:
    conn.send_command(*args)
    return conn.read_response()


class AsyncLane:
    """:class:`Lane` for a ``redis.asyncio`` client (``AsyncMemoryStore``), on its event
    loop: the same kept connections, the same one retry on a fresh connection. A search
    cancelled mid-command leaves its connection disconnected (redis-py does that), so no
    reply is ever read by the wrong search. Measured like ``Lane``: a hybrid search through
    ``AsyncMemoryEngine`` takes 0.55-0.56 ms on a kept connection against 0.58-0.59 ms
    (0.94-0.95x).
    """

    def __init__(self, client: aioredis.Redis):
        self._pool = client.connection_pool
        self._keep = keep_limit(self._pool)
        self._idle: list[AbstractConnection] = []

    async def execute(self, *args: Any) -> Any:
        """Send one command and return its reply, as ``await client.execute_command`` does."""
        try:
            conn = self._idle.pop()
            kept = True
        except IndexError:
            conn = await self._pool.get_connection()
            kept = False
        try:
            try:
                return await _async_round_trip(conn, args)
            except redis.ConnectionError:
                if not kept:
                    raise
                return await _async_round_trip(conn, args)
        finally:
            if len(self._idle) < self._keep:  # one event loop: nothing runs in between
                self._idle.append(conn)
            else:
                await self._pool.release(conn)


async def _async_round_trip(conn: AbstractConnection, args: tuple[Any, ...]) -> Any:
    await conn.send_command(*args)
    return await conn.read_response()
