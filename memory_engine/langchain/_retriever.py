"""``MemoryRetriever``: one user's memories as a LangChain retriever."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Mapping
from typing import Any, Self

from langchain_core.callbacks import (
    AsyncCallbackManagerForRetrieverRun,
    CallbackManagerForRetrieverRun,
)
from langchain_core.documents import Document
from langchain_core.retrievers import BaseRetriever
from pydantic import ConfigDict, Field, model_validator

from .. import _validation as check
from ..engine import AsyncMemoryEngine, MemoryEngine
from ..exceptions import ConfigurationError, InvalidArgumentError, InvalidInputError
from ..models import SearchHit, SearchMode

# What a call may pass on to ``search``: every keyword it takes except the bound user.
_SEARCH_OPTIONS = frozenset(inspect.signature(MemoryEngine.search).parameters) - {
    "self", "user_id", "query",
}
# Set through the retriever's own fields, so ``search_kwargs`` may not repeat them.
_FIELD_OPTIONS = frozenset({"k", "mode", "session_id"})
# LangChain reads ``verbose`` from the invoke kwargs itself and then passes it on.
_LANGCHAIN_OPTIONS = frozenset({"verbose"})


def hit_to_document(hit: SearchHit) -> Document:
    """A search hit as a ``Document``: the text as content, everything else as metadata.

    The metadata is JSON-serialisable: enums become their values, and the caller's own
    metadata is kept, untouched, under the ``metadata`` key.
    """
    memory, parts = hit.memory, hit.parts
    metadata: dict[str, Any] = {
        "id": memory.id,
        "user_id": memory.user_id,
        "session_id": memory.session_id,
        "kind": memory.kind.value,
        "role": None if memory.role is None else memory.role.value,
        "name": memory.name,
        "created_at": float(memory.created_at),
        "score": float(hit.score),
        "score_parts": {
            "keyword": None if parts.keyword is None else float(parts.keyword),
            "vector": None if parts.vector is None else float(parts.vector),
            "decay": None if parts.decay is None else float(parts.decay),
        },
        "metadata": memory.metadata,
    }
    return Document(page_content=memory.text, id=memory.id, metadata=metadata)


class MemoryRetriever(BaseRetriever):
    """The memories of one user, most relevant first, as LangChain ``Document`` objects.

    Give it a ``MemoryEngine``, an ``AsyncMemoryEngine``, or both: ``invoke`` searches with
    the sync engine and ``ainvoke`` awaits the async one (or runs the sync engine in a worker
    thread when there is no async one). The retriever never closes its engines.

    Every call is bound to ``user_id``; ``k`` and any other ``search`` option can be changed
    for one call: ``retriever.invoke("query", k=2, kinds=["fact"])``.

    Attributes:
        engine: The engine ``invoke`` searches with.
        async_engine: The engine ``ainvoke`` awaits.
        user_id: Whose memories are searched; no call can widen it.
        session_id: Only memories of this session, when set.
        k: How many documents to return (at most).
        mode: ``hybrid`` (default), ``vector`` or ``keyword``.
        search_kwargs: Further ``search`` options for every call (``kinds``, ``since``,
            ``until``, ``min_score``, ``dedupe``, ``decay_weight``, ...).

    Example:
        >>> retriever = MemoryRetriever.from_engine(engine, "alice", k=3)
        >>> docs = retriever.invoke("where does my sister live?")
        >>> docs[0].metadata["score_parts"]
        {'keyword': 2.1, 'vector': 0.62, 'decay': None}
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    engine: MemoryEngine | None = None
    async_engine: AsyncMemoryEngine | None = None
    user_id: str
    session_id: str | None = None
    k: int = Field(default=4, strict=True)  # no silent True -> 1 or "3" -> 3
    mode: str = SearchMode.HYBRID.value
    search_kwargs: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check_settings(self) -> Self:
        """Reject a retriever that could not search, before it is used."""
        engine = self.engine if self.engine is not None else self.async_engine
        if engine is None:
            raise ConfigurationError(
                "MemoryRetriever needs an engine: pass engine=MemoryEngine(...), "
                "async_engine=AsyncMemoryEngine(...), or both"
            )
        try:
            check.user_id(self.user_id)
            check.session_id(self.session_id)
            check.k(self.k, engine.config.max_k)
            self.mode = check.mode(self.mode).value
        except InvalidInputError as exc:
            raise ConfigurationError(f"MemoryRetriever: {exc}") from exc
        clashing = sorted(_FIELD_OPTIONS & self.search_kwargs.keys())
        if clashing:
            raise ConfigurationError(
                f"search_kwargs may not set {clashing}: they are MemoryRetriever fields; "
                "set them on the retriever or pass them per call"
            )
        unknown = sorted(self.search_kwargs.keys() - _SEARCH_OPTIONS)
        if unknown:
            raise ConfigurationError(
                f"search_kwargs has options that search does not take: {unknown}; "
                f"it takes {sorted(_SEARCH_OPTIONS - _FIELD_OPTIONS)}"
            )
        return self

    @classmethod
    def from_engine(
        cls, engine: MemoryEngine | AsyncMemoryEngine, user_id: str, **kwargs: Any
    ) -> MemoryRetriever:
        """A retriever over one engine of either kind.

        Args:
            engine: A ``MemoryEngine`` (used by ``invoke``, and threaded by ``ainvoke``) or an
                ``AsyncMemoryEngine`` (used by ``ainvoke`` only).
            user_id: Whose memories are searched.
            **kwargs: Other fields: ``session_id``, ``k``, ``mode``, ``search_kwargs``, ...
        """
        if isinstance(engine, MemoryEngine):
            return cls(engine=engine, user_id=user_id, **kwargs)
        if isinstance(engine, AsyncMemoryEngine):
            return cls(async_engine=engine, user_id=user_id, **kwargs)
        raise ConfigurationError(
            f"from_engine needs a MemoryEngine or an AsyncMemoryEngine; "
            f"got {type(engine).__name__}"
        )

    def _options(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The ``search`` keywords of one call: the fields, then ``search_kwargs``, then
        the call's own options."""
        per_call = {k: v for k, v in overrides.items() if k not in _LANGCHAIN_OPTIONS}
        unknown = sorted(per_call.keys() - _SEARCH_OPTIONS)
        if unknown:
            raise InvalidArgumentError(
                f"MemoryRetriever got options that search does not take: {unknown}; "
                f"it takes {sorted(_SEARCH_OPTIONS)}"
            )
        return {
            "k": self.k, "mode": self.mode, "session_id": self.session_id,
            **self.search_kwargs, **per_call,
        }

    def _search(self, query: str, options: dict[str, Any]) -> list[Document]:
        if self.engine is None:
            raise ConfigurationError(
                "this MemoryRetriever has only an async engine: call ainvoke, "
                "or pass engine=MemoryEngine(...) as well"
            )
        hits = self.engine.search(self.user_id, query, **options)
        return [hit_to_document(hit) for hit in hits]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        """Search the sync engine.

        Args:
            query: What to recall.
            run_manager: LangChain's callback manager for this run.
            **kwargs: ``search`` options for this call only (``k``, ``kinds``, ...).

        Raises:
            InvalidArgumentError: An option ``search`` does not take.
            ConfigurationError: The retriever has no sync engine.
        """
        return self._search(query, self._options(kwargs))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **kwargs: Any
    ) -> list[Document]:
        """Await the async engine, or run the sync engine in a worker thread.

        Args:
            query: What to recall.
            run_manager: LangChain's callback manager for this run.
            **kwargs: ``search`` options for this call only (``k``, ``kinds``, ...).

        Raises:
            InvalidArgumentError: An option ``search`` does not take.
        """
        options = self._options(kwargs)
        if self.async_engine is None:
            return await asyncio.to_thread(self._search, query, options)
        hits = await self.async_engine.search(self.user_id, query, **options)
        return [hit_to_document(hit) for hit in hits]
