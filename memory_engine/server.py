"""The embedded Redis: a ``redis-server`` with the search module, started on demand.

With no Redis URL configured, the engine starts (or reuses) one server per data directory
(``EngineConfig.home``): bound to 127.0.0.1 only, on a free port, persisting with AOF
(``appendfsync everysec``) plus RDB snapshots under ``home/data``. Hardened:

* Engines connect as the ACL user ``memory-engine`` (a generated 32-byte password): every key
  (``~*``: the key prefix is per engine and one server serves every engine under ``home``),
  no pub/sub, every command but the ``@dangerous`` ones (``FLUSHALL``, ``CONFIG``, ``DEBUG``,
  ``SHUTDOWN``, ``MODULE``, ``ACL``, ``KEYS``, ``BGSAVE``...), ``FT.CONFIG``, ``FT.DEBUG``,
  ``FUNCTION`` and ``SCRIPT DEBUG``; Redis checks the commands a Lua script calls the same
  way. ``default`` has a password of its own, used only to stop the server
  (``ServerState.admin_url``). ``redis.conf`` holds SHA-256 hashes, never a password.
* ``home`` and every directory under it are 0700, every file 0600 (tightened if they exist),
  and redis-server runs with umask 077, so its AOF, RDB and rewrite files are 0600 too.

Processes share the server through ``home/server.lock`` (an ``flock`` held while the server
is started, checked or stopped) and ``home/server.json`` (pid, port, user, passwords). A state
file whose process is gone or does not answer is stale and is replaced; one written before the
ACL user existed (no ``user``) is upgraded in place, its password becoming the admin's. Each
engine holds a *lease* (a file under ``home/clients``); a server the engine started by itself
stops when the last live lease is released, while one started with ``memory-engine server
start`` keeps running until ``memory-engine server stop``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

import redis

from ._redis_setup import RedisLaunch as RedisLaunch  # re-exported
from ._redis_setup import check_search_module as check_search_module  # re-exported
from ._redis_setup import find_redis as find_redis  # re-exported
from ._redis_setup import redact as redact  # re-exported
from ._redis_setup import search_module_error as search_module_error  # re-exported
from .exceptions import (
    SearchModuleMissingError,
    ServerError,
    ServerStartError,
)

_START_TIMEOUT_S = 20.0
_LOCK_TIMEOUT_S = 60.0
# Popen handles of servers this process started, kept so they are reaped, not warned about.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}

ENGINE_USER = "memory-engine"
"""The ACL user engines connect as on the embedded server."""

# The engine user's commands. ``@admin`` is inside ``@dangerous``. INFO and MODULE LIST are
# read-only and used by redisvl and the benchmarks. Module commands have no ACL category, so
# FT.CONFIG and FT.DEBUG are denied by name (see _EXTRA_DENIED).
ENGINE_ACL = ("~*", "resetchannels", "+@all", "-@dangerous", "+info", "+module|list", "-acl")
# Denied after start: a rule naming a command the server lacks (FT.* before the module is
# loaded, FUNCTION before Redis 7) stops redis-server from starting.
_EXTRA_DENIED = ("-ft.config", "-ft.debug", "-function", "-script|debug")
_PASSWORD_BYTES = 32


@dataclass(frozen=True, slots=True)
class ServerState:
    """What ``server.json`` records about a running embedded server.

    ``user`` and ``admin_password`` are None in a state file written before the ACL user
    existed: there the engine connects as ``default`` with ``password``.
    """

    pid: int
    port: int
    password: str = field(repr=False)
    binary: str
    module: str | None
    started_at: float
    persistent: bool
    user: str | None = None
    admin_password: str | None = field(default=None, repr=False)

    @property
    def url(self) -> str:
        """The URL engines connect with, user and password included."""
        user = quote(self.user, safe="") if self.user else ""
        return f"redis://{user}:{quote(self.password, safe='')}@127.0.0.1:{self.port}/0"

    @property
    def admin_url(self) -> str:
        """The ``default`` (admin) user's URL: for stopping the server and admin commands."""
        return f"redis://:{quote(self._admin_password, safe='')}@127.0.0.1:{self.port}/0"

    @property
    def _admin_password(self) -> str:
        return self.admin_password if self.admin_password is not None else self.password

    def client(self, *, admin: bool = False, **options: Any) -> redis.Redis:
        """A RESP2 client on the server, as the engine user or (``admin``) the admin."""
        user, password = (None, self._admin_password) if admin else (self.user, self.password)
        return redis.Redis(host="127.0.0.1", port=self.port, username=user, password=password,
                           **options)


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
            state = self._current() or self._spawn(persistent=persistent)
            if persistent and not state.persistent:
                state = replace(state, persistent=True)
                self._write_state(state)
            return state

    def acquire(self) -> Lease:
        """Start or reuse the server and register this engine as one of its users."""
        with self._locked():
            state = self._current() or self._spawn(persistent=False)
            clients = self.home / "clients"
            _private_dir(clients)
            path = clients / f"{os.getpid()}.{uuid.uuid4().hex}"
            os.close(_open_private(path, os.O_WRONLY | os.O_CREAT))
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
        _private_dir(self.home, parents=True)
        fd = _open_private(self.home / "server.lock", os.O_RDWR | os.O_CREAT)
        try:  # closing the descriptor releases the lock
            deadline = time.monotonic() + _LOCK_TIMEOUT_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ServerError(
                            f"Timed out waiting for the lock {self.home / 'server.lock'}"
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)

    def _read_state(self) -> ServerState | None:
        try:
            raw: dict[str, Any] = json.loads(self.state_path.read_text())
            return ServerState(**raw)
        except (OSError, ValueError, TypeError):
            return None

    def _write_state(self, state: ServerState) -> None:
        tmp = self.state_path.with_suffix(".tmp")
        fd = _open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
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

    def _current(self) -> ServerState | None:
        """The live state; a server started before the ACL user existed is upgraded first."""
        state = self._live_state()
        if state is None or state.user is not None:
            return state
        return self._upgrade(state)

    def _upgrade(self, legacy: ServerState) -> ServerState:
        """Give a server started by an older memory-engine (``default`` user only) the
        engine user; its password becomes the admin password."""
        _make_private(self.home)
        password = secrets.token_urlsafe(_PASSWORD_BYTES)
        state = replace(legacy, user=ENGINE_USER, password=password,
                        admin_password=legacy.password)
        try:
            _restrict(state, "reset", "on", f"#{_sha256(password)}", *ENGINE_ACL)
        except ServerError as exc:
            raise ServerError(
                f"The embedded server (pid {legacy.pid}) was started by an older memory-engine "
                f"and could not be upgraded ({exc}). Run `memory-engine server stop`."
            ) from exc
        self._write_state(state)
        return state

    def _spawn(self, *, persistent: bool) -> ServerState:
        launch = find_redis(self._binary, self._module)
        _private_dir(self.data_dir)
        _make_private(self.home)
        password = secrets.token_urlsafe(_PASSWORD_BYTES)
        admin_password = secrets.token_urlsafe(_PASSWORD_BYTES)
        last_error = ""
        for _ in range(3):  # a free port can be taken between probing and binding
            port = _free_port()
            conf = self.home / "redis.conf"
            fd = _open_private(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            with os.fdopen(fd, "w") as handle:
                handle.write(_config_text(port, self.data_dir, launch.module,
                                          password=password, admin_password=admin_password))
            log_fd = _open_private(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            with os.fdopen(log_fd, "ab") as log:
                # A session of its own: it outlives this process and Ctrl-C does not reach
                # it. umask 077: its AOF, RDB and rewrite files are the owner's only.
                proc = subprocess.Popen(
                    [launch.binary, "--include", str(conf)], stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                    cwd=self.home, umask=0o077)
            _CHILDREN[proc.pid] = proc
            state = ServerState(proc.pid, port, password, launch.binary, launch.module,
                                time.time(), persistent, ENGINE_USER, admin_password)
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
        """Wait until the new server answers the engine user; an empty string means ready."""
        client = state.client(socket_timeout=2.0, socket_connect_timeout=0.5)
        deadline = time.monotonic() + _START_TIMEOUT_S
        try:
            while time.monotonic() < deadline:
                if proc.poll() is not None:
                    return f"it exited with status {proc.returncode}: {self._log_tail()}"
                try:
                    client.ping()
                except redis.RedisError:  # not listening yet, or still loading the AOF
                    time.sleep(0.05)
                    continue
                try:
                    check_search_module(client, "the embedded server")
                    _restrict(state)
                except SearchModuleMissingError as exc:
                    _terminate(proc)
                    raise SearchModuleMissingError(
                        f"{exc} The binary {state.binary} was started without it; set "
                        "MEMORY_ENGINE_SEARCH_MODULE to the path of redisearch.so."
                    ) from exc
                except ServerError:
                    _terminate(proc)
                    raise
                return ""
            _terminate(proc)
            return f"it did not answer within {_START_TIMEOUT_S:.0f}s: {self._log_tail()}"
        finally:
            client.close()

    def _shutdown(self, state: ServerState, timeout: float) -> None:
        client = state.client(admin=True, socket_timeout=timeout)
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


def _restrict(state: ServerState, *rules: str) -> None:
    """As the admin, set the engine user's ``rules``, then deny it ``_EXTRA_DENIED``."""
    admin = state.client(admin=True, socket_timeout=5.0)
    try:
        if rules:
            admin.execute_command("ACL", "SETUSER", ENGINE_USER, *rules)
        for rule in _EXTRA_DENIED:
            try:
                admin.execute_command("ACL", "SETUSER", ENGINE_USER, rule)
            except redis.ResponseError as exc:
                # "Unknown command": this server lacks it (FUNCTION before Redis 7); fine
                if "unknown command" not in str(exc).lower():
                    raise
    except redis.RedisError as exc:
        raise ServerError(f"Could not set the ACL of the embedded server: {exc}") from exc
    finally:
        admin.close()


def _config_text(
    port: int, data_dir: Path, module: str | None, *, password: str, admin_password: str
) -> str:
    """redis.conf: loopback only, two users (passwords as SHA-256 only), AOF + RDB."""
    lines = [
        "bind 127.0.0.1",
        f"port {port}",
        "protected-mode yes",
        "daemonize no",
        "enable-debug-command no",
        "enable-module-command no",
        "enable-protected-configs no",
        f"user default on #{_sha256(admin_password)} ~* &* +@all",
        f"user {ENGINE_USER} on #{_sha256(password)} {' '.join(ENGINE_ACL)}",
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


def _sha256(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def _private_dir(path: Path, *, parents: bool = False) -> None:
    """Create ``path`` as 0700, or make an existing one 0700."""
    try:
        path.mkdir(mode=0o700, parents=parents, exist_ok=True)
        if path.stat().st_mode & 0o777 != 0o700:
            path.chmod(0o700)
    except OSError as exc:
        raise ServerError(f"Could not make {path} a private (0700) directory: {exc}") from exc


def _open_private(path: Path, flags: int) -> int:
    """``os.open`` a file as 0600: O_CREAT's mode does not change a file that exists."""
    fd = os.open(path, flags | os.O_NOFOLLOW, 0o600)
    try:
        if os.fstat(fd).st_mode & 0o777 != 0o600:
            os.fchmod(fd, 0o600)
    except OSError:
        os.close(fd)
        raise
    return fd


def _make_private(home: Path) -> None:
    """Tighten what an older version (or another umask) left: dirs 0700, files 0600."""
    try:
        for root, dirs, files in os.walk(home):
            for names, mode in ((dirs, 0o700), (files, 0o600)):
                for path in (Path(root, name) for name in names):
                    with contextlib.suppress(FileNotFoundError):  # a rewrite's temp file
                        if not path.is_symlink() and path.stat().st_mode & 0o777 != mode:
                            path.chmod(mode)
    except OSError as exc:
        raise ServerError(f"Could not make the files under {home} private: {exc}") from exc


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
    client = state.client(socket_timeout=2.0, socket_connect_timeout=1.0)
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
