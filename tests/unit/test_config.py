from pathlib import Path

import pytest

from memory_engine import ConfigurationError, EngineConfig


def test_defaults_need_no_environment() -> None:
    cfg = EngineConfig.from_env({})
    assert cfg.redis_url is None
    assert cfg.home.name == "memory-engine"
    assert cfg.index_name == "memory_engine"


def test_environment_is_read_at_the_edge() -> None:
    cfg = EngineConfig.from_env({
        "MEMORY_ENGINE_REDIS_URL": "redis://127.0.0.1:6380",
        "MEMORY_ENGINE_HOME": "/tmp/x",
        "MEMORY_ENGINE_INDEX": "mine",
        "MEMORY_ENGINE_MAX_TEXT_CHARS": "500",
    }, key_prefix="other")
    assert cfg.redis_url == "redis://127.0.0.1:6380"
    assert cfg.home == Path("/tmp/x")
    assert (cfg.index_name, cfg.key_prefix, cfg.max_text_chars) == ("mine", "other", 500)


@pytest.mark.parametrize(
    "changes",
    [{"index_name": "has space"}, {"key_prefix": "a{b}"}, {"max_k": 0}, {"hnsw_m": True},
     {"query_cache_size": -1}, {"query_cache_size": "5"}, {"query_cache_size": 2.5}],
)
def test_bad_settings_are_rejected(changes: dict) -> None:
    with pytest.raises(ConfigurationError):
        EngineConfig(**changes)


def test_bad_integer_in_environment() -> None:
    with pytest.raises(ConfigurationError, match="MEMORY_ENGINE_MAX_TEXT_CHARS"):
        EngineConfig.from_env({"MEMORY_ENGINE_MAX_TEXT_CHARS": "lots"})


def test_repr_shows_no_secret() -> None:
    config = EngineConfig(redis_url="rediss://bob:s3cret@h:1/0", master_key="k" * 43 + "=",
                          previous_master_keys=("old-secret",))
    text = repr(config)
    assert "s3cret" not in text
    assert "k" * 43 not in text
    assert "old-secret" not in text
    assert "index_name='memory_engine'" in text
