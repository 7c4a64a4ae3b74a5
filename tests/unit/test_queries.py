import re

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from redisvl.utils.token_escaper import TokenEscaper

from memory_engine.models import Kind, SearchMode
from memory_engine.retrieval._queries import (
    SearchRequest,
    filter_expression,
    keyword_command,
    query_terms,
    vector_command,
)


def _req(user: str = "alice", query: str = "hello", **kw: object) -> SearchRequest:
    return SearchRequest(user_id=user, query=query, k=5, mode=SearchMode.VECTOR, **kw)  # type: ignore[arg-type]


@given(st.text(min_size=1, max_size=50))
def test_user_filter_is_one_tag_clause(user: str) -> None:
    expr = str(filter_expression(_req(user)))
    assert expr.startswith("@user_id:{")
    assert expr.endswith("}")
    inner = expr[len("@user_id:{") : -1]
    # Nothing in the value can close the tag clause or start another one.
    assert "}" not in inner
    assert "{" not in inner
    assert "|" not in inner
    assert " " not in inner


def test_optional_filters() -> None:
    expr = str(filter_expression(_req(session_id="s1", kinds=(Kind.FACT, Kind.TURN),
                                      since=10.0, until=20.0)))
    assert "@session_id:{s1}" in expr
    assert "@kind:{fact|turn}" in expr
    assert "@created:[10" in expr
    assert "20" in expr


def test_query_terms_escape_syntax() -> None:
    assert query_terms("Where does SHE live?") == ["live"]
    assert query_terms("Who did what?") == ["who", "did", "what"]  # nothing else is left
    assert query_terms("c-b @text:(x) | y*") == ["c", "b", "text", "x", "y"]
    assert query_terms("??? !!!") == []
    # "_" alone is a RediSearch syntax error (found by the isolation property test)
    assert query_terms("_ __init__ foo_bar") == ["\\_", "\\_\\_init\\_\\_", "foo\\_bar"]
    assert query_terms("is it the one?") == ["one"]
    assert len(query_terms(" ".join(f"w{i}" for i in range(500)))) == 64


def test_no_word_character_needs_escaping_but_the_underscore() -> None:
    # query_terms sends \w words as they are (only "_" escaped): every character a word can
    # hold, in the Basic Multilingual Plane, passes redisvl's escaper unchanged.
    word = re.compile(r"\w", re.UNICODE)
    chars = [c for c in map(chr, range(0x10000)) if word.fullmatch(c) and c != "_"]
    assert len(chars) > 40_000
    assert TokenEscaper().escape("".join(chars)) == "".join(chars)
    assert TokenEscaper().escape("a-b") != "a-b"  # the escaper does escape punctuation


def test_keyword_command_none_without_words() -> None:
    assert keyword_command("idx", _req(query="?!")) is None
    assert keyword_command("idx", _req(query="is it a")) is None
    cmd = keyword_command("idx", _req(query="peanut allergy"))
    assert cmd is not None
    assert cmd[:3] == [
        "FT.SEARCH", "idx", "(@user_id:{alice}) @text|name|context:(peanut|allergy)"]
    assert "BM25" in cmd
    assert "WITHSCORES" in cmd


def test_vector_command_prefilters_by_user() -> None:
    vec = np.arange(4, dtype=np.float32)
    cmd = vector_command("idx", _req(), vec, ef_runtime=20)
    assert cmd[2] == "(@user_id:{alice})=>[KNN 5 @embedding $vec EF_RUNTIME 20 AS vector_distance]"
    assert cmd[cmd.index("vec") + 1] == vec.tobytes()
    assert cmd[-4:] == [0, 5, "DIALECT", 2]
