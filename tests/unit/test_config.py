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


def test_encryption_and_backup_settings_from_the_environment(tmp_path: Path) -> None:
    config = EngineConfig.from_env({
        "MEMORY_ENGINE_MASTER_KEY_FILE": str(tmp_path / "k"),
        "MEMORY_ENGINE_PREVIOUS_MASTER_KEYS": "old1, old2,",
        "MEMORY_ENGINE_BACKUP_TO": "s3://bucket/prefix",
        "MEMORY_ENGINE_BACKUP_INTERVAL": "3600",
    })
    assert config.master_key_file == tmp_path / "k"
    assert config.previous_master_keys == ("old1", "old2")
    assert config.backup_to == "s3://bucket/prefix"
    assert config.backup_interval == 3600.0
    assert config.encrypted
    assert not EngineConfig().encrypted


def test_one_master_key_source_only() -> None:
    with pytest.raises(ConfigurationError, match="one master key source"):
        EngineConfig(master_key="a", master_key_file=Path("/k"))
    with pytest.raises(ConfigurationError, match="callable"):
        EngineConfig(key_provider="not callable")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="backup_interval"):
        EngineConfig(backup_interval=0)
