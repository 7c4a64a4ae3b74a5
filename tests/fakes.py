"""Test doubles that are clearly not the real thing.

``HashingEmbedder`` is a deterministic FAKE embedder for unit tests of pure logic: it hashes
words into a fixed-size vector. It is never presented as the real model; integration tests
use the bundled all-MiniLM-L6-v2.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


class HashingEmbedder:
    """FAKE embedder: bag of hashed words, L2-normalised. Same text, same vector."""

    def __init__(self, dims: int = 32):
        self._dims = dims

    @property
    def dims(self) -> int:
        return self._dims

    @property
    def name(self) -> str:
        return f"fake-hashing:{self._dims}"

    def _one(self, text: str) -> npt.NDArray[np.float32]:
        vec = np.zeros(self._dims, dtype=np.float32)
        for word in re.findall(r"\w+", text.lower()) or [text]:
            digest = hashlib.sha256(word.encode()).digest()
            vec[int.from_bytes(digest[:4], "little") % self._dims] += 1.0
        vec[0] += 1e-3  # never all zeros
        return vec / np.linalg.norm(vec)

    def embed_documents(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        if not texts:
            return np.empty((0, self._dims), np.float32)
        return np.stack([self._one(t) for t in texts])

    def embed_query(self, text: str) -> npt.NDArray[np.float32]:
        return self._one(text)
