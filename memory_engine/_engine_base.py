"""What ``MemoryEngine`` and ``AsyncMemoryEngine`` share, with no I/O of its own."""


from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from tqdm import tqdm

from . import _validation as check
from ._core import EngineCore
from ._maintain import MaintenanceReport
from ._redis_setup import redact
from .config import EngineConfig
from .embeddings import CachedEmbedder, Embedder, SentenceTransformerEmbedder
from .exceptions import InvalidArgumentError, MemoryEngineError, SummarizerError
from .lifecycle import ExtractiveSummarizer, LifecyclePolicy, Summarizer
from .models import Kind, NewMemory, Role, Vector
from .server import EmbeddedServer, Lease

EMBED_CHUNK = 256  # texts per progress-bar step
WRITE_LATER_BATCH = 64  # add_later items per add_many call (the model sorts them by length)


def new_item(
    text: str,
    session_id: str | None,
    kind: Kind | str,
    role: Role | str | None,
    name: str | None,
    created_at: float | None,
    importance: float,
    metadata: Mapping[str, Any] | None,
    embedding: Vector | Sequence[float] | None,
) -> NewMemory:
    """The ``NewMemory`` that ``add`` writes (validated later, with the rest of a batch)."""
    return NewMemory(
        text=text, session_id=session_id, kind=kind, role=role, name=name,
        created_at=created_at, importance=importance,
        metadata=metadata if isinstance(metadata, dict) else dict(metadata or {}),
        embedding=None if embedding is None else np.asarray(embedding, dtype=np.float32),
    )


class EngineBase:
    """What both engines share and that does no I/O."""

    def __init__(
        self,
        config: EngineConfig | None = None,
        *,
        embedder: Embedder | None = None,
        redis_url: str | None = None,
        summarizer: Summarizer | None = None,
    ) -> None:
        if summarizer is not None and not isinstance(summarizer, Summarizer):
            raise InvalidArgumentError(
                "summarizer must have a name and a summarize(memories) method; "
                f"got {type(summarizer).__name__}")
        self.summarizer: Summarizer = summarizer or ExtractiveSummarizer()
        cfg = config if config is not None else EngineConfig.from_env()
        if redis_url is not None:
            cfg = cfg.with_(redis_url=redis_url)
        if embedder is None:
            embedder = SentenceTransformerEmbedder(
                cfg.embedding_model, batch_size=cfg.embedding_batch_size,
                query_backend=cfg.query_backend, cache_dir=cfg.home / "onnx",
            )
        if not isinstance(embedder, CachedEmbedder):
            embedder = CachedEmbedder(embedder, cfg.query_cache_size)
        self.config = cfg
        self.embedder: CachedEmbedder = embedder
        self._core = EngineCore(cfg, embedder)
        self._lease: Lease | None = None
        self._closed = False

    @property
    def url(self) -> str | None:
        """The Redis URL in use (password redacted), once connected."""
        url = self.config.redis_url or (self._lease.url if self._lease else None)
        return redact(url) if url else None

    def _server(self) -> EmbeddedServer:
        cfg = self.config
        return EmbeddedServer(cfg.home, binary=cfg.redis_server, module=cfg.search_module)

    def _warm_query_path(self) -> None:
        """Build the query encoder (the ONNX export, made once per model) while connecting,
        so the first search does not pay for it."""
        inner = self.embedder.inner
        if isinstance(inner, SentenceTransformerEmbedder):
            inner.query_backend  # noqa: B018  # the property builds it

    def _check_open(self) -> None:
        if self._closed:
            raise MemoryEngineError("this engine is closed")

    def _embed_all(self, texts: list[str], progress: bool) -> list[Vector]:
        """Embed in chunks so a progress bar can move; blocking (the async engine threads it)."""
        chunks = [texts[i : i + EMBED_CHUNK] for i in range(0, len(texts), EMBED_CHUNK)]
        out: list[Vector] = []
        with tqdm(total=len(texts), desc="embedding", unit="text", disable=not progress) as bar:
            for chunk in chunks:
                out.extend(self.embedder.embed_documents(chunk))
                bar.update(len(chunk))
        return out




    def _maintenance(
        self, now: object, dry_run: object, policy: LifecyclePolicy | None
    ) -> tuple[float, LifecyclePolicy, MaintenanceReport]:
        """Validated ``maintain`` arguments: the time, the policy and an empty report."""
        when = check.timestamp(now, "now")
        clock = time.time()
        if not isinstance(dry_run, bool):
            raise InvalidArgumentError(f"dry_run must be True or False, not {dry_run!r}")
        chosen = self.config.lifecycle if policy is None else policy
        if not isinstance(chosen, LifecyclePolicy):
            raise InvalidArgumentError(
                f"policy must be a LifecyclePolicy, not {type(chosen).__name__}")
        report = MaintenanceReport(clock if when is None else when, dry_run, self.summarizer.name)
        return report.now, chosen, report

    @staticmethod
    def _summary_text(text: object, size: int) -> str:
        """A summarizer's answer, checked: a non-empty string."""
        if not isinstance(text, str) or not text.strip():
            raise SummarizerError(
                f"the summarizer returned {text!r} for a group of {size} memories; "
                "nothing of that group was changed")
        return text.strip()


def progress_bar(users: int, enabled: bool, desc: str = "maintaining") -> tqdm[Any]:
    """The bar ``maintain``, ``backup`` and ``restore`` move with ``progress=True``, one step
    per user."""
    return tqdm(total=users, desc=desc, unit="user", disable=not enabled)
