"""The extractive summarizer, the transcript an LLM summarizer reads, and absolute dates."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pytest

from memory_engine.lifecycle.summarize import (
    MIN_CONTENT_WORDS,
    SUMMARY_PROMPT,
    ExtractiveSummarizer,
    Summarizer,
    content_words,
    day,
    speaker,
    transcript,
)
from memory_engine.models import Kind, Memory, Role

SPEAKERS = ("Caroline", "Melanie")
LINE = re.compile(r"^On (\d{1,2} [A-Z][a-z]+ \d{4}): (.*)$")
LABEL = re.compile(r"(?:^| )(?:Caroline|Melanie|user|assistant): ")
SENTENCE = re.compile(r"(?<=[.!?])\s+")

FACTS = [
    "I adopted a golden retriever named Max yesterday.",
    "We went camping at Lake Tahoe last weekend.",
    "My daughter starts violin lessons on Friday.",
    "Caroline is researching adoption agencies in Portland.",
    "Melanie painted a sunrise over the lake in watercolour.",
    "The charity race raised 4,000 dollars for mental health.",
    "I finished reading Becoming by Michelle Obama.",
    "Our team shipped version 2.1 of the mobile app on Monday.",
    "She moved from Sweden to Canada four years ago.",
    "We booked flights to Lisbon for the second week of June.",
]
CHATTER = [
    "Wow, that's great!",
    "Thanks, sounds good!",
    "Haha, that's so cool.",
    "Oh wow, I love that!",
    "Yeah, totally.",
    "Hey, hi!",
]


def at(year: int, month: int, day_: int, hour: int = 12) -> float:
    return datetime(year, month, day_, hour, tzinfo=UTC).timestamp()


def turn(
    text: str, when: float, name: str | None = "Caroline", role: Role | None = Role.USER,
    mid: str = "m",
) -> Memory:
    return Memory(id=mid, user_id="ana", text=text, kind=Kind.TURN, session_id="s1",
                  role=role, name=name, created_at=when, last_accessed=when, access_count=0,
                  importance=0.5, metadata={})


def output_sentences(summary: str) -> list[str]:
    """The summary's sentences without the ``On <day>:`` and ``<speaker>:`` prefixes."""
    out: list[str] = []
    for line in summary.split("\n"):
        match = LINE.match(line)
        assert match, f"a line without its date: {line!r}"
        for chunk in LABEL.split(match.group(2)):
            out += [s for s in SENTENCE.split(chunk.strip()) if s]
    return out


def assert_invents_nothing(summary: str, memories: Sequence[Memory]) -> None:
    sentences = output_sentences(summary)
    assert sentences
    for sentence in sentences:
        assert any(sentence in m.text for m in memories), f"invented: {sentence!r}"


def test_day_writes_an_absolute_utc_date_without_padding() -> None:
    assert day(at(2023, 5, 8)) == "8 May 2023"
    assert day(at(2024, 1, 1, 0)) == "1 January 2024"
    assert day(datetime(2023, 5, 8, 23, 59, tzinfo=UTC).timestamp()) == "8 May 2023"
    assert day(at(2023, 12, 31, 23)) == "31 December 2023"


def test_speaker_is_the_name_else_the_role_else_nobody() -> None:
    assert speaker(turn("x", 0.0, name="Caroline")) == "Caroline"
    assert speaker(turn("x", 0.0, name=None, role=Role.ASSISTANT)) == "assistant"
    assert speaker(turn("x", 0.0, name=None, role=None)) is None


def test_content_words_skip_filler() -> None:
    assert content_words("Wow, that's great!") == []
    assert content_words("I adopted a dog named Max.") == ["adopted", "dog", "named", "max"]
    assert len(content_words("Thanks, sounds good!")) < MIN_CONTENT_WORDS


def test_extractive_summarizer_is_a_summarizer() -> None:
    summarizer = ExtractiveSummarizer()
    assert isinstance(summarizer, Summarizer)
    assert summarizer.name == "extractive"


@pytest.mark.parametrize("bad", [79, 0, -5, True, 100.0, "200", None])
def test_max_chars_must_be_an_integer_of_at_least_80(bad: object) -> None:
    with pytest.raises(ValueError, match="max_chars"):
        ExtractiveSummarizer(max_chars=bad)  # type: ignore[arg-type]


def test_empty_input_raises_value_error() -> None:
    with pytest.raises(ValueError, match="nothing to summarize"):
        ExtractiveSummarizer().summarize([])


def test_keeps_facts_drops_chatter_dates_lines_and_names_speakers() -> None:
    memories = [
        turn("Wow, that's great! I adopted a golden retriever named Max yesterday.",
             at(2023, 5, 8, 10), "Caroline"),
        turn("That's awesome! We went camping at Lake Tahoe last weekend.",
             at(2023, 5, 8, 11), "Melanie"),
        turn("Thanks, sounds good!", at(2023, 5, 9, 9), "Caroline"),
        turn("My daughter starts violin lessons on Friday.", at(2023, 5, 9, 10), "Melanie"),
    ]
    summary = ExtractiveSummarizer().summarize(memories)
    assert summary == (
        "On 8 May 2023: Caroline: I adopted a golden retriever named Max yesterday. "
        "Melanie: We went camping at Lake Tahoe last weekend.\n"
        "On 9 May 2023: Melanie: My daughter starts violin lessons on Friday."
    )
    assert "Wow" not in summary
    assert "awesome" not in summary
    assert "Thanks" not in summary
    assert_invents_nothing(summary, memories)


def test_one_speaker_label_for_consecutive_sentences_of_one_speaker() -> None:
    memories = [turn(FACTS[0], at(2023, 5, 8, 10)), turn(FACTS[1], at(2023, 5, 8, 11))]
    summary = ExtractiveSummarizer().summarize(memories)
    assert summary == f"On 8 May 2023: Caroline: {FACTS[0]} {FACTS[1]}"


def test_speakers_without_a_name_are_labelled_by_role() -> None:
    memories = [turn(FACTS[0], at(2023, 5, 8), name=None, role=Role.USER),
                turn(FACTS[1], at(2023, 5, 8), name=None, role=Role.ASSISTANT),
                turn(FACTS[2], at(2023, 5, 8), name=None, role=None)]
    summary = ExtractiveSummarizer().summarize(memories)
    assert summary == f"On 8 May 2023: user: {FACTS[0]} assistant: {FACTS[1]} {FACTS[2]}"


def test_memories_without_a_speaker_get_no_label() -> None:
    memories = [turn(FACTS[0], at(2023, 5, 8), name=None, role=None),
                turn(FACTS[1], at(2023, 5, 8), name=None, role=None)]
    assert ExtractiveSummarizer().summarize(memories) == f"On 8 May 2023: {FACTS[0]} {FACTS[1]}"
    assert transcript(memories[:1]) == f"[8 May 2023] {FACTS[0]}"


def test_falls_back_to_the_longest_text_when_everything_is_chatter() -> None:
    memories = [turn("Wow!", at(2023, 5, 8)),
                turn("Haha, that's so cool, thanks so much!", at(2023, 5, 9), "Melanie"),
                turn("Nice.", at(2023, 5, 10))]
    summary = ExtractiveSummarizer().summarize(memories)
    assert summary == "On 9 May 2023: Melanie: Haha, that's so cool, thanks so much!"


def test_respects_max_chars_dropping_whole_sentences_with_fewest_content_words() -> None:
    memories = [turn(f"{FACTS[2 * i]} {FACTS[2 * i + 1]}", at(2023, 5, 1 + i), SPEAKERS[i % 2])
                for i in range(len(FACTS) // 2)]
    full = ExtractiveSummarizer(max_chars=10_000).summarize(memories)
    assert len(full) > 400
    assert set(output_sentences(full)) == set(FACTS)
    summarizer = ExtractiveSummarizer(max_chars=300)
    summary = summarizer.summarize(memories)
    assert 0 < len(summary) <= 300
    kept = output_sentences(summary)
    assert set(kept) <= set(FACTS)  # whole input sentences: none is cut
    assert summary.endswith(".")
    dropped = [s for s in FACTS if s not in kept]
    assert dropped
    assert max(len(set(content_words(s))) for s in dropped) <= min(
        len(set(content_words(s))) for s in kept)
    assert_invents_nothing(summary, memories)


def test_a_single_sentence_longer_than_max_chars_is_cut_to_it() -> None:
    # the one case where a cut is not avoidable: nothing shorter is left to keep
    long = "Caroline " + " ".join(f"visited museum{i}" for i in range(40)) + "."
    summary = ExtractiveSummarizer(max_chars=80).summarize([turn(long, at(2023, 5, 8))])
    assert len(summary) == 80
    assert summary.startswith("On 8 May 2023: Caroline: Caroline visited museum0")


def test_an_over_long_sentence_is_dropped_rather_than_cut_when_others_fit() -> None:
    # Expected (the class docstring: "nothing is cut mid-sentence"): when whole sentences fit
    # within max_chars, a sentence too long to fit on its own is dropped, not cut. Today
    # (summarize.py, ExtractiveSummarizer.summarize) the drop loop removes the sentences with
    # the fewest content words, so it drops the two short facts that fit, keeps the long one
    # (it has the most content words) and the final `[: self.max_chars]` cuts it mid-word.
    long = "Caroline " + " ".join(f"visited museum{i}" for i in range(40)) + "."
    memories = [turn(FACTS[0], at(2023, 5, 8, 10)), turn(long, at(2023, 5, 8, 11)),
                turn(FACTS[1], at(2023, 5, 9))]
    summary = ExtractiveSummarizer(max_chars=200).summarize(memories)
    assert len(summary) <= 200
    assert set(output_sentences(summary)) <= {FACTS[0], FACTS[1], long}, (
        f"a sentence was cut although whole ones fit: {summary!r}")


def test_keeps_the_order_of_the_turns() -> None:
    memories = [turn(FACTS[i], at(2023, 5, 8, i), SPEAKERS[i % 2]) for i in range(6)]
    assert output_sentences(ExtractiveSummarizer().summarize(memories)) == FACTS[:6]


def test_a_new_line_starts_for_every_day() -> None:
    memories = [turn(FACTS[i], at(2023, 5, 8 + i // 2, 9 + i)) for i in range(6)]
    lines = ExtractiveSummarizer().summarize(memories).split("\n")
    assert [LINE.match(line).group(1) for line in lines if LINE.match(line)] == [
        "8 May 2023", "9 May 2023", "10 May 2023"]
    assert len(lines) == 3


@pytest.mark.parametrize("seed", range(40))
def test_never_invents_on_random_conversations(seed: int) -> None:
    rng = np.random.default_rng(seed)
    memories = []
    for i in range(int(rng.integers(1, 12))):
        pool = [*FACTS, *CHATTER]
        picks = rng.choice(len(pool), int(rng.integers(1, 4)), replace=False)
        text = " ".join(pool[int(p)] for p in picks)
        memories.append(turn(text, at(2023, 5, 1 + i // 3, 8 + i % 3),
                             SPEAKERS[int(rng.integers(2))], mid=f"m{i}"))
    max_chars = int(rng.integers(120, 1_500))
    summary = ExtractiveSummarizer(max_chars=max_chars).summarize(memories)
    assert len(summary) <= max_chars
    assert_invents_nothing(summary, memories)
    said = set(SENTENCE.split(" ".join(m.text for m in memories)))
    if said & set(FACTS):
        assert not set(output_sentences(summary)) & set(CHATTER)


def test_transcript_has_one_dated_line_per_memory() -> None:
    memories = [
        turn("I adopted a dog.", at(2023, 5, 8, 10), "Caroline"),
        turn("Wow, that's great!", at(2023, 5, 8, 11), "Melanie"),
        turn("We named him Max.", at(2023, 5, 9, 10), None, Role.ASSISTANT),
    ]
    assert transcript(memories).split("\n") == [
        "[8 May 2023] Caroline: I adopted a dog.",
        "[8 May 2023] Melanie: Wow, that's great!",
        "[9 May 2023] assistant: We named him Max.",
    ]
    assert transcript([]) == ""


def test_summary_prompt_asks_for_absolute_dates_and_nothing_invented() -> None:
    assert "absolute" in SUMMARY_PROMPT
    assert "Do not add anything" in SUMMARY_PROMPT
    assert "yesterday" in SUMMARY_PROMPT  # named as what not to write
