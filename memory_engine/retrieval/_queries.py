"""FT.SEARCH commands for vector and keyword recall, always filtered by user. No I/O."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from redisvl.query.filter import FilterExpression, Num, Tag
from redisvl.utils.token_escaper import TokenEscaper

from ..models import Kind, SearchMode, Vector
from ..store._records import MEMORY_FIELDS, encode_tag

_ESCAPER = TokenEscaper()
_WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_TERMS = 64
# RediSearch's default stopwords. It drops them from a query, and a text clause left with
# no words matches every document, so they are removed here and never sent.
STOPWORDS = frozenset([
    "a", "is", "the", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in",
    "into", "it", "no", "not", "of", "on", "or", "such", "that", "their", "then", "there",
    "these", "they", "this", "to", "was", "will", "with",
])
DISTANCE = "vector_distance"


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """A validated search: what to look for, for whom, and within which bounds."""

    user_id: str
    query: str
    k: int
    mode: SearchMode
    session_id: str | None = None
    kinds: tuple[Kind, ...] | None = None
    since: float | None = None
    until: float | None = None
    now: float | None = None


def filter_expression(req: SearchRequest) -> FilterExpression:
    """The user filter (always) plus the optional session, kind and time bounds."""
    expr = Tag("user_id") == encode_tag(req.user_id)
    if req.session_id is not None:
        expr = expr & (Tag("session_id") == encode_tag(req.session_id))
    if req.kinds:
        expr = expr & (Tag("kind") == [k.value for k in req.kinds])
    if req.since is not None:
        expr = expr & (Num("created") >= req.since)
    if req.until is not None:
        expr = expr & (Num("created") <= req.until)
    return expr


def query_terms(text: str) -> list[str]:
    """Lower-cased, de-duplicated, escaped words of the query, stopwords removed (at most
    MAX_QUERY_TERMS)."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if word in STOPWORDS:
            continue
        seen.setdefault(_ESCAPER.escape(word), None)
        if len(seen) == MAX_QUERY_TERMS:
            break
    return list(seen)


def _return_clause() -> list[str | int]:
    return ["RETURN", len(MEMORY_FIELDS), *MEMORY_FIELDS]


def vector_command(
    index_name: str, req: SearchRequest, vector: Vector, *, ef_runtime: int
) -> list[object]:
    """FT.SEARCH for the ``k`` nearest memories of one user (HNSW KNN with a pre-filter)."""
    knn = f"=>[KNN {req.k} @embedding $vec EF_RUNTIME {ef_runtime} AS {DISTANCE}]"
    return [
        "FT.SEARCH", index_name, f"({filter_expression(req)}){knn}",
        "PARAMS", 2, "vec", np.asarray(vector, dtype=np.float32).tobytes(),
        "SORTBY", DISTANCE, "ASC",
        "RETURN", len(MEMORY_FIELDS) + 1, *MEMORY_FIELDS, DISTANCE,
        "LIMIT", 0, req.k, "DIALECT", 2,
    ]


def keyword_command(index_name: str, req: SearchRequest) -> list[object] | None:
    """FT.SEARCH (BM25) for memories of one user sharing words with the query.

    Returns None when the query has no word to search for (only punctuation or stopwords).
    """
    terms = query_terms(req.query)
    if not terms:
        return None
    return [
        "FT.SEARCH", index_name, f"({filter_expression(req)}) @text:({'|'.join(terms)})",
        "SCORER", "BM25STD", "WITHSCORES", *_return_clause(),
        "LIMIT", 0, req.k, "DIALECT", 2,
    ]


def kinds_tuple(kinds: Sequence[Kind] | None) -> tuple[Kind, ...] | None:
    return tuple(kinds) if kinds else None
