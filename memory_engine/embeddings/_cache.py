"""A bounded, thread-safe, in-process cache of query embeddings."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from ._base import Embedder, Matrix


class CachedEmbedder:
    """Wraps an embedder; repeated queries skip the model (LRU, ``max_size`` entries).

    Documents are never cached: they are embedded once, when written.
    """

    def __init__(self, inner: Embedder, max_size: int = 2048):
        self.inner = inner
        self.max_size = max_size
        self._cache: OrderedDict[str, Matrix] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    @property
    def dims(self) -> int:
        return self.inner.dims

    @property
    def name(self) -> str:
        return self.inner.name

    def embed_documents(self, texts: Sequence[str]) -> Matrix:
        return self.inner.embed_documents(texts)

    def peek(self, text: str) -> Matrix | None:
        """The cached vector of a query, or None; never calls the model."""
        with self._lock:
            vector = self._cache.get(text)
            if vector is not None:
                self._cache.move_to_end(text)
                self.hits += 1
            return vector

    def embed_query(self, text: str) -> Matrix:
        cached = self.peek(text)
        if cached is not None:
            return cached
        with self._lock:
            self.misses += 1
        vector = self.inner.embed_query(text)
        vector.setflags(write=False)  # shared between callers: nobody may change it
        if self.max_size:
            with self._lock:
                self._cache[text] = vector
                self._cache.move_to_end(text)
                while len(self._cache) > self.max_size:
                    self._cache.popitem(last=False)
        return vector

    def clear(self) -> None:
        """Drop every cached query vector."""
        with self._lock:
            self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)
