import importlib.metadata

import memory_engine


def test_all_is_sorted_and_complete() -> None:
    public = {n for n in dir(memory_engine) if not n.startswith("_") and n[0].isupper()}
    assert set(memory_engine.__all__) >= public
    assert list(memory_engine.__all__) == sorted(memory_engine.__all__)
    for name in memory_engine.__all__:
        assert hasattr(memory_engine, name), name


def test_version_has_one_source() -> None:
    assert memory_engine.__version__ == importlib.metadata.version("memory-engine")


def test_every_error_derives_from_the_root() -> None:
    errors = [getattr(memory_engine, n) for n in memory_engine.__all__ if n.endswith("Error")]
    assert len(errors) >= 15
    for error in errors:
        assert issubclass(error, memory_engine.MemoryEngineError), error
    assert issubclass(memory_engine.InvalidInputError, ValueError)
    assert issubclass(memory_engine.MemoryNotFoundError, KeyError)
