"""Embedders: the ``Embedder`` protocol, sentence-transformers, LangChain, and a query cache."""

from ._base import Embedder, normalized
from ._cache import CachedEmbedder
from ._langchain import LangChainEmbedder
from ._sentence_transformers import BUNDLED_MODEL, SentenceTransformerEmbedder, bundled_model_path

__all__ = [
    "BUNDLED_MODEL",
    "CachedEmbedder",
    "Embedder",
    "LangChainEmbedder",
    "SentenceTransformerEmbedder",
    "bundled_model_path",
    "normalized",
]
