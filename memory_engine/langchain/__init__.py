"""LangChain integration: a user's memories as a ``BaseRetriever``.

Imported on its own, so ``import memory_engine`` never loads LangChain's retriever stack::

    from memory_engine.langchain import MemoryRetriever

    retriever = MemoryRetriever.from_engine(engine, "alice", k=3)
    docs = retriever.invoke("where does my sister live?", k=2)
"""

from ._retriever import MemoryRetriever

__all__ = ["MemoryRetriever"]
