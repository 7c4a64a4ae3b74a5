"""``LLMSummarizer``: maintenance summaries written by a LangChain chat model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.language_models import LanguageModelInput
from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langchain_core.runnables import Runnable

from ..exceptions import InvalidArgumentError, SummarizerError
from ..lifecycle.summarize import SUMMARY_PROMPT, transcript
from ..models import Memory

# Attributes chat models keep their model name in (ChatOpenAI: model_name; most others: model).
_MODEL_ATTRIBUTES = ("model_name", "model", "model_id")
# How deep ``.bound`` is followed through wrappers such as ``with_retry()`` or ``bind()``.
_MAX_UNWRAP = 5


def model_name(llm: object) -> str | None:
    """The model name a chat model (or a ``bind``/``with_retry`` wrapper of one) reports."""
    for _ in range(_MAX_UNWRAP):
        for attribute in _MODEL_ATTRIBUTES:
            value = getattr(llm, attribute, None)
            if isinstance(value, str) and value.strip():
                return value.strip()
        bound = getattr(llm, "bound", None)
        if bound is None:
            return None
        llm = bound
    return None


def reply_text(reply: object) -> str:
    """The text of a chat model's reply, stripped.

    Raises:
        SummarizerError: the reply is not a message, or holds no text.
    """
    if not isinstance(reply, BaseMessage):
        raise SummarizerError(
            f"the chat model answered with {type(reply).__name__}, not a message")
    content: Any = reply.content
    if isinstance(content, list):
        # Content blocks (Anthropic, multimodal models): keep the text ones, in order.
        content = "".join(
            part if isinstance(part, str)
            else part.get("text", "") if isinstance(part, dict) and part.get("type") == "text"
            else ""
            for part in content
        )
    if not isinstance(content, str):
        raise SummarizerError(
            f"the chat model's reply has {type(content).__name__} content, not text")
    text = content.strip()
    if not text:
        raise SummarizerError(
            f"the chat model's reply holds no text (content {reply.content!r}); "
            "nothing of that group was changed")
    return text


class LLMSummarizer:
    """A ``Summarizer`` that asks a LangChain chat model to rewrite stale memories.

    The model receives ``prompt`` as the system message and the memories as a dated
    transcript (``lifecycle.summarize.transcript``), one ``[8 May 2023] Caroline: ...`` line
    each, oldest first, so it can turn relative dates into absolute ones. Nothing is sent
    when the summarizer is made; only ``maintain`` calls the model.

    Errors from the model itself (network, rate limits) are left to the engine, which
    raises them as ``SummarizerError`` and leaves that group unchanged.

    Args:
        llm: Any chat model (``ChatOpenAI(...)``, ``ChatAnthropic(...)``), or a wrapper of
            one such as ``llm.with_retry()``.
        prompt: The system message.

    Example:
        >>> engine = MemoryEngine(config, summarizer=LLMSummarizer(ChatOpenAI(model="gpt-4o-mini")))
        >>> engine.maintain("alice")
    """

    def __init__(
        self, llm: Runnable[LanguageModelInput, BaseMessage], *, prompt: str = SUMMARY_PROMPT
    ) -> None:
        if not isinstance(llm, Runnable):
            raise InvalidArgumentError(
                f"llm must be a LangChain chat model; got {type(llm).__name__}")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidArgumentError(f"prompt must be a non-empty string; got {prompt!r}")
        self.llm = llm
        self.prompt = prompt
        found = model_name(llm)
        self.name: str = f"llm:{found}" if found else "llm"

    def messages(self, memories: Sequence[Memory]) -> list[BaseMessage]:
        """What the model receives for one group: the prompt, then the dated transcript."""
        if not memories:
            raise InvalidArgumentError("nothing to summarize")
        return [SystemMessage(content=self.prompt), HumanMessage(content=transcript(memories))]

    def summarize(self, memories: Sequence[Memory]) -> str:
        """The model's summary of ``memories`` (oldest first, one user's)."""
        return reply_text(self.llm.invoke(self.messages(memories)))

    async def asummarize(self, memories: Sequence[Memory]) -> str:
        """``summarize``, awaiting the model (``ainvoke``)."""
        return reply_text(await self.llm.ainvoke(self.messages(memories)))

    def __repr__(self) -> str:
        return f"LLMSummarizer(name={self.name!r})"


__all__ = ["LLMSummarizer", "model_name", "reply_text"]
