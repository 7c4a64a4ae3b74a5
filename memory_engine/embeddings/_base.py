"""The ``Embedder`` protocol and the checks every embedder's output goes through."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from ..exceptions import EmbeddingDimensionError, EmbeddingError

Matrix = npt.NDArray[np.float32]


@runtime_checkable
class Embedder(Protocol):
    """Turns text into vectors. Outputs are L2-normalised float32.

    Attributes:
        dims: The vector size.
        name: Identifies the model; stored with the index so that vectors from different
            models are never mixed in one index.
    """

    @property
    def dims(self) -> int: ...

    @property
    def name(self) -> str: ...

    def embed_documents(self, texts: Sequence[str]) -> Matrix:
        """Embed many texts; returns an ``(len(texts), dims)`` float32 matrix."""
        ...

    def embed_query(self, text: str) -> Matrix:
        """Embed one query; returns a ``(dims,)`` float32 vector."""
        ...


def normalized(vectors: object, dims: int, *, rows: int | None = None) -> Matrix:
    """Check shape and values of embedder or caller output; return L2-normalised float32.

    Args:
        vectors: One vector or a matrix (anything ``numpy.asarray`` accepts).
        dims: The expected vector size.
        rows: The expected number of rows, when a matrix is expected.

    Raises:
        EmbeddingDimensionError: wrong size, or NaN / infinite / all-zero values.
    """
    try:
        array = np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise EmbeddingDimensionError(f"embedding is not a numeric vector: {exc}") from exc
    one = array.ndim == 1
    matrix = array.reshape(1, -1) if one else array
    if matrix.ndim != 2 or matrix.shape[1] != dims:
        raise EmbeddingDimensionError(
            f"embedding has shape {array.shape}; this index stores {dims}-dimensional vectors"
        )
    if rows is not None and matrix.shape[0] != rows:
        raise EmbeddingError(f"the embedder returned {matrix.shape[0]} vectors for {rows} texts")
    if not np.isfinite(matrix).all():
        raise EmbeddingDimensionError("embedding contains NaN or infinite values")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    if (norms == 0).any():
        raise EmbeddingDimensionError("embedding is all zeros; cosine distance is undefined")
    out: Matrix = (matrix / norms).astype(np.float32, copy=False)
    if one:
        vector: Matrix = out[0]
        return vector
    return out
