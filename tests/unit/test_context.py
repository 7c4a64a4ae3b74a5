"""What a turn is indexed with besides its own words: ``conversation_context``. Pure."""

from __future__ import annotations

from memory_engine._context import conversation_context, sessions_of, speaker_line
from memory_engine.models import Kind, Memory


def turn(
    memory_id: str, text: str, *, name: str | None = None, session: str | None = "s1",
    kind: Kind = Kind.TURN,
) -> Memory:
    return Memory(
        id=memory_id, user_id="alice", text=text, kind=kind, session_id=session, role=None,
        name=name, created_at=1.0, last_accessed=1.0, access_count=0, importance=0.5,
        metadata={},
    )


def test_speaker_line() -> None:
    assert speaker_line("Ana", "hi") == "Ana: hi"
    assert speaker_line(None, "hi") == "hi"
    assert speaker_line("", "hi") == "hi"


def test_links_previous_id_within_a_batch() -> None:
    batch = [turn("t1", "hello", name="Ana"), turn("t2", "hi Ana", name="Ben"),
             turn("t3", "how are you?", name="Ana")]
    ctx = conversation_context(batch, {}, depth=2)
    assert [m.previous_id for m in ctx.memories] == [None, "t1", "t2"]
    # everything else is kept as it was
    assert [m.text for m in ctx.memories] == ["hello", "hi Ana", "how are you?"]
    assert [m.id for m in ctx.memories] == ["t1", "t2", "t3"]


def test_links_to_the_stored_tail() -> None:
    tails = {"s1": [("old1", "Ana", "I adopted a dog"), ("old2", "Ben", "What breed?")]}
    ctx = conversation_context([turn("t3", "A beagle", name="Ana")], tails, depth=2)
    assert ctx.memories[0].previous_id == "old2"
    assert ctx.embed_texts == ["Ana: I adopted a dog\nBen: What breed?\nAna: A beagle"]
    assert ctx.keyword_context == ["Ben: What breed?"]


def test_embed_text_has_earlier_turns_up_to_depth() -> None:
    batch = [turn(f"t{i}", f"line {i}", name="Ana" if i % 2 else "Ben") for i in range(1, 5)]
    ctx = conversation_context(batch, {}, depth=2)
    assert ctx.embed_texts == [
        "Ana: line 1",
        "Ana: line 1\nBen: line 2",
        "Ana: line 1\nBen: line 2\nAna: line 3",
        "Ben: line 2\nAna: line 3\nBen: line 4",
    ]
    deeper = conversation_context(batch, {}, depth=3)
    assert deeper.embed_texts[3] == "Ana: line 1\nBen: line 2\nAna: line 3\nBen: line 4"
    shallow = conversation_context(batch, {}, depth=1)
    assert shallow.embed_texts[3] == "Ana: line 3\nBen: line 4"


def test_keyword_context_is_the_previous_turn() -> None:
    batch = [turn("t1", "I adopted a dog named Biscuit", name="Ana"),
             turn("t2", "Wow, that's amazing!", name="Ben"), turn("t3", "no name here")]
    ctx = conversation_context(batch, {}, depth=2)
    assert ctx.keyword_context == [
        None, "Ana: I adopted a dog named Biscuit", "Ben: Wow, that's amazing!"]
    assert ctx.embed_texts[2].endswith("\nno name here")  # no speaker: just the text


def test_non_turns_and_session_less_memories_get_no_context() -> None:
    batch = [
        turn("t1", "first turn", name="Ana"),
        turn("f1", "Ana is vegetarian", kind=Kind.FACT, name="Ana"),
        turn("x1", "no session", session=None, name="Ana"),
        turn("sum", "they talked", kind=Kind.SUMMARY),
        turn("t2", "second turn", name="Ben"),
    ]
    ctx = conversation_context(batch, {"s1": [("old", "Zoe", "before all")]}, depth=2)
    by_id = {m.id: (m, e, k) for m, e, k in zip(
        ctx.memories, ctx.embed_texts, ctx.keyword_context, strict=True)}
    for memory_id, own in [("f1", "Ana: Ana is vegetarian"), ("x1", "Ana: no session"),
                           ("sum", "they talked")]:
        memory, embed, keyword = by_id[memory_id]
        assert memory.previous_id is None
        assert embed == own
        assert keyword is None
    # the non-turns are not part of the chain: t2 follows t1, t1 follows the stored tail
    assert by_id["t1"][0].previous_id == "old"
    assert by_id["t2"][0].previous_id == "t1"
    assert by_id["t2"][1] == "Zoe: before all\nAna: first turn\nBen: second turn"
    assert ctx.tails == {"s1": ["t1", "t2"]}


def test_sessions_are_separate() -> None:
    batch = [turn("a1", "in a", session="a"), turn("b1", "in b", session="b"),
             turn("a2", "in a again", session="a")]
    ctx = conversation_context(batch, {"b": [("b0", None, "stored b")]}, depth=2)
    assert [m.previous_id for m in ctx.memories] == [None, "b0", "a1"]
    assert ctx.embed_texts == ["in a", "stored b\nin b", "in a\nin a again"]
    assert ctx.tails == {"a": ["a1", "a2"], "b": ["b0", "b1"]}


def test_depth_zero_turns_context_off() -> None:
    batch = [turn("t1", "I adopted a dog", name="Ana"), turn("t2", "Wow!", name="Ben")]
    ctx = conversation_context(batch, {"s1": [("old", "Zoe", "hello")]}, depth=0)
    assert ctx.embed_texts == ["Ana: I adopted a dog", "Ben: Wow!"]
    assert ctx.keyword_context == [None, None]
    # the chain is still recorded, and one id per session is kept for it
    assert [m.previous_id for m in ctx.memories] == ["old", "t1"]
    assert ctx.tails == {"s1": ["t2"]}


def test_tails_keep_the_last_ids_of_touched_sessions_only() -> None:
    tails = {"s1": [("o1", None, "x"), ("o2", None, "y")], "untouched": [("u1", None, "z")]}
    batch = [turn(f"t{i}", f"turn {i}") for i in range(5)]
    assert conversation_context(batch, tails, depth=2).tails == {"s1": ["t3", "t4"]}
    assert conversation_context(batch, tails, depth=3).tails == {"s1": ["t2", "t3", "t4"]}
    assert conversation_context(batch, tails, depth=1).tails == {"s1": ["t4"]}
    one = conversation_context([turn("n", "new")], tails, depth=3)
    assert one.tails == {"s1": ["o1", "o2", "n"]}
    assert conversation_context([turn("f", "fact", kind=Kind.FACT)], tails, depth=2).tails == {}


def test_input_tails_are_not_mutated() -> None:
    stored = [("o1", None, "x")]
    tails = {"s1": stored}
    conversation_context([turn("t1", "new")], tails, depth=2)
    assert tails == {"s1": [("o1", None, "x")]}


def test_sessions_of() -> None:
    batch = [turn("a", "x", session="s2"), turn("b", "x", session="s1"),
             turn("c", "x", session="s2"), turn("d", "x", session=None),
             turn("e", "x", session="s3", kind=Kind.FACT)]
    assert sessions_of(batch) == ["s2", "s1"]
