"""Summarizers: what a group of stale memories is rewritten as. The protocol, the extractive
summarizer (the default: no LLM, deterministic) and the prompt an LLM summarizer sends.

The LLM summarizer over a LangChain chat model is ``memory_engine.langchain.LLMSummarizer``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol, runtime_checkable

from ..models import Memory

_SENTENCE = re.compile(r"(?<=[.!?])\s+|\s*\n\s*")
_WORD = re.compile(r"[A-Za-z0-9][\w'-]*")
# Words that carry no fact about the user; a sentence needs MIN_CONTENT_WORDS others to stay.
_FILLER_WORDS = """
a about above after again all also am an and any are as at be been being but by can could
did do does doing for from had has have having he her here hers him his how i if in into is
it its just me more most my no nor not now of off oh on once only or our out over own really
same she so some such than that the their them then there these they this those through to
too very was we were what when where which who whom why will with would yeah yes you your
yours wow great awesome amazing cool nice thanks thank hey hi hello glad sounds good love
totally sure okay ok lol haha absolutely definitely that's it's i'm you're don't can't
"""
_FILLER = frozenset(_FILLER_WORDS.split())
MIN_CONTENT_WORDS = 2


@runtime_checkable
class Summarizer(Protocol):
    """Rewrites a group of memories (oldest first, all of one user) as one text.

    ``name`` is recorded in the audit trail. Implementations may also define
    ``async def asummarize(memories) -> str``; the async engine uses it when present.
    """

    name: str

    def summarize(self, memories: Sequence[Memory]) -> str: ...


def day(ts: float) -> str:
    """An absolute date, as summaries write it: ``8 May 2023``."""
    when = datetime.fromtimestamp(ts, UTC)
    return f"{when.day} {when.strftime('%B %Y')}"


def speaker(memory: Memory) -> str | None:
    """Who said it: the name, else the role, else None (no label is written)."""
    return memory.name or (memory.role.value if memory.role else None)


def informative(text: str) -> bool:
    """Whether ``text`` says anything beyond chatter (``MIN_CONTENT_WORDS`` content words)."""
    return len(set(content_words(text))) >= MIN_CONTENT_WORDS


def content_words(sentence: str) -> list[str]:
    return [w for w in _WORD.findall(sentence.lower()) if w not in _FILLER and len(w) > 1]


class ExtractiveSummarizer:
    """Keeps the sentences that carry facts, drops the chatter, dates every line.

    Each memory contributes its sentences with at least ``MIN_CONTENT_WORDS`` content words
    (a turn that has none keeps its longest sentence only if nothing else of the group
    would remain). Lines are grouped by day, as ``On 8 May 2023: Caroline: ... Melanie: ...``,
    so relative dates in the text keep an absolute anchor. If the result is longer than
    ``max_chars``, sentences longer than ``max_chars`` go first, then those with the fewest
    content words; nothing is invented, and only a lone sentence longer than ``max_chars`` is
    ever cut.
    """

    name = "extractive"

    def __init__(self, max_chars: int = 1_200):
        if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 80:
            raise ValueError(f"max_chars must be an integer >= 80; got {max_chars!r}")
        self.max_chars = max_chars

    def summarize(self, memories: Sequence[Memory]) -> str:
        if not memories:
            raise ValueError("nothing to summarize")
        # (memory index, sentence index, sentence, weight)
        kept: list[tuple[int, int, str, int]] = []
        for i, m in enumerate(memories):
            for j, sentence in enumerate(s.strip() for s in _SENTENCE.split(m.text.strip())):
                weight = len(set(content_words(sentence)))  # informative() of one sentence
                if sentence and weight >= MIN_CONTENT_WORDS:
                    kept.append((i, j, sentence, weight))
        if not kept:  # all chatter: the longest sentence is still what was said
            i, m = max(enumerate(memories), key=lambda p: len(p[1].text))
            kept = [(i, 0, m.text.strip(), 0)]
        while len(kept) > 1 and len(self._render(memories, kept)) > self.max_chars:
            # A sentence that cannot fit even alone goes first; then the least informative.
            weakest = min(range(len(kept)), key=lambda n: (
                len(kept[n][2]) <= self.max_chars, kept[n][3], -kept[n][0], -kept[n][1]))
            kept.pop(weakest)
        return self._render(memories, kept)[: self.max_chars]

    @staticmethod
    def _render(memories: Sequence[Memory], kept: Sequence[tuple[int, int, str, int]]) -> str:
        lines: list[str] = []
        current_day: str | None = None
        current_speaker: str | None = None
        parts: list[str] = []
        for i, _, sentence, _ in kept:
            m = memories[i]
            when, who = day(m.created_at), speaker(m)
            if when != current_day:
                if parts:
                    lines.append(" ".join(parts))
                parts, current_day, current_speaker = [f"On {when}:"], when, None
            if who != current_speaker:
                if who is not None:
                    parts.append(f"{who}:")
                current_speaker = who
            parts.append(sentence)
        if parts:
            lines.append(" ".join(parts))
        return "\n".join(lines)


SUMMARY_PROMPT = """\
You rewrite old conversation turns as a short memory about the user.
Write the facts they contain about the people in them: what they did, have, like, plan and
feel, with names. Make every date absolute, using the date each turn was said (write
"on 7 May 2023", never "yesterday" or "last week"). Keep names, places, numbers and dates
exactly. Do not add anything the turns do not say, and do not comment on the conversation.
Answer with the memory only, in plain sentences."""


def transcript(memories: Sequence[Memory]) -> str:
    """The turns as an LLM summarizer receives them: one line each, dated."""
    return "\n".join(
        f"[{day(m.created_at)}] {_label(m)}{' '.join(m.text.split())}" for m in memories)


def _label(memory: Memory) -> str:
    who = speaker(memory)
    return "" if who is None else f"{who}: "


__all__ = [
    "SUMMARY_PROMPT",
    "ExtractiveSummarizer",
    "Summarizer",
    "content_words",
    "day",
    "speaker",
    "transcript",
]
