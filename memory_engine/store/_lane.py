"""Connections the search path keeps between searches.

redis-py's ``execute_command`` borrows a connection from the pool and hands it back around
every command, locking the pool and recording observability counters both ways (a PING
takes 94 us that way against 71 us sent on a connection held). A search is one command, so
this is a visible share of it. Measured in situ (5,000 memories / 50 users,
``MemoryEngine.search`` with a filled query cache, the two paths taking turns in blocks of
50 searches, four rounds): a hybrid search takes 0.50-0.54 ms on a kept connection against
0.53-0.57 ms through ``execute_command`` (0.94-0.95x), a vector search 0.375 against
0.408 ms (0.92x).

``Lane`` keeps the connections instead: one per search running at the same time, taken
from the client's own pool on first use (so they carry its address, credentials and
timeouts) and never handed back; closing the client closes them with the pool.
"""

from __future__ import annotations

import os
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection
from redis.connection import Connection


class Lane:
    """Runs single read-only commands on connections kept out of ``client``'s pool.

    Safe to share between threads: a connection is popped off the idle list for one command
    and put back after it (list ``pop`` and ``append`` are atomic), so two commands never
    share one. A connection that fails mid-command is disconnected by redis-py itself (it
    could hold a reply nobody read) and connects again on its next use.

    A kept connection can be closed while it waits (the server restarted, an idle timeout,
    ``CLIENT KILL``); the pool checks a connection for that when it lends one (a ``poll``
    each time), the lane finds out from the failed round trip and sends the command once more
    on a fresh connection. That is why it only carries commands that are safe to send twice:
    the search and fetch scripts, which only read.
    """

    def __init__(self, client: redis.Redis):
        self._pool = client.connection_pool
        self._idle: list[Connection] = []
        self._pid = os.getpid()

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
            self._idle.append(conn)


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
            self._idle.append(conn)


async def _async_round_trip(conn: AbstractConnection, args: tuple[Any, ...]) -> Any:
    await conn.send_command(*args)
    return await conn.read_response()
