"""FT.SEARCH commands for vector and keyword recall, always filtered by user. No I/O."""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from redisvl.query.filter import FilterExpression, Num, Tag

from ..models import Kind, SearchMode, Vector
from ..store._records import tag_clause

_WORD = re.compile(r"\w+", re.UNICODE)
MAX_QUERY_TERMS = 64
# RediSearch's default stopwords. It drops them from a query, and a text clause left with
# no words matches every document, so they are removed here and never sent.
STOPWORDS = frozenset([
    "a", "is", "the", "an", "and", "are", "as", "at", "be", "but", "by", "for", "if", "in",
    "into", "it", "no", "not", "of", "on", "or", "such", "that", "their", "then", "there",
    "these", "they", "this", "to", "was", "will", "with",
])
# Words that shape a question but rarely name what it is about. Dropped from keyword queries
# unless nothing else is left (LoCoMo BM25 recall@5: 54.0 -> 55.2).
QUESTION_WORDS = frozenset([
    "what", "when", "where", "who", "whom", "which", "why", "how", "did", "do", "does", "was",
    "were", "have", "has", "had", "would", "could", "should", "can", "i", "you", "he", "she",
    "we", "me", "him", "her", "them", "my", "your", "his", "our", "about", "any", "some",
    "much", "many",
])
DISTANCE = "vector_distance"
# What search commands return per candidate (see ``retrieval._ranking.Candidate``): enough
# to rank, not whole memories; the final hits are read in full afterwards.
RANK_FIELDS: tuple[str, ...] = ("previous_id",)
DECAY_FIELDS: tuple[str, ...] = ("last_accessed", "access_count", "importance")
DEDUPE_FIELDS: tuple[str, ...] = ("text",)


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


def filter_expression(req: SearchRequest) -> FilterExpression:
    """The user filter (always) plus the optional session, kind and time bounds."""
    expr = tag_clause("user_id", req.user_id)
    if req.session_id is not None:
        expr = expr & tag_clause("session_id", req.session_id)
    if req.kinds:
        expr = expr & (Tag("kind") == [k.value for k in req.kinds])
    if req.since is not None:
        expr = expr & (Num("created") >= req.since)
    if req.until is not None:
        expr = expr & (Num("created") <= req.until)
    return expr


@functools.lru_cache(maxsize=256)
def filter_text(req: SearchRequest) -> str:
    """:func:`filter_expression` as query text; one search's commands share it (cached)."""
    return str(filter_expression(req))


def query_terms(text: str) -> list[str]:
    """Lower-cased, de-duplicated, escaped words of the query: stopwords removed, question
    words too unless they are all there is (at most MAX_QUERY_TERMS)."""
    seen: dict[str, None] = {}
    for word in _WORD.findall(text.lower()):
        if word in STOPWORDS:
            continue
        # A word of \w characters holds none of the punctuation RediSearch needs escaped
        # (TokenEscaper would return it unchanged) but "_": a term of underscores alone
        # ("_") is a syntax error in RediSearch 2.10; "\_" is valid anywhere and matches
        # the same tokens.
        seen.setdefault(word.replace("_", "\\_"), None)
        if len(seen) == 4 * MAX_QUERY_TERMS:
            break
    terms = [t for t in seen if t not in QUESTION_WORDS] or list(seen)
    return terms[:MAX_QUERY_TERMS]


def vector_command(
    index_name: str, req: SearchRequest, vector: Vector, *, ef_runtime: int,
    n: int | None = None, fields: Sequence[str] = RANK_FIELDS,
) -> list[object]:
    """FT.SEARCH for the ``n`` (default ``k``) nearest memories of one user (HNSW KNN with a
    pre-filter), returning ``fields`` and the distance."""
    n = n or req.k
    knn = f"=>[KNN {n} @embedding $vec EF_RUNTIME {max(ef_runtime, n)} AS {DISTANCE}]"
    return [
        "FT.SEARCH", index_name, f"({filter_text(req)}){knn}",
        "PARAMS", 2, "vec", np.asarray(vector, dtype=np.float32).tobytes(),
        "SORTBY", DISTANCE, "ASC",
        "RETURN", len(fields) + 1, *fields, DISTANCE,
        "LIMIT", 0, n, "DIALECT", 2,
    ]


def count_command(index_name: str, req: SearchRequest) -> list[object]:
    """FT.SEARCH counting the memories the filter matches (no documents returned): what the
    search script runs before a vector search to choose exact search (see
    ``retrieval._script.SEARCH``, which sends exactly this)."""
    return ["FT.SEARCH", index_name, filter_text(req), "NOCONTENT", "LIMIT", 0, 0, "DIALECT", 2]


def exact_vector_query(req: SearchRequest, n: int) -> str:
    """The query of :func:`vector_command` comparing the query vector with every memory the
    filter matches (``HYBRID_POLICY ADHOC_BF``) instead of walking the HNSW graph."""
    return (f"({filter_text(req)})"
            f"=>[KNN {n} @embedding $vec HYBRID_POLICY ADHOC_BF AS {DISTANCE}]")


def keyword_command(
    index_name: str, req: SearchRequest, n: int | None = None,
    fields: Sequence[str] = RANK_FIELDS, *, blind: Sequence[str] | None = None,
) -> list[object] | None:
    """FT.SEARCH (BM25) for the ``n`` (default ``k``) best memories of one user sharing words
    with the query, returning ``fields`` and the score. With encryption on, ``blind`` holds
    the query's keyed word digests and the blind index (``kw``) is searched instead.

    Returns None when the query has no word to search for (only punctuation or stopwords).
    """
    if blind is not None:
        if not blind:
            return None
        clause = f"@kw:{{{'|'.join(blind)}}}"  # hex digests: nothing to escape
    else:
        terms = query_terms(req.query)
        if not terms:
            return None
        clause = f"@text|name|context:({'|'.join(terms)})"
    return [
        "FT.SEARCH", index_name, f"({filter_text(req)}) {clause}",
        # Classic BM25, not BM25STD: in RediSearch 2.10 BM25STD's corpus statistics go wrong
        # once documents are deleted or re-indexed (LoCoMo keyword recall@10: 58.9 -> 20.5
        # after rewriting half the documents); BM25 stays put (59.8 -> 59.2).
        "SCORER", "BM25", "WITHSCORES", "RETURN", len(fields), *fields,
        "LIMIT", 0, n or req.k, "DIALECT", 2,
    ]


def kinds_tuple(kinds: Sequence[Kind] | None) -> tuple[Kind, ...] | None:
    return tuple(kinds) if kinds else None
