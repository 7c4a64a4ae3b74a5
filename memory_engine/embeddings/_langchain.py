"""Use any LangChain ``Embeddings`` as the engine's embedder."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..exceptions import EmbeddingError
from ._base import Matrix, normalized

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings


class LangChainEmbedder:
    """Adapts a LangChain ``Embeddings`` (OpenAI, Ollama, HuggingFace, ...) to ``Embedder``.

    Args:
        embeddings: The LangChain embeddings object.
        dims: Its vector size. When None it is measured on first use by embedding one short
            text (the constructor itself never calls the model).
        name: Identifies the model in the index metadata; defaults to the class name and its
            ``model`` attribute when it has one.
    """

    def __init__(self, embeddings: Embeddings, *, dims: int | None = None, name: str | None = None):
        self._embeddings = embeddings
        self._dims = dims
        model = getattr(embeddings, "model", None) or getattr(embeddings, "model_name", None)
        self._name = name or f"langchain:{type(embeddings).__name__}:{model or ''}"

    @property
    def name(self) -> str:
        return self._name

    @property
    def dims(self) -> int:
        if self._dims is None:
            self._dims = len(self._embeddings.embed_query("dimension probe"))
        return self._dims

    def embed_documents(self, texts: Sequence[str]) -> Matrix:
        if not texts:
            return np.empty((0, self.dims), dtype=np.float32)
        try:
            raw = self._embeddings.embed_documents(list(texts))
        except Exception as exc:  # wrap whatever the provider raises
            raise EmbeddingError(f"{self.name} failed to embed documents: {exc}") from exc
        return normalized(raw, self.dims, rows=len(texts))

    def embed_query(self, text: str) -> Matrix:
        try:
            raw = self._embeddings.embed_query(text)
        except Exception as exc:  # wrap whatever the provider raises
            raise EmbeddingError(f"{self.name} failed to embed a query: {exc}") from exc
        return normalized(raw, self.dims)
