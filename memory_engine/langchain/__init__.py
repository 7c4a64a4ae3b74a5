"""LangChain integration: a user's memories as a ``BaseRetriever``, chat history that
remembers across sessions, the chain that uses both, and ``LLMSummarizer``, which lets a
chat model write the summaries of ``maintain``.

Imported on its own, so ``import memory_engine`` never loads LangChain::

    from memory_engine.langchain import MemoryChatMessageHistory, MemoryRetriever

    retriever = MemoryRetriever.from_engine(engine, "alice", k=3)
    docs = retriever.invoke("where does my sister live?", k=2)
    history = MemoryChatMessageHistory(session_id="s1", user_id="alice")
"""

from ._chain import format_memories, with_long_term_memory
from ._history import MemoryChatMessageHistory
from ._retriever import MemoryRetriever
from ._summarizer import LLMSummarizer

__all__ = [
    "LLMSummarizer", "MemoryChatMessageHistory", "MemoryRetriever", "format_memories",
    "with_long_term_memory",
]
