"""The article's chain with long-term memory: history per (user, session), plus the
memories of the user's earlier sessions that are relevant to the new message."""

from __future__ import annotations

import datetime as dt
import warnings
from collections.abc import Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_core.messages import BaseMessage
from langchain_core.runnables import (
    ConfigurableFieldSpec,
    Runnable,
    RunnableConfig,
    RunnableLambda,
    RunnablePassthrough,
)
from langchain_core.runnables.history import RunnableWithMessageHistory

from ..engine import MemoryEngine
from ..exceptions import InvalidArgumentError
from ._history import DEFAULT_KEY_PREFIX, MemoryChatMessageHistory, message_text
from ._retriever import MemoryRetriever

NO_MEMORIES = "(none)"


def format_memories(docs: Sequence[Document]) -> str:
    """Memories as prompt lines: ``- (2024-05-01) Alice: text``, or ``(none)``."""
    if not docs:
        return NO_MEMORIES
    lines = []
    for doc in docs:
        meta = doc.metadata
        day = dt.datetime.fromtimestamp(meta["created_at"], dt.UTC).date().isoformat()
        who = meta.get("name") or meta.get("role") or "memory"
        lines.append(f"- ({day}) {who}: {doc.page_content}")
    return "\n".join(lines)


def _query(value: Any) -> str:
    if isinstance(value, BaseMessage):
        return message_text(value)
    if isinstance(value, list) and value and isinstance(value[-1], BaseMessage):
        return message_text(value[-1])
    return str(value)


def with_long_term_memory(
    runnable: Runnable[Any, Any],
    *,
    engine: MemoryEngine,
    k: int = 4,
    input_messages_key: str = "input",
    history_messages_key: str = "history",
    memories_key: str = "memories",
    ttl: int | None = None,
    key_prefix: str = DEFAULT_KEY_PREFIX,
) -> RunnableWithMessageHistory:
    """Wrap ``runnable`` (e.g. ``prompt | llm``) like the article's multi-user example, and
    give it one more input, ``memories_key``: the ``k`` memories of the same user, from
    *earlier* sessions, most relevant to the new message (found with ``MemoryRetriever``,
    formatted by ``format_memories``). The current session's turns are in the history
    already, so they are left out of the memories.

    Invoke with ``config={"configurable": {"user_id": ..., "session_id": ...}}``; the
    prompt should use ``{memories}`` (e.g. in the system message).

    Built on ``RunnableWithMessageHistory``, as the article is. langchain-core deprecates it
    from 1.3.3 and removes it in 2.0, so memory-engine requires ``langchain-core<2`` and keeps
    that warning to itself: the caller did not choose the class and can do nothing about it.
    """
    if k < 1:
        raise InvalidArgumentError(f"k must be >= 1, not {k}")

    def ids(config: RunnableConfig) -> tuple[str, str]:
        conf = config.get("configurable") or {}
        user, session = conf.get("user_id"), conf.get("session_id")
        if not user or not session:
            raise InvalidArgumentError(
                'invoke with config={"configurable": {"user_id": ..., "session_id": ...}}')
        return str(user), str(session)

    def earlier(docs: list[Document], session: str) -> str:
        return format_memories([d for d in docs if d.metadata["session_id"] != session][:k])

    def recall(inputs: dict[str, Any], config: RunnableConfig) -> str:
        user, session = ids(config)
        retriever = MemoryRetriever.from_engine(engine, user, k=min(3 * k, 100))
        return earlier(retriever.invoke(_query(inputs[input_messages_key]), config), session)

    async def arecall(inputs: dict[str, Any], config: RunnableConfig) -> str:
        user, session = ids(config)
        retriever = MemoryRetriever.from_engine(engine, user, k=min(3 * k, 100))
        docs = await retriever.ainvoke(_query(inputs[input_messages_key]), config)
        return earlier(docs, session)

    def history(user_id: str, session_id: str) -> MemoryChatMessageHistory:
        return MemoryChatMessageHistory(session_id=session_id, user_id=user_id, engine=engine,
                                        ttl=ttl, key_prefix=key_prefix)

    chain = RunnablePassthrough.assign(
        **{memories_key: RunnableLambda(recall, afunc=arecall, name="recall_memories")}
    ) | runnable
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*RunnableWithMessageHistory is deprecated",
                                category=DeprecationWarning)
        return RunnableWithMessageHistory(
            chain,
            history,
            input_messages_key=input_messages_key,
            history_messages_key=history_messages_key,
            history_factory_config=[
                ConfigurableFieldSpec(id="user_id", annotation=str, name="User ID",
                                      description="Whose memories and history.", default="",
                                      is_shared=True),
                ConfigurableFieldSpec(id="session_id", annotation=str, name="Session ID",
                                      description="The conversation.", default="",
                                      is_shared=True),
            ],
        )
