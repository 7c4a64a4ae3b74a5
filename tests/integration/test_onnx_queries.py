"""The ONNX query path (the ``fast`` extra): the real model exported and run by onnxruntime
gives the reference torch vectors, is cached once per model, and can be turned off."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from memory_engine import ConfigurationError, EngineConfig, MemoryEngine
from memory_engine.embeddings import SentenceTransformerEmbedder

pytestmark = pytest.mark.integration

TEXTS = [
    "What did Caroline do at the LGBTQ support group?",
    "a",
    "¿Dónde está el parque para perros más cercano?",
    " ".join(["My beagle Biscuit loves long walks by the river on Sunday mornings."] * 40),
]


@pytest.fixture(scope="module")
def torch_reference() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(query_backend="torch")


def test_onnx_queries_match_torch(
    tmp_path: Path, torch_reference: SentenceTransformerEmbedder
) -> None:
    fast = SentenceTransformerEmbedder(cache_dir=tmp_path)
    assert fast.query_backend == "onnx"
    assert len(list(tmp_path.glob("*.onnx"))) == 1
    for text in TEXTS:  # the long one is embedded in windows, averaged, as documents are
        a, b = fast.embed_query(text), torch_reference.embed_query(text)
        assert a.shape == b.shape == (384,)
        assert a.dtype == np.float32
        assert float(a @ b) >= 0.9999, text[:40]
    assert torch_reference.query_backend == "torch"


def test_the_export_is_made_once_and_reused(tmp_path: Path) -> None:
    SentenceTransformerEmbedder(cache_dir=tmp_path).embed_query("first")
    (export,) = tmp_path.glob("*.onnx")
    stamp = export.stat().st_mtime_ns
    again = SentenceTransformerEmbedder(cache_dir=tmp_path)
    assert again.query_backend == "onnx"
    assert export.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == [export.name]  # no temporary file left


def test_a_broken_export_is_made_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
    torch_reference: SentenceTransformerEmbedder,
) -> None:
    SentenceTransformerEmbedder(cache_dir=tmp_path).embed_query("first")
    (export,) = tmp_path.glob("*.onnx")
    export.write_bytes(b"not an onnx model")
    with caplog.at_level(logging.WARNING, logger="memory_engine"):
        embedder = SentenceTransformerEmbedder(cache_dir=tmp_path)
        assert embedder.query_backend == "onnx"
    assert "re-exporting the unreadable ONNX query model" in caplog.text
    assert export.stat().st_size > 1_000_000
    assert float(embedder.embed_query(TEXTS[0]) @ torch_reference.embed_query(TEXTS[0])) > 0.9999


def test_a_model_the_exporter_cannot_reproduce_keeps_torch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    from memory_engine.embeddings import _onnx
    from memory_engine.exceptions import EmbeddingError

    def unsupported(model: object) -> tuple[str, bool]:
        raise _onnx.UnsupportedModel("pipeline ['Transformer', 'Pooling', 'Dense']")

    monkeypatch.setattr(_onnx, "pipeline", unsupported)
    with caplog.at_level(logging.WARNING, logger="memory_engine"):
        assert SentenceTransformerEmbedder(cache_dir=tmp_path).query_backend == "torch"
    assert "ONNX path failed" in caplog.text
    with pytest.raises(EmbeddingError, match="ONNX query path cannot be used"):
        SentenceTransformerEmbedder(cache_dir=tmp_path, query_backend="onnx").embed_query("x")


def test_backend_is_configurable_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigurationError, match="query_backend"):
        SentenceTransformerEmbedder(query_backend="gpu")
    with pytest.raises(ConfigurationError, match="query_backend"):
        EngineConfig(query_backend="gpu")
    monkeypatch.setenv("MEMORY_ENGINE_QUERY_BACKEND", "torch")
    assert EngineConfig.from_env().query_backend == "torch"


def test_engine_search_is_the_same_with_either_backend(
    config: EngineConfig, tmp_path: Path, redis_client: object,
) -> None:
    texts = ["I adopted a beagle named Biscuit.", "I play the cello on Tuesdays.",
             "My sister lives in Lisbon.", "Biscuit chews my running shoes."]
    ranked = {}
    for backend in ("torch", "onnx"):
        cfg = config.with_(query_backend=backend, home=tmp_path, record_access=False)
        with MemoryEngine(cfg) as engine:
            if backend == "torch":
                engine.add_many("ana", texts)
            assert engine.embedder.inner.query_backend == backend  # type: ignore[attr-defined]
            ranked[backend] = [[h.memory.text for h in engine.search("ana", q, k=4, mode="vector")]
                               for q in ("what is my dog called?", "music", "family")]
    assert ranked["onnx"] == ranked["torch"]
    with MemoryEngine(config) as engine:
        engine.forget_user("ana")
