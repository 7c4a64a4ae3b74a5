"""One search in one round trip: a Lua script that runs a search's FT.SEARCH commands, ranks
the candidates and reads the best memories in full, all inside Redis. No I/O here: this
module holds the script, builds its arguments and reads its reply.

Why a script: a search otherwise takes two round trips (the FT.SEARCH pair, then reading the
final ``k`` memories and their recall counts), and each costs about 0.1 ms through redis-py
on loopback, as much as Redis spends on the searches. The script ranks the way
:func:`~memory_engine.retrieval._ranking.rank` does, operation for operation, for the
default ranking (reciprocal-rank or linear fusion with context credit, or a single mode's
own score), so it can read exactly the memories that make the cut. Other options (decay,
de-duplication, thresholds) are ranked in Python from the candidate lists the script returns
with its best guess prefetched; any hit outside the guess is read in a second round trip.
``tests/integration/test_search_script.py`` checks the script against ``rank`` on real
searches: same ids, same order, same scores to the bit.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..exceptions import StoreError
from ..models import ScoreParts, SearchMode
from ..store._records import MEMORY_FIELDS
from ._ranking import Candidate, Ranked, RankingOptions

# KEYS[1]: the user's recall hash. ARGV: the user's memory-key prefix, mode (hybrid | vector |
# keyword), final (1: rank and return only the top ``take``; 0: return the candidate replies
# too), take, rrf k, keyword weight, vector weight, context credit, all recalls (1: the recall
# entries of every candidate, for decay), exact limit, the search filter, the exact vector
# query, fusion (rrf | linear), then #args and the keyword FT.SEARCH (0 when none), then
# #args and the vector FT.SEARCH (0 when none). The fields read per hit (``MEMORY_FIELDS``)
# are written into the script itself (``__FIELDS__``): the same on every call, so not sent
# with each.
#
# Vector search: when the filter matches at most ``exact limit`` memories (counted first; 0
# skips the count), the vector FT.SEARCH runs with the exact query (brute force over those
# memories) in place of its own (the HNSW graph).
#
# Ranking mirrors ``rank``: keyword candidates scoring 0 are dropped; RRF sums w / (k + rank)
# over the keyword list then the vector list and divides by the best possible sum; linear
# fusion min-max scales each list's scores (BM25; 1 - distance) to [0, 1] (a list of one
# value: 1), and sums w * scaled over the two (0 where absent) divided by the weights' sum;
# context credit adds credit * score to the candidate each one follows, in candidate order,
# then divides by 1 + credit; the order is by score, ties in candidate order. Scores leave as
# double replies ({double = x}), which Redis writes as the shortest string that reads back
# as the same double (RESP2) or as a double (RESP3): exact, and cheaper than formatting them
# here with string.format('%.17g') (script time per hybrid search 262-264 against 267 us,
# ten rounds of 200 searches each way, taking turns).
SEARCH = """
local owner, mode, final, take = ARGV[1], ARGV[2], ARGV[3] == '1', tonumber(ARGV[4])
local rrf_k, w_kw, w_vec = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local credit, all_recalls = tonumber(ARGV[8]), ARGV[9] == '1'
local exact_limit = tonumber(ARGV[10])
local i = 14
local kw, vec = {0}, {0}
local n = tonumber(ARGV[i])
if n > 0 then kw = redis.call(unpack(ARGV, i + 1, i + n)) end
i = i + n + 1
n = tonumber(ARGV[i])
if n > 0 then
  local command = {unpack(ARGV, i + 1, i + n)}
  if exact_limit > 0 then
    local matches = redis.call('FT.SEARCH', command[2], ARGV[11], 'NOCONTENT', 'LIMIT', 0, 0,
                               'DIALECT', 2)[1]
    if matches <= exact_limit then command[3] = ARGV[12] end
  end
  vec = redis.call(unpack(command))
end

local find, sub, hybrid = string.find, string.sub, mode == 'hybrid'
local linear = hybrid and ARGV[13] == 'linear'
local rrf = hybrid and not linear
local cut = #owner + 1
-- The candidates by position (keyword ones first, then the vector ones not among them): id,
-- score, the id it follows (false: none), keyword score and vector distance (false: none).
local ids, score, prev, kw_part, vec_part, pos = {}, {}, {}, {}, {}, {}
local m = 0
local function isolation(key)
  error({err = 'isolation check failed: a search for one user returned key ' .. key})
end

local rank = 0
for j = 2, #kw, 3 do
  local s = kw[j + 1]
  if tonumber(s) > 0 then
    local key = kw[j]
    if find(key, owner, 1, true) ~= 1 then isolation(key) end
    local id, p, flat = sub(key, cut), false, kw[j + 2]
    for f = 1, #flat, 2 do
      if flat[f] == 'previous_id' then p = flat[f + 1] end
    end
    rank = rank + 1
    m = m + 1
    ids[m], pos[id], prev[m], kw_part[m], vec_part[m] = id, m, p, s, false
    if rrf then score[m] = 0 + w_kw / (rrf_k + rank) else score[m] = tonumber(s) end
  end
end
rank = 0
for j = 2, #vec, 2 do
  local key, flat = vec[j], vec[j + 1]
  if find(key, owner, 1, true) ~= 1 then isolation(key) end
  local id, d, p = sub(key, cut), nil, false
  for f = 1, #flat, 2 do
    local name = flat[f]
    if name == 'vector_distance' then
      d = flat[f + 1]
    elseif name == 'previous_id' then
      p = flat[f + 1]
    end
  end
  if d == nil then error({err = 'the vector search returned a memory without a distance'}) end
  rank = rank + 1
  local at = pos[id]
  if at == nil then
    m = m + 1
    at = m
    ids[m], pos[id], prev[m], kw_part[m], score[m] = id, m, p, false, 0
  end
  vec_part[at] = d
  if rrf then score[at] = score[at] + w_vec / (rrf_k + rank) else score[at] = 1 - tonumber(d) end
end

if rrf then
  local best = 0 + w_kw / (rrf_k + 1) + w_vec / (rrf_k + 1)
  if best > 0 then
    for j = 1, m do score[j] = score[j] / best end
  end
elseif linear then
  local bm25, sims, klo, khi, vlo, vhi = {}, {}, nil, nil, nil, nil
  for j = 1, m do
    if kw_part[j] then
      local s = tonumber(kw_part[j])
      bm25[j] = s
      if klo == nil or s < klo then klo = s end
      if khi == nil or s > khi then khi = s end
    end
    if vec_part[j] then
      local s = 1 - tonumber(vec_part[j])
      sims[j] = s
      if vlo == nil or s < vlo then vlo = s end
      if vhi == nil or s > vhi then vhi = s end
    end
  end
  local total = w_kw + w_vec
  for j = 1, m do
    local a, b = 0, 0
    if bm25[j] then
      if khi == klo then a = 1 else a = (bm25[j] - klo) / (khi - klo) end
    end
    if sims[j] then
      if vhi == vlo then b = 1 else b = (sims[j] - vlo) / (vhi - vlo) end
    end
    score[j] = (w_kw * a + w_vec * b) / total
  end
end
if hybrid then
  if credit > 0 then
    local out = {}
    for j = 1, m do out[j] = score[j] end
    for j = 1, m do
      local p = prev[j] and pos[prev[j]]
      if p then out[p] = out[p] + credit * score[j] end
    end
    for j = 1, m do score[j] = out[j] / (1 + credit) end
  end
end

-- The best ``take`` positions: the take-th best score is the cut; everything above it, then
-- ties at it in candidate order; then an insertion sort, best first, stable, so equal scores
-- stay in candidate order.
local top, n = {}, 0
if m > 0 and take > 0 then
  local values = {}
  for j = 1, m do values[j] = score[j] end
  table.sort(values)
  local least = values[math.max(m - take + 1, 1)]
  for j = 1, m do
    if score[j] > least then n = n + 1; top[n] = j end
  end
  for j = 1, m do
    if n >= take then break end
    if score[j] == least then n = n + 1; top[n] = j end
  end
  for x = 2, n do
    local at, s, y = top[x], score[top[x]], x - 1
    while y >= 1 and score[top[y]] < s do
      top[y + 1] = top[y]
      y = y - 1
    end
    top[y + 1] = at
  end
end

local read = {'HMGET', false, __FIELDS__}
local top_ids, scores, kws, vecs, rows = {}, {}, {}, {}, {}
for j = 1, n do
  local at = top[j]
  local id = ids[at]
  top_ids[j] = id
  scores[j] = {double = score[at]}
  kws[j] = kw_part[at]
  vecs[j] = vec_part[at]
  read[2] = owner .. id
  rows[j] = redis.call(unpack(read))
end
local recalls = {}
if n > 0 then recalls = redis.call('HMGET', KEYS[1], unpack(top_ids)) end
if final then return {top_ids, scores, kws, vecs, rows, recalls} end
local every = {}
if all_recalls and m > 0 then every = redis.call('HMGET', KEYS[1], unpack(ids)) end
return {top_ids, scores, kws, vecs, rows, recalls, kw, vec, ids, every}
"""
SEARCH = SEARCH.replace("__FIELDS__", ", ".join(f"'{name}'" for name in MEMORY_FIELDS))
SEARCH_SHA = hashlib.sha1(SEARCH.encode()).hexdigest()


def script_ranks(mode: SearchMode, options: RankingOptions) -> bool:
    """Whether the script ranks these options itself (exactly as ``rank`` would)."""
    return (
        options.decay_weight <= 0 and not options.dedupe and options.min_score is None
        and options.min_similarity is None
    )


def script_args(
    *, owner_prefix: str, recall_key: str, mode: SearchMode, options: RankingOptions, k: int,
    keyword: Sequence[object] | None, vector: Sequence[object] | None,
    exact_limit: int = 0, search_filter: str = "", exact_query: str = "",
) -> list[object]:
    """The ``EVALSHA`` arguments (after the script hash) of one search.

    ``k`` memories are read in full when the script ranks; otherwise twice that, in the
    script's order, as a prefetch for the Python ranking. ``exact_query`` replaces the
    vector command's query when ``search_filter`` matches at most ``exact_limit`` memories.
    """
    final = script_ranks(mode, options)
    return [
        1, recall_key, owner_prefix, mode.value, int(final), k if final else 2 * k,
        options.rrf_k, repr(options.keyword_weight), repr(options.vector_weight),
        repr(options.context_credit), int(options.decay_weight > 0),
        exact_limit if vector else 0, search_filter, exact_query, options.fusion.value,
        len(keyword or ()), *(keyword or ()),
        len(vector or ()), *(vector or ()),
    ]


@dataclass(frozen=True, slots=True)
class ScriptReply:
    """The script's reply, read.

    Attributes:
        ranked: The final ranking when the script ranks; otherwise its guess, in its order.
        rows: HMGET rows of the memories in ``ranked`` (in ``MEMORY_FIELDS`` order), and
            their recall entries, by memory id.
        keyword, vector: The raw FT.SEARCH replies (None when the script ranks: they are not
            sent back).
        recalls: Decay on: the recall entry of every candidate, by memory id.
    """

    ranked: list[Ranked]
    rows: dict[str, tuple[list[Any], Any]]
    keyword: list[Any] | None = None
    vector: list[Any] | None = None
    recalls: dict[str, Any] | None = None


def as_text(value: Any) -> str:
    """A reply string (bytes from a client that leaves replies undecoded) as str."""
    return value.decode() if isinstance(value, bytes) else str(value)


def is_final(reply: Sequence[Any]) -> bool:
    """Whether the script ranked this reply itself (the usual case): then it holds only the
    hits, best first, as (ids, scores, keyword scores, vector distances, HMGET rows, recall
    entries). Otherwise it also carries the candidate lists for Python to rank (see
    :func:`read_reply`)."""
    return len(reply) == 6


def score_parts(keyword: Any, distance: Any) -> ScoreParts:
    """A hit's score parts from the reply's keyword score and vector distance (None: the
    hit was not that mode's candidate)."""
    return ScoreParts(keyword=None if keyword is None else float(keyword),
                      vector=None if distance is None else 1.0 - float(distance))


def _hit_rows(reply: Sequence[Any]) -> list[tuple[str, float, ScoreParts, Any, Any]]:
    try:
        top, scores, kws, vecs, rows, recalls = reply[:6]
        return [
            (as_text(memory_id), float(score), score_parts(kw, distance), row, stat)
            for memory_id, score, kw, distance, row, stat
            in zip(top, scores, kws, vecs, rows, recalls, strict=True)
        ]
    except (TypeError, ValueError) as exc:
        raise unreadable(exc) from exc


def unreadable(exc: Exception) -> StoreError:
    """The error for a reply not in the script's shape (``exc`` says what did not fit)."""
    return StoreError(f"the search script returned an unreadable reply: {exc}")


def read_reply(reply: Sequence[Any]) -> ScriptReply:
    """Read the script's reply (see ``SEARCH`` for its shape)."""
    hits = _hit_rows(reply)
    ranked = [Ranked(Candidate(i, score), score, parts) for i, score, parts, _, _ in hits]
    loaded = {i: (row, stat) for i, _, _, row, stat in hits}
    if is_final(reply):
        return ScriptReply(ranked, loaded)
    try:
        keyword, vector, seq, every = reply[6:]
        stats = ({as_text(i): s for i, s in zip(seq, every, strict=True)} if every else None)
    except (TypeError, ValueError) as exc:
        raise unreadable(exc) from exc
    return ScriptReply(ranked, loaded, keyword, vector, stats)


__all__ = [
    "SEARCH", "SEARCH_SHA", "ScriptReply", "as_text", "is_final", "read_reply", "score_parts",
    "script_args", "script_ranks", "unreadable",
]
