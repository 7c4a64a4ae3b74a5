from pathlib import Path

import pytest

from memory_engine.exceptions import RedisNotFoundError
from memory_engine.server import ServerState, _config_text, find_redis, redact


def test_explicit_binary_must_exist(tmp_path: Path) -> None:
    with pytest.raises(RedisNotFoundError, match="not an executable"):
        find_redis(str(tmp_path / "redis-server"))


def test_wheels_are_found_when_installed() -> None:
    launch = find_redis()
    assert Path(launch.binary).is_file()
    assert launch.module is None or launch.module.endswith("redisearch.so")


def test_redact_hides_passwords() -> None:
    assert redact("redis://:s3cret@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact("rediss://bob:pw@host:6380") == "rediss://bob:***@host:6380"
    assert redact("redis://127.0.0.1:6379") == "redis://127.0.0.1:6379"


def test_config_binds_loopback_with_password_and_aof(tmp_path: Path) -> None:
    text = _config_text(7000, "pw", tmp_path, "/x/redisearch.so")
    lines = set(text.splitlines())
    assert {"bind 127.0.0.1", "port 7000", "requirepass pw", "appendonly yes",
            "appendfsync everysec", 'loadmodule "/x/redisearch.so"'} <= lines
    state = ServerState(1, 7000, "pw", "b", None, 0.0, False)
    assert state.url == "redis://:pw@127.0.0.1:7000/0"
