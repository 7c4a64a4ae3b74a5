import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import pytest

from memory_engine.exceptions import RedisNotFoundError
from memory_engine.server import (
    ENGINE_ACL,
    ENGINE_USER,
    ServerState,
    _config_text,
    find_redis,
    redact,
)


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
    assert redact("redis://s3cret@host:1/0") == "redis://:***@host:1/0"  # user or password?


def test_redact_keeps_tls_parameters_and_hides_query_passwords() -> None:
    url = ("rediss://memory-engine:pw@127.0.0.1:6380/0?ssl_cert_reqs=required"
           "&ssl_ca_certs=/a@b/ca.pem")
    assert redact(url) == ("rediss://memory-engine:***@127.0.0.1:6380/0?ssl_cert_reqs=required"
                           "&ssl_ca_certs=/a@b/ca.pem")
    shown = redact("redis://127.0.0.1:1/0?password=hunter2&ssl_password=k3y&db=2")
    assert "hunter2" not in shown
    assert "k3y" not in shown
    assert shown.endswith("?password=***&ssl_password=***&db=2")


def test_config_binds_loopback_with_users_and_aof(tmp_path: Path) -> None:
    text = _config_text(7000, tmp_path, "/x/redisearch.so", password="engine-pw",
                        admin_password="admin-pw")
    lines = set(text.splitlines())
    assert {"bind 127.0.0.1", "port 7000", "protected-mode yes", "appendonly yes",
            "appendfsync everysec", 'loadmodule "/x/redisearch.so"',
            "enable-debug-command no", "enable-module-command no"} <= lines
    admin_hash = hashlib.sha256(b"admin-pw").hexdigest()
    engine_hash = hashlib.sha256(b"engine-pw").hexdigest()
    assert f"user default on #{admin_hash} ~* &* +@all" in lines
    assert f"user {ENGINE_USER} on #{engine_hash} {' '.join(ENGINE_ACL)}" in lines
    assert "engine-pw" not in text  # only hashes: the config file gives no password away
    assert "admin-pw" not in text
    assert not any(line.startswith("requirepass") for line in lines)


def test_engine_acl_denies_the_dangerous_commands() -> None:
    rules = list(ENGINE_ACL)
    assert rules.index("-@dangerous") > rules.index("+@all")  # later rules win
    assert "-acl" in rules
    assert "resetchannels" in rules
    assert "~*" in rules  # one server serves every key prefix under a home


def test_state_urls_and_repr() -> None:
    state = ServerState(1, 7000, "s3cret-e", "b", None, 0.0, False, ENGINE_USER, "s3cret-a")
    assert state.url == "redis://memory-engine:s3cret-e@127.0.0.1:7000/0"
    assert state.admin_url == "redis://:s3cret-a@127.0.0.1:7000/0"
    assert "s3cret" not in repr(state)  # a logged or printed state shows no password
    assert "user='memory-engine'" in repr(state)


def test_state_file_of_the_old_format_still_loads() -> None:
    old = {"pid": 1, "port": 7000, "password": "pw", "binary": "b", "module": None,
           "started_at": 0.0, "persistent": False}
    state = ServerState(**json.loads(json.dumps(old)))
    assert state.user is None
    assert state.url == "redis://:pw@127.0.0.1:7000/0"  # the default user, as before
    assert state.admin_url == "redis://:pw@127.0.0.1:7000/0"
    assert asdict(state) == {**old, "user": None, "admin_password": None}
