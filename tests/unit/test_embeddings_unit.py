import numpy as np
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from memory_engine.embeddings import CachedEmbedder, LangChainEmbedder, normalized
from memory_engine.exceptions import EmbeddingDimensionError, EmbeddingError
from tests.fakes import HashingEmbedder


def test_normalized_checks_shape_and_values() -> None:
    out = normalized([3.0, 4.0], 2)
    assert out.dtype == np.float32
    assert np.allclose(out, [0.6, 0.8])
    for bad in ([1.0, 2.0, 3.0], [[1.0, float("nan")]], [0.0, 0.0], "abc"):
        with pytest.raises(EmbeddingDimensionError):
            normalized(bad, 2)
    with pytest.raises(EmbeddingError):
        normalized([[1.0, 0.0]], 2, rows=2)


def test_query_cache_is_bounded_lru() -> None:
    cache = CachedEmbedder(HashingEmbedder(), max_size=2)
    a = cache.embed_query("a")
    assert cache.embed_query("a") is a
    assert cache.hits == 1
    cache.embed_query("b")
    cache.embed_query("a")  # a becomes most recent
    cache.embed_query("c")  # evicts b
    assert len(cache) == 2
    assert cache.peek("b") is None
    assert cache.peek("a") is not None
    with pytest.raises(ValueError, match="read-only"):
        a[0] = 1.0  # cached vectors are shared, so frozen


def test_cache_size_zero_disables_caching() -> None:
    cache = CachedEmbedder(HashingEmbedder(), max_size=0)
    cache.embed_query("a")
    cache.embed_query("a")
    assert len(cache) == 0
    assert cache.misses == 2


def test_langchain_adapter_normalises_and_checks_dims() -> None:
    # DeterministicFakeEmbedding is langchain-core's own named fake, used here as a fake.
    adapter = LangChainEmbedder(DeterministicFakeEmbedding(size=16))
    assert adapter.dims == 16
    docs = adapter.embed_documents(["x", "y"])
    assert docs.shape == (2, 16)
    assert np.allclose(np.linalg.norm(docs, axis=1), 1.0)
    assert np.allclose(adapter.embed_query("x"), docs[0])
    wrong = LangChainEmbedder(DeterministicFakeEmbedding(size=16), dims=8)
    with pytest.raises(EmbeddingDimensionError):
        wrong.embed_documents(["x"])
