"""The ``memory-engine`` command line, run as a user would run it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis

pytestmark = pytest.mark.integration


def _cli(*args: str, env: dict[str, str] | None = None, check: bool = True,
         timeout: float = 180) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    proc = subprocess.run([sys.executable, "-m", "memory_engine.cli", *args], env=full_env,
                          capture_output=True, text=True, timeout=timeout)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def test_add_search_forget(redis_url: str, redis_client: redis.Redis) -> None:
    index = f"cli{uuid.uuid4().hex[:8]}"
    base = ["--redis-url", redis_url, "--index", index]
    try:
        memory_id = _cli(*base, "add", "--user", "ana", "--session", "s1", "--role", "user",
                         "I keep my spare key under the blue flowerpot").stdout.strip()
        assert len(memory_id) == 32
        _cli(*base, "add", "--user", "ben", "Ben hides his key in the mailbox")
        out = json.loads(_cli(*base, "search", "--user", "ana", "--json", "--k", "5",
                              "where is the spare key?").stdout)
        assert [h["id"] for h in out["hits"]] == [memory_id]
        assert out["hits"][0]["session_id"] == "s1"
        assert out["latency_ms"] > 0
        assert out["connect_ms"] > 0  # the model load, reported apart from the search
        table = _cli(*base, "search", "--user", "ana", "--mode", "keyword", "flowerpot")
        assert memory_id in table.stdout
        assert "1 hit in" in table.stderr
        assert "(connecting and loading the model:" in table.stderr
        assert "deleted 1 memory of" in _cli(*base, "forget", "--user", "ana").stdout
        out = json.loads(_cli(*base, "search", "--user", "ana", "--json", "key").stdout)
        assert out["hits"] == []
        ben = json.loads(_cli(*base, "search", "--user", "ben", "--json", "key").stdout)
        assert len(ben["hits"]) == 1
    finally:
        redis_client.execute_command("FT.DROPINDEX", index, "DD")


def test_errors_are_one_clear_line(redis_url: str, redis_client: redis.Redis) -> None:
    index = f"cli{uuid.uuid4().hex[:8]}"
    base = ["--redis-url", redis_url, "--index", index]
    try:
        proc = _cli(*base, "add", "--user", "  ", "text", check=False)
        assert proc.returncode == 2
        assert proc.stderr.startswith("memory-engine: error: user_id must not be empty")
        assert "Traceback" not in proc.stderr
        proc = _cli(*base, "forget", "--user", "ana", "--id", "0" * 32, check=False)
        assert proc.returncode == 2
        assert "no memory" in proc.stderr
    finally:
        redis_client.execute_command("FT.DROPINDEX", index, "DD")


def test_server_lifecycle_and_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [k for k in os.environ if k.startswith("MEMORY_ENGINE_")]:
        monkeypatch.delenv(name)
    env = {"MEMORY_ENGINE_HOME": str(tmp_path)}
    try:
        assert _cli("server", "status", env=env, check=False).returncode == 1
        assert "running: pid" in _cli("server", "start", env=env).stdout
        assert "kept until" in _cli("server", "status", env=env).stdout
        demo = _cli("demo", env=env).stdout
        assert "stored 29 turns for 2 users" in demo
        assert "-> no memory crossed users" in demo
        assert "Leo: I bought a used road bike, a blue Bianchi from the 1990s." in demo
        assert "recall latency over 10 queries: p50" in demo
        # the demo did not stop a server started with `server start`
        assert "kept until" in _cli("server", "status", env=env).stdout
        assert _cli("server", "stop", env=env).stdout.strip() == "stopped"
        assert _cli("server", "status", env=env, check=False).returncode == 1
    finally:
        _cli("server", "stop", env=env, check=False)
