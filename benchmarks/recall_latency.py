"""Recall latency of memory-engine, and its overhead over the raw RediSearch call.

What it measures, in one run against one index, each over the same list of (user, query)
pairs, after a warmup, one client, ``time.perf_counter`` around every call:

* ``raw_knn``, ``raw_bm25``, ``raw_count`` - the FT.SEARCH commands the engine itself sends
  (built by its own planner, ``EngineCore.sent_commands``: same filter, same candidate depth),
  each sent alone with a plain redis-py client. A vector search first counts the memories its
  filter matches (``raw_count``) and, at or under ``exact_search_limit``, sends the exact KNN
  query in place of the HNSW one, so ``raw_knn`` is whichever of the two the engine sends for
  that user. A vector search sends ``raw_count`` and ``raw_knn``, a keyword search
  ``raw_bm25``. Redis round trip and server time only: the floor. The commands return only
  what ranking reads (a few fields per candidate, not whole memories).
* ``raw_hybrid_bm25``, ``raw_hybrid_knn`` - the BM25 and KNN commands of a hybrid search, each
  alone: a hybrid search fetches ``hybrid_candidates`` (20) per index where a single mode
  fetches k (10). A hybrid search sends these and ``raw_count``;
  ``hybrid_over_raw_calls_p50`` is hybrid's p50 over the sum of those three p50s.
* ``raw_hybrid`` - the three hybrid commands pipelined in one round trip, sent the same way.
* ``raw_hybrid_all`` - every Redis call one hybrid search makes, sent with the same plain
  client: the engine's search script (``EVALSHA``), which runs the three ``raw_hybrid``
  commands inside Redis, ranks their candidates and reads the final k memories and their
  recall counts. One round trip, as the engine makes; the difference to ``raw_hybrid`` is
  what the script itself costs Redis.
* ``raw_hybrid_all_kept`` - the same ``EVALSHA`` sent the way the engine sends it: on a
  connection kept between calls (``memory_engine.store._lane.Lane``) rather than through
  redis-py's ``execute_command``, which borrows a pooled connection and records metrics
  around every command. ``hybrid`` minus this row is the engine's own Python. Every other
  ``raw_*`` row goes through ``execute_command``, as a caller's own redis-py calls do: the
  floor the engine's ratios are taken against is what those calls cost, and part of what the
  engine saves on them is that per-command bookkeeping (~20 us a command on this machine).
* ``vector``, ``keyword``, ``hybrid`` - ``MemoryEngine.search`` in that mode with the query
  embedding already in the engine's query cache (every query is searched once before timing;
  the cache hit rate of the timed calls is reported): validation, commands, Redis, parsing,
  fusion and ranking, and reading the final k in full.
* ``vector_e2e``, ``hybrid_e2e`` - the same on a second engine with ``query_cache_size=0``, so
  every call embeds its query with the bundled all-MiniLM-L6-v2 (through the engine's query
  path: ONNX when the ``fast`` extra is installed, else torch; ``consistency.query_backend``).
* ``consistency.paired`` - ``hybrid_over_raw_calls_p50`` again, with hybrid and its three raw
  calls taking turns in blocks of 100 calls instead of one whole loop after another, so the
  machine's drift over the run falls on both sides alike (one ratio per block, their median,
  and the ratio of the pooled p50s). ``consistency.paired_e2e`` does the same for
  ``hybrid_e2e`` over ``query_embedding`` + ``hybrid``, and ``peers.<name>.paired`` for the
  engine's ``vector`` and ``hybrid`` over each peer's search, with and without the query
  embedding (below 1: the engine is faster). These are the ratios to read: the rows' own
  p50s are measured seconds apart, and their ratios swing with the machine.
* ``hybrid_after_sleep``, ``hybrid_after_encoder`` - the cached ``hybrid`` search again, each
  call timed right after an untimed 4 ms sleep, or right after the query encoder embedded the
  query (untimed): what a search costs once Redis's CPU has gone idle and the encoder has
  run, which is what ``hybrid_e2e`` pays on top of ``query_embedding`` + ``hybrid``. Their
  QPS counts the timed calls only.
* ``hybrid`` and ``hybrid_e2e`` again from 8 and 32 concurrent clients (``clients``):
  ``AsyncMemoryEngine`` tasks on one event loop; per-call latency and total QPS.
* ``query_embedding`` - the engine's query encoder alone, uncached; ``query_embedding_torch``
  - the reference torch encoder alone. ``consistency.query_cosine_min_vs_torch`` is the least
  cosine between their vectors over the run's queries.

* ``peer_langchain_redis``, ``peer_redisvl_history``, ``peer_mem0`` (``--peers``, on by
  default when the ``bench`` extra is installed) - langchain-redis ``similarity_search``,
  redisvl ``SemanticMessageHistory.get_relevant`` and mem0 ``Memory.search``, each for the
  user, k hits, on the same Redis, the same memories and vectors and the same query list,
  each embedding its query with the engine's own query encoder (the ``query_embedding``
  row's); ``benchmarks/_peers.py`` says
  exactly what each timed call includes. ``<hybrid|vector>_e2e_over_peer_<name>_p50`` are
  the engine's end-to-end p50s over each peer's.

Each gets p50 / p95 / p99 latency in ms and QPS (calls / wall time of the timed loop). The
ratios of engine to raw p50 are the engine's overhead.

The corpus is synthetic and reproducible (``--seed``): sentences from a shared vocabulary of a
few hundred words, with clustered 384-dimensional unit vectors (cluster centroid + gaussian
noise), written through ``MemoryEngine.add_many`` with precomputed embeddings, so ingest does
not run the model. ``--embed-text`` gives every memory the bundled model's embedding of its
own sentence instead (the same sentences; the model runs before each ``add_many``, untimed,
and each distinct sentence is embedded once per run, so the peers get the same vectors).
Memories are written user by user; ``--interleave`` writes one session per user in turn, as
many users talking at once do, which leaves each user's memories scattered in the index
(``params.write_order``). Query texts come from the same vocabulary; the vector ``raw_knn``
sends is the real model's embedding of the query text, so raw and engine search the same
vector.

Run (from the repository root)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/recall_latency.py --quick
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/recall_latency.py --quick --no-peers
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/recall_latency.py            # 100k memories
    .venv/bin/python benchmarks/recall_latency.py --redis-url redis://localhost:6379/0

Without ``--redis-url`` a private embedded server is started in a temporary data directory
and stopped at the end. Either way the benchmark writes to its own index and key prefix and
drops them (``FT.DROPINDEX ... DD``) when done. Results go to
``benchmarks/results/recall_latency.json`` (``recall_latency_quick.json`` with ``--quick``),
with a PNG chart of the same name, and a table on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import dataclasses
import datetime as dt
import functools
import itertools
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import redis
from tqdm import tqdm

from memory_engine import (
    AsyncMemoryEngine,
    Embedder,
    MemoryEngine,
    NewMemory,
    SentenceTransformerEmbedder,
)
from memory_engine.retrieval._queries import count_command
from memory_engine.retrieval._script import SEARCH, SEARCH_SHA
from memory_engine.store._lane import Lane

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    Measurement,
    add_common_arguments,
    add_size_arguments,
    apply_defaults,
    common_params,
    info_value,
    open_redis,
    plot_latency_bars,
    print_ratios,
    provenance,
    save_report,
    scratch_engine,
    server_versions,
    timed,
)
from _peers import (
    INSTALL,
    Calls,
    QueryCache,
    UserMemories,
    Workload,
    measure_peers,
    missing_packages,
    peer_ratios,
)

FULL = {"memories": 100_000, "users": 1_000, "queries": 1_000, "warmup": 100}
QUICK = {"memories": 3_000, "users": 30, "queries": 100, "warmup": 20}

N_CLUSTERS = 48
NOISE = 0.05  # per-dimension std of the noise around a unit centroid (noise norm ~ 1)
SESSION_LENGTH = 20  # memories per synthetic conversation session
WRITE_CHUNK = 500  # NewMemory items per add_many call
CONSISTENCY_CHECKS = 25  # queries whose engine hits are compared with the raw reply

# --- Vocabulary --------------------------------------------------------------------------

TOPICS = (
    "cooking", "hiking", "photography", "gardening", "chess", "jazz", "running", "painting",
    "astronomy", "baking", "cycling", "fishing", "knitting", "pottery", "sailing", "skiing",
    "surfing", "yoga", "climbing", "camping", "birdwatching", "woodworking", "travel", "poetry",
)
NOUNS = (
    "recipe", "trail", "camera", "tomato", "opening", "album", "marathon", "canvas", "telescope",
    "sourdough", "bike", "rod", "scarf", "vase", "boat", "jacket", "board", "mat", "rope", "tent",
    "binoculars", "chair", "passport", "notebook", "lens", "garden", "guitar", "playlist", "map",
    "ticket", "backpack", "helmet", "kettle", "oven", "knife", "book", "class", "workshop",
    "festival", "concert", "museum", "bakery", "lake", "mountain", "river", "beach", "island",
    "forest", "market", "library", "apartment", "friend", "coach", "teacher", "neighbor",
    "sister", "brother", "daughter", "son", "partner",
)
ADJECTIVES = (
    "old", "new", "favorite", "cheap", "expensive", "small", "huge", "quiet", "noisy", "red",
    "blue", "green", "vintage", "modern", "heavy", "light", "broken", "shiny", "wooden",
    "organic", "spicy", "sweet", "local", "foreign", "rare", "simple", "fancy", "tiny", "warm",
    "cold", "early", "late", "long", "short", "strange", "lovely", "useful", "borrowed",
    "secondhand", "handmade",
)
VERBS = (
    "bought", "borrowed", "lost", "found", "fixed", "sold", "cooked", "painted", "planted",
    "visited", "booked", "cancelled", "recommended", "reviewed", "photographed", "cleaned",
    "ordered", "returned", "packed", "tried", "loved", "hated", "shared", "built", "learned",
    "practised", "joined", "missed", "planned", "forgot", "remembered", "discovered",
    "repaired", "painted", "rented", "watched", "read", "wrote", "sketched", "measured",
)
BASE_VERBS = (
    "buy", "borrow", "lose", "find", "fix", "sell", "cook", "paint", "plant", "visit", "book",
    "cancel", "recommend", "review", "try", "share", "build", "learn", "practise", "join",
    "plan", "rent", "watch", "read", "write",
)
PLACES = (
    "Lisbon", "Porto", "Berlin", "Madrid", "Paris", "Kyoto", "Oslo", "Dublin", "Vienna",
    "Prague", "Seattle", "Denver", "Austin", "Boston", "Toronto", "Montreal", "Sydney", "Lima",
    "Nairobi", "Cairo", "downtown", "the suburbs", "the coast", "the village", "the office",
    "the gym", "home", "school", "the park", "the station",
)
TIMES = (
    "yesterday", "last week", "last month", "last year", "on Monday", "on Friday",
    "this morning", "tonight", "in March", "in July", "in October", "in December",
    "over the weekend", "during the holidays", "two days ago", "recently", "every Sunday",
    "after work", "before breakfast", "at night",
)
PEOPLE = (
    "I", "My sister", "My brother", "My partner", "My neighbor", "My coach", "My teacher",
    "My daughter", "My son", "A friend", "My colleague", "My uncle", "My aunt", "My mother",
    "My father", "Our team", "My roommate", "My boss", "My cousin", "My grandmother",
)
MEMORY_TEMPLATES = (
    "{who} {verb} a {adj} {noun} for {topic} in {place} {time}.",
    "I really like {topic}; {time} I {verb} the {adj} {noun}.",
    "Remember that {who} {verb} my {noun} {time}, it was {adj}.",
    "We talked about {topic} and the {adj} {noun} from {place}.",
    "{who} wants to {base} a {noun} for {topic} {time}.",
    "Note: the {adj} {noun} I {verb} is still in {place}.",
    "{time} I {verb} a {topic} {noun} with {who_lower}.",
    "My {topic} plans: {base} the {adj} {noun} in {place} {time}.",
)
QUERY_TEMPLATES = (
    "what {noun} did I {base} for {topic}?",
    "where is my {adj} {noun}?",
    "when did I {base} the {noun} in {place}?",
    "tell me about {topic} and the {noun}",
    "who helped me {base} a {noun} {time}?",
    "any {topic} plans in {place}?",
)


def vocabulary_size() -> int:
    """Distinct words of the lists and templates (case-folded)."""
    words: set[str] = set()
    for group in (TOPICS, NOUNS, ADJECTIVES, VERBS, BASE_VERBS, PLACES, TIMES, PEOPLE,
                  MEMORY_TEMPLATES, QUERY_TEMPLATES):
        for phrase in group:
            words.update(w.strip(".,;:?{}").lower() for w in phrase.split())
    return len({w for w in words if w and not w.endswith("_lower")})


# --- Synthetic data ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Corpus:
    """Who owns how many memories, and the vector clusters they are drawn from. With
    ``texts`` (``--embed-text``) every memory's vector is instead the model's embedding of
    its text."""

    users: list[str]
    counts: npt.NDArray[np.int64]
    centroids: npt.NDArray[np.float32]
    user_clusters: npt.NDArray[np.int64]  # (users, 3): each user's favourite clusters
    texts: TextVectors | None = None

    @property
    def size(self) -> int:
        return int(self.counts.sum())


class TextVectors:
    """The model's embeddings of memory texts, each text embedded once per run (the peers'
    pass over the corpus gets the vectors the engine stored, without running the model
    again)."""

    def __init__(self, embedder: Embedder):
        self._embedder = embedder
        self._seen: dict[str, npt.NDArray[np.float32]] = {}

    def __call__(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        new = [t for t in dict.fromkeys(texts) if t not in self._seen]
        if new:
            for text, row in zip(new, np.asarray(self._embedder.embed_documents(new)),
                                 strict=True):
                self._seen[text] = row.astype(np.float32)
        return np.stack([self._seen[t] for t in texts])


def make_corpus(rng: np.random.Generator, memories: int, users: int, dims: int) -> Corpus:
    """Users with a skewed (log-normal) number of memories each, at least one."""
    weights = rng.lognormal(0.0, 0.6, users)
    counts = 1 + rng.multinomial(memories - users, weights / weights.sum())
    centroids = rng.standard_normal((N_CLUSTERS, dims)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    return Corpus(
        users=[f"user-{i:05d}" for i in range(users)],
        counts=counts.astype(np.int64),
        centroids=centroids,
        user_clusters=rng.integers(0, N_CLUSTERS, size=(users, 3)),
    )


def _pick(rng: np.random.Generator, words: Sequence[str]) -> str:
    return words[int(rng.integers(len(words)))]


def memory_text(rng: np.random.Generator, cluster: int) -> str:
    """One memory sentence; its topic follows the vector's cluster."""
    who = _pick(rng, PEOPLE)
    return _pick(rng, MEMORY_TEMPLATES).format(
        who=who, who_lower=who if who == "I" else who.lower(), verb=_pick(rng, VERBS),
        base=_pick(rng, BASE_VERBS), adj=_pick(rng, ADJECTIVES), noun=_pick(rng, NOUNS),
        topic=TOPICS[cluster % len(TOPICS)], place=_pick(rng, PLACES), time=_pick(rng, TIMES),
    )


def query_text(rng: np.random.Generator) -> str:
    return _pick(rng, QUERY_TEMPLATES).format(
        base=_pick(rng, BASE_VERBS), adj=_pick(rng, ADJECTIVES), noun=_pick(rng, NOUNS),
        topic=_pick(rng, TOPICS), place=_pick(rng, PLACES), time=_pick(rng, TIMES),
    )


def user_memories(
    rng: np.random.Generator, corpus: Corpus, index: int, now: float
) -> list[NewMemory]:
    """All memories of one user: mostly from its favourite clusters, spread over a year."""
    n = int(corpus.counts[index])
    favourite = rng.random(n) < 0.8
    clusters = np.where(
        favourite,
        corpus.user_clusters[index][rng.integers(0, 3, n)],
        rng.integers(0, N_CLUSTERS, n),
    )
    dims = corpus.centroids.shape[1]
    vectors = corpus.centroids[clusters] + rng.normal(0.0, NOISE, (n, dims)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    created = np.sort(now - rng.uniform(0.0, 365 * 86_400.0, n))
    texts = [memory_text(rng, int(clusters[j])) for j in range(n)]
    if corpus.texts is not None:  # the same draws either way; only the vectors differ
        vectors = corpus.texts(texts)
    return [
        NewMemory(
            text=texts[j],
            session_id=f"s{j // SESSION_LENGTH:04d}",
            role="user" if j % 2 == 0 else "assistant",
            created_at=float(created[j]),
            embedding=vectors[j],
        )
        for j in range(n)
    ]


def make_queries(
    rng: np.random.Generator, users: Sequence[str], count: int
) -> list[tuple[str, str]]:
    """(user, query text) pairs; users drawn uniformly."""
    return [(users[int(rng.integers(len(users)))], query_text(rng)) for _ in range(count)]


# --- Redis, engine and environment -------------------------------------------------------


# --- Ingest and measurement --------------------------------------------------------------


def taking_turns(sizes: Sequence[int], size: int) -> Iterator[tuple[int, slice]]:
    """(group, slice) pairs covering every group ``size`` items at a time, the groups taking
    turns (each group's slices in order): how many users talking at once write."""
    for start in range(0, max(sizes, default=0), size):
        for group, n in enumerate(sizes):
            if start < n:
                yield group, slice(start, start + size)


def write_batches(
    rng: np.random.Generator, corpus: Corpus, now: float, interleave: bool
) -> Iterator[tuple[str, list[NewMemory]]]:
    """The corpus as ``add_many`` calls (user, memories): user by user, ``WRITE_CHUNK`` at a
    time; or, with ``interleave``, one session (``SESSION_LENGTH`` memories) per user in turn,
    so a user's memories lie scattered in the index as they do where many users write at
    once. The same memories (the same draws) either way."""
    if not interleave:
        for index, user in enumerate(corpus.users):
            items = user_memories(rng, corpus, index, now)
            for start in range(0, len(items), WRITE_CHUNK):
                yield user, items[start : start + WRITE_CHUNK]
        return
    every = [user_memories(rng, corpus, index, now) for index in range(len(corpus.users))]
    for group, part in taking_turns([len(items) for items in every], SESSION_LENGTH):
        yield corpus.users[group], every[group][part]


def write_order(interleave: bool) -> str:
    """How :func:`write_batches` orders the corpus, as a report's ``params.write_order``."""
    if interleave:
        return f"interleaved: one session ({SESSION_LENGTH} memories) per user in turn"
    return "user by user"


def ingest(
    engine: MemoryEngine, corpus: Corpus, rng: np.random.Generator, *, interleave: bool = False,
) -> dict[str, float]:
    """Write the corpus through ``add_many`` (see :func:`write_batches` for the order); only
    the ``add_many`` calls are timed."""
    spent = 0.0
    with tqdm(total=corpus.size, desc="ingest", unit="mem", file=sys.stderr) as bar:
        for user, chunk in write_batches(rng, corpus, time.time(), interleave):
            t0 = time.perf_counter()
            engine.add_many(user, chunk)
            spent += time.perf_counter() - t0
            bar.update(len(chunk))
    return {"memories": corpus.size, "seconds": spent, "memories_per_s": corpus.size / spent}


def query_agreement(engine: Embedder, reference: Embedder, texts: Sequence[str]) -> float:
    """The least cosine between the engine's query vectors and the reference model's (torch)
    over ``texts``: what the faster query path costs in fidelity."""
    least = 1.0
    for text in dict.fromkeys(texts):
        a, b = engine.embed_query(text), reference.embed_query(text)
        least = min(least, float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    return round(least, 7)


def summary(m: Measurement) -> dict[str, Any]:
    """One entry of the report's ``results``."""
    return {"name": m.name, "clients": 1, "calls": m.calls, **m.latency_summary(),
            "qps": m.per_second(), **m.extra}


def measure(name: str, calls: Sequence[Callable[[], object]], warmup: int) -> Measurement:
    """Run ``warmup`` calls (cycling), then time each call once, in order."""
    for call in itertools.islice(itertools.cycle(calls), warmup):
        call()
    return timed(name, calls)


def with_cache_rate(engine: MemoryEngine, run: Callable[[], Measurement]) -> Measurement:
    """Run a measurement and attach the query-cache hit rate of its calls (warmup included)."""
    cache = engine.embedder
    hits, misses = cache.hits, cache.misses
    result = run()
    new_hits, new_misses = cache.hits - hits, cache.misses - misses
    total = new_hits + new_misses
    result.extra["query_cache_hit_rate"] = round(new_hits / total, 4) if total else None
    return result


def reply_ids(reply: Sequence[Any], with_scores: bool) -> list[str]:
    """Memory ids of a raw FT.SEARCH reply, in order."""
    step = 3 if with_scores else 2
    keys = [k.decode() if isinstance(k, bytes) else str(k) for k in reply[1::step]]
    return [k.rsplit(":", 1)[1] for k in keys]


def consistency(
    engine: MemoryEngine, client: redis.Redis, queries: Sequence[tuple[str, str]],
    raw: dict[str, Sequence[list[list[object]]]], k: int,
) -> dict[str, Any]:
    """Whether every memory the engine returns is in the raw replies of the same commands
    (the engine re-ranks the candidates, so order and cut can differ), on a sample."""
    n = min(CONSISTENCY_CHECKS, len(queries))
    out: dict[str, Any] = {"checked": n}
    for mode, commands in raw.items():
        inside = returned = 0
        for (user, text), cmds in zip(queries[:n], commands, strict=False):
            raw_ids: set[str] = set()
            for cmd in cmds:
                raw_ids |= set(reply_ids(client.execute_command(*cmd), "WITHSCORES" in cmd))
            engine_ids = [h.memory.id for h in engine.search(user, text, k=k, mode=mode)]
            inside += sum(i in raw_ids for i in engine_ids)
            returned += len(engine_ids)
        out[f"{mode}_hits_in_raw"] = round(inside / max(returned, 1), 4)
        out[f"{mode}_mean_hits"] = round(returned / n, 2)
    return out


def run_measurements(
    engine: MemoryEngine, e2e: MemoryEngine, client: redis.Redis,
    queries: Sequence[tuple[str, str]], k: int, warmup: int, torch_reference: Embedder,
) -> tuple[list[Measurement], dict[str, Any], dict[str, list[Callable[[], object]]]]:
    """The timed loops over the same (user, query) list, plus a consistency check and the
    paired ratios; also returns the loops, by row name (the peers are paired with them).

    The raw commands are the ones the engine itself sends for each mode (built by its own
    planner, same candidate depth), so ``raw_*`` is the floor under the engine's calls.
    """
    raw: dict[str, list[list[list[object]]]] = {"vector": [], "keyword": [], "hybrid": []}
    core = engine._core
    for user, text in tqdm(queries, desc="embed queries", unit="q", file=sys.stderr):
        vector = engine.embedder.embed_query(text)  # also fills the engine's query cache
        for mode in raw:
            plan = core.plan_search(user, text, k=k, mode=mode, clock=time.time())
            count = count_command(engine.config.index_name, plan.request)
            matches = int(client.execute_command(*count)[0])
            raw[mode].append(core.sent_commands(plan, vector, matches))
    if any(len(cmds) != 3 for cmds in raw["hybrid"]):
        raise ValueError("a query has no searchable word for the keyword half, or the "
                         "engine's vector search does not count first (exact_search_limit=0)")

    def search(eng: MemoryEngine, user: str, text: str, mode: str) -> Callable[[], object]:
        return functools.partial(eng.search, user, text, k=k, mode=mode)

    def pipelined(cmds: list[list[object]]) -> Callable[[], object]:
        def call() -> object:
            pipe = client.pipeline(transaction=False)
            for cmd in cmds:
                pipe.execute_command(*cmd)
            return pipe.execute()
        return call

    script_args = []
    client.script_load(SEARCH)
    for user, text in queries:  # the engine's whole call: its search script and arguments
        plan = core.plan_search(user, text, k=k, mode="hybrid", clock=time.time())
        script_args.append(core.search_args(plan, engine.embedder.embed_query(text)))
    kept = Lane(client)  # one kept connection, as the engine's one search at a time uses
    calls: dict[str, list[Callable[[], object]]] = {
        "raw_knn": [functools.partial(client.execute_command, *c[-1]) for c in raw["vector"]],
        "raw_bm25": [functools.partial(client.execute_command, *c[0]) for c in raw["keyword"]],
        "raw_count": [functools.partial(client.execute_command, *c[0]) for c in raw["vector"]],
        # hybrid's own pair: deeper than a single mode's (hybrid_candidates per index)
        "raw_hybrid_bm25": [functools.partial(client.execute_command, *c[0])
                            for c in raw["hybrid"]],
        "raw_hybrid_knn": [functools.partial(client.execute_command, *c[-1])
                           for c in raw["hybrid"]],
        "raw_hybrid": [pipelined(c) for c in raw["hybrid"]],
        "raw_hybrid_all": [functools.partial(client.execute_command, "EVALSHA", SEARCH_SHA, *a)
                           for a in script_args],
        "raw_hybrid_all_kept": [functools.partial(kept.execute, "EVALSHA", SEARCH_SHA, *a)
                                for a in script_args],
    }
    for mode in ("vector", "keyword", "hybrid"):
        calls[mode] = [search(engine, u, t, mode) for u, t in queries]
    for mode in ("vector", "hybrid"):
        calls[f"{mode}_e2e"] = [search(e2e, u, t, mode) for u, t in queries]
    # The query encoder alone, uncached: the engine's (ONNX when available) and torch's.
    encoder = engine.embedder.inner
    calls["query_embedding"] = [functools.partial(encoder.embed_query, t) for _, t in queries]
    calls["query_embedding_torch"] = [
        functools.partial(torch_reference.embed_query, t) for _, t in queries]
    for call in calls["vector"]:  # every query text searched once: timed calls hit the cache
        call()
    results = []
    for name, loop in calls.items():
        cached = engine if name in ("vector", "hybrid") else e2e if name.endswith("_e2e") else None
        if cached is None:
            results.append(measure(name, loop, warmup))
        else:
            results.append(with_cache_rate(
                cached, functools.partial(measure, name, loop, warmup)))
    # Why hybrid_e2e costs more than query_embedding + hybrid: the same cached hybrid search,
    # timed right after the encoder ran (untimed) and right after a 4 ms sleep.
    cached_hybrid = calls["hybrid"]
    for name, before in (
        ("hybrid_after_sleep", [functools.partial(time.sleep, 0.004)] * len(queries)),
        ("hybrid_after_encoder", calls["query_embedding"]),
    ):
        results.append(timed(name, cached_hybrid, before=before))
    order = ["raw_knn", "raw_bm25", "raw_count", "raw_hybrid_bm25", "raw_hybrid_knn",
             "raw_hybrid", "raw_hybrid_all", "raw_hybrid_all_kept", "vector", "keyword",
             "hybrid", "vector_e2e", "hybrid_e2e", "hybrid_after_sleep", "hybrid_after_encoder",
             "query_embedding", "query_embedding_torch"]
    results.sort(key=lambda m: order.index(m.name))
    check = consistency(engine, client, queries, raw, k)
    check["paired"] = paired_ratio(calls, "hybrid", FLOOR, warmup, "hybrid_over_raw_calls_p50")
    check["paired_e2e"] = paired_ratio(calls, "hybrid_e2e", E2E_PARTS, warmup,
                                       "hybrid_e2e_over_query_embedding_plus_hybrid_p50")
    return results, check, calls


PAIRED_BLOCK = 100  # calls per block when loops take turns
FLOOR = ("raw_count", "raw_hybrid_bm25", "raw_hybrid_knn")
E2E_PARTS = ("query_embedding", "hybrid")


def rotated_blocks(
    calls: dict[str, Sequence[Callable[[], object]]], warmup: int, block: int = PAIRED_BLOCK,
) -> tuple[dict[str, list[float]], list[dict[str, float]]]:
    """Time the named loops taking turns, in blocks of ``block`` calls (the same slice of
    the query list for each), rather than one whole loop after another: the machine's drift
    during a run (seconds between rows) then falls on every loop alike. The order rotates
    from block to block, so each loop goes first in its share of the blocks (give or take
    one): each block's queries are new to the caches, and the first to send them pays for
    that. Returns every latency (ms) per name, and each block's p50 per name."""
    names = list(calls)
    for name in names:
        for call in calls[name][:warmup]:
            call()
    latencies: dict[str, list[float]] = {name: [] for name in names}
    per_block = []
    n_calls = min(len(c) for c in calls.values())
    for n, start in enumerate(range(0, n_calls, block)):
        p50 = {}
        for name in names[n % len(names):] + names[:n % len(names)]:
            times = timed(name, calls[name][start : min(start + block, n_calls)]).latencies_ms
            latencies[name] += times.tolist()
            p50[name] = float(np.median(times))
        per_block.append(p50)
    return latencies, per_block


def paired_ratio(
    calls: dict[str, Sequence[Callable[[], object]]], numerator: str,
    denominator: Sequence[str], warmup: int, key: str,
) -> dict[str, Any]:
    """``numerator``'s p50 over the sum of the ``denominator`` loops' p50s, with all of them
    taking turns (:func:`rotated_blocks`): one ratio per block, their median, and the ratio
    of the pooled p50s (under ``key``)."""
    names = (*denominator, numerator)
    latencies, blocks = rotated_blocks({name: calls[name] for name in names}, warmup)
    per_block = [round(b[numerator] / sum(b[n] for n in denominator), 3) for b in blocks]
    p50_all = {name: float(np.median(v)) for name, v in latencies.items()}
    return {
        "block": PAIRED_BLOCK, "blocks": len(per_block), "ratio_per_block": per_block,
        "p50_ms": {name: round(v, 4) for name, v in p50_all.items()},
        key: round(p50_all[numerator] / sum(p50_all[n] for n in denominator), 3),
        "median_of_blocks": round(float(np.median(per_block)), 3),
    }


def paired_with_peer(
    calls: dict[str, Sequence[Callable[[], object]]], peer: str, warmup: int,
) -> dict[str, Any]:
    """The engine's ``vector`` and ``hybrid`` (and their ``_e2e`` rows) against one peer's
    search (and its ``_e2e``), taking turns (:func:`rotated_blocks`): the engine's p50 over
    the peer's, pooled and per block (below 1: the engine is faster)."""
    out: dict[str, Any] = {"block": PAIRED_BLOCK}
    for suffix in ("", "_e2e"):
        theirs = f"peer_{peer}{suffix}"
        names = (f"vector{suffix}", f"hybrid{suffix}", theirs)
        latencies, blocks = rotated_blocks({name: calls[name] for name in names}, warmup)
        p50 = {name: float(np.median(v)) for name, v in latencies.items()}
        out["blocks"] = len(blocks)
        for mine in names[:2]:
            out[f"{mine}_over_{theirs}_p50"] = round(p50[mine] / p50[theirs], 3)
            out[f"{mine}_over_{theirs}_per_block"] = [
                round(b[mine] / b[theirs], 3) for b in blocks]
        out.setdefault("p50_ms", {}).update({name: round(v, 4) for name, v in p50.items()})
    return out


CONCURRENCY = (8, 32)  # the single-client rows are the blocking engine's


def concurrent(
    engine: MemoryEngine, queries: Sequence[tuple[str, str]], k: int, warmup: int,
) -> list[dict[str, Any]]:
    """``hybrid`` and ``hybrid_e2e`` through ``AsyncMemoryEngine`` from 8 and 32 concurrent
    clients (tasks on one event loop, one connection pool): per-call latency and total QPS.
    ``hybrid`` shares the engine's filled query cache (embedding excluded); ``hybrid_e2e``
    embeds every query (one model, calls serialised on it)."""
    rows: list[dict[str, Any]] = []

    async def measure_async(eng: AsyncMemoryEngine, name: str, clients: int) -> dict[str, Any]:
        for user, text in queries[:warmup]:
            await eng.search(user, text, k=k)
        latencies: list[float] = []
        work = iter(queries)

        async def client() -> None:
            for user, text in work:
                t0 = time.perf_counter()
                await eng.search(user, text, k=k)
                latencies.append((time.perf_counter() - t0) * 1000.0)

        start = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        wall = time.perf_counter() - start
        m = Measurement(name, np.asarray(latencies), wall)
        return {"name": name, "clients": clients, "calls": m.calls, **m.latency_summary(),
                "qps": m.per_second()}

    async def all_rows() -> None:
        cached = AsyncMemoryEngine(engine.config, embedder=engine.embedder)
        uncached = AsyncMemoryEngine(engine.config.with_(query_cache_size=0),
                                     embedder=engine.embedder.inner)
        async with cached, uncached:
            for clients in CONCURRENCY:
                rows.append(await measure_async(cached, "hybrid", clients))
            for clients in CONCURRENCY:
                rows.append(await measure_async(uncached, "hybrid_e2e", clients))

    asyncio.run(all_rows())
    return rows


def ratios(results: Sequence[dict[str, Any]]) -> dict[str, float]:
    p50 = {r["name"]: r["p50_ms"] for r in results if r["clients"] == 1}
    p99 = {r["name"]: r["p99_ms"] for r in results if r["clients"] == 1}
    return {
        "hybrid_over_raw_calls_p50": round(p50["hybrid"] / (
            p50["raw_count"] + p50["raw_hybrid_bm25"] + p50["raw_hybrid_knn"]), 3),
        "vector_over_raw_calls_p50": round(p50["vector"] / (p50["raw_count"] + p50["raw_knn"]), 3),
        "vector_over_raw_knn_p50": round(p50["vector"] / p50["raw_knn"], 3),
        "keyword_over_raw_bm25_p50": round(p50["keyword"] / p50["raw_bm25"], 3),
        "hybrid_over_raw_hybrid_p50": round(p50["hybrid"] / p50["raw_hybrid"], 3),
        "hybrid_over_raw_hybrid_all_p50": round(p50["hybrid"] / p50["raw_hybrid_all"], 3),
        "hybrid_over_raw_hybrid_all_kept_p50": round(
            p50["hybrid"] / p50["raw_hybrid_all_kept"], 3),
        "hybrid_over_raw_hybrid_p99": round(p99["hybrid"] / p99["raw_hybrid"], 3),
        "hybrid_over_raw_hybrid_knn_plus_bm25_p50": round(
            p50["hybrid"] / (p50["raw_hybrid_knn"] + p50["raw_hybrid_bm25"]), 3),
        "vector_e2e_over_vector_p50": round(p50["vector_e2e"] / p50["vector"], 3),
        "hybrid_e2e_over_query_embedding_plus_hybrid_p50": round(
            p50["hybrid_e2e"] / (p50["query_embedding"] + p50["hybrid"]), 3),
        "hybrid_after_encoder_over_hybrid_p50": round(
            p50["hybrid_after_encoder"] / p50["hybrid"], 3),
        "hybrid_after_sleep_over_hybrid_p50": round(p50["hybrid_after_sleep"] / p50["hybrid"], 3),
        "hybrid_e2e_over_query_embedding_plus_hybrid_after_encoder_p50": round(
            p50["hybrid_e2e"] / (p50["query_embedding"] + p50["hybrid_after_encoder"]), 3),
        "query_embedding_torch_over_engine_p50": round(
            p50["query_embedding_torch"] / p50["query_embedding"], 3),
    }


def peer_corpus(rng: np.random.Generator, corpus: Corpus) -> Iterator[UserMemories]:
    """The memories :func:`ingest` writes (texts, roles, vectors), drawn again from a copy
    of the generator as ``ingest`` received it; only ``created_at`` moves (a later ``now``)."""
    rng = copy.deepcopy(rng)
    now = time.time()
    for index, user in enumerate(corpus.users):
        items = user_memories(rng, corpus, index, now)
        yield UserMemories(
            user, [m.text for m in items], [str(m.role) for m in items],
            np.array([m.created_at for m in items], dtype=np.float64),
            np.stack([np.asarray(m.embedding, dtype=np.float32) for m in items]),
        )


def peer_batches(
    rng: np.random.Generator, corpus: Corpus, interleave: bool
) -> Iterator[UserMemories]:
    """:func:`peer_corpus` in the order :func:`ingest` writes it: each user whole, or with
    ``interleave`` one session per user in turn."""
    if not interleave:
        yield from peer_corpus(rng, corpus)
        return
    every = list(peer_corpus(rng, corpus))
    for group, part in taking_turns([len(m.texts) for m in every], SESSION_LENGTH):
        m = every[group]
        yield UserMemories(m.user, m.texts[part], m.roles[part], m.created_at[part],
                           m.vectors[part])


def peers(
    engine: MemoryEngine, url: str, corpus: Corpus, before_ingest: np.random.Generator,
    queries: Sequence[tuple[str, str]], args: argparse.Namespace, encoder: Embedder,
    calls: dict[str, list[Callable[[], object]]],
) -> tuple[list[Measurement], dict[str, Any]]:
    """The ``peer_*`` rows (``benchmarks/_peers.py``), measured as the engine's rows are,
    each peer embedding its queries with ``encoder`` (the engine's query encoder); then each
    peer taking turns with the engine's ``calls`` (``peers.<name>.paired``)."""
    user, text = queries[0]
    mine = next(m.texts for m in peer_corpus(before_ingest, corpus) if m.user == user)
    if any(h.memory.text not in mine for h in engine.search(user, text, k=args.k)):
        raise SystemExit("the peers' copy of the corpus differs from what the engine stored")
    work = Workload(url, functools.partial(peer_batches, before_ingest, corpus, args.interleave),
                    queries, args.k, QueryCache(encoder), engine.embedder.dims)

    def pair(name: str, cached: Calls, e2e: Calls) -> dict[str, Any]:
        both = {**calls, f"peer_{name}": cached, f"peer_{name}_e2e": e2e}
        return paired_with_peer(both, name, args.warmup)

    return measure_peers(work, lambda name, loop: measure(name, loop, args.warmup), pair)


# --- Output ------------------------------------------------------------------------------


def plot(report: dict[str, Any], path: Path) -> None:
    """Grouped bars of p50 and p99 per measurement (peers included), log scale."""
    params = report["params"]
    rows = [r for r in report["results"] if r["clients"] == 1]
    plot_latency_bars(
        rows, path,
        f"memory-engine recall latency: {params['memories']:,} memories, "
        f"{params['users']:,} users, k={params['k']}, 1 client",
        tick_labels=[r["name"].replace("embedding", "embed").replace("_", "\n") for r in rows],
    )


def print_table(report: dict[str, Any]) -> None:
    params, ingest_stats = report["params"], report["ingest"]
    print(
        f"\nrecall latency: {params['memories']:,} memories, {params['users']:,} users, "
        f"{params['queries']:,} queries, k={params['k']}, "
        f"ef_runtime={params['hnsw']['ef_runtime']}, 1 client"
    )
    print(f"ingest: {ingest_stats['memories_per_s']:,.0f} memories/s "
          f"({ingest_stats['memories']:,} in {ingest_stats['seconds']:.1f}s)\n")
    print(f"{'name':<22}{'clients':>8}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'QPS':>10}  note")
    for r in report["results"]:
        rate = r.get("query_cache_hit_rate")
        note = "" if rate is None else f"query cache hit rate {rate:.0%}"
        print(f"{r['name']:<22}{r['clients']:>8}{r['p50_ms']:>10.3f}{r['p95_ms']:>10.3f}"
              f"{r['p99_ms']:>10.3f}{r['qps']:>10.0f}  {note}")
    print_ratios(report["ratios"])
    check = report["consistency"]
    print(f"engine hits found in the raw replies ({check['checked']} queries): " + ", ".join(
        f"{m} {check[f'{m}_hits_in_raw']:.0%}" for m in ("vector", "keyword", "hybrid")))
    print(f"taking turns in blocks of {PAIRED_BLOCK} calls:")
    for what, paired, key in (
        ("hybrid over its raw calls", check["paired"], "hybrid_over_raw_calls_p50"),
        ("hybrid_e2e over query_embedding + hybrid", check["paired_e2e"],
         "hybrid_e2e_over_query_embedding_plus_hybrid_p50"),
    ):
        print(f"  {what}: {paired[key]:.2f}x pooled, {paired['median_of_blocks']:.2f}x "
              f"median of {paired['blocks']} blocks "
              f"({min(paired['ratio_per_block']):.2f}x-{max(paired['ratio_per_block']):.2f}x)")
    for peer, about in report["peers"].items():
        paired = about.get("paired", {})
        print(f"  peer {peer}: " + ", ".join(
            f"{name.removesuffix('_p50')} {value:.2f}x"
            for name, value in paired.items() if name.endswith("_p50")))


# --- Entry point -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Recall latency of memory-engine vs the raw RediSearch commands.",
    )
    add_size_arguments(parser, FULL, QUICK, {
        "queries": "timed calls per measurement",
        "warmup": "untimed calls before each measurement",
    })
    parser.add_argument("--k", type=int, default=10, help="hits per search (default 10)")
    parser.add_argument("--embed-text", action="store_true",
                        help="give every memory the bundled model's embedding of its text "
                        "instead of a synthetic clustered vector (the model runs over every "
                        "memory before it is written: minutes at 100k)")
    parser.add_argument("--interleave", action="store_true",
                        help=f"write the corpus one session ({SESSION_LENGTH} memories) per "
                        "user in turn, as many users talking at once do, instead of user by "
                        "user: each user's memories then lie scattered in the index (the "
                        "peers get the same order)")
    add_common_arguments(parser, seed_of="data", quick_run="~3,000 memories, 30 users")
    parser.add_argument("--peers", action=argparse.BooleanOptionalAction,
                        help="also time langchain-redis, redisvl and mem0 (benchmarks/_peers.py); "
                        "default: when the bench extra is installed")
    args = parser.parse_args(argv)
    apply_defaults(args, FULL, QUICK, "recall_latency")
    if args.users < 1 or args.memories < args.users:
        parser.error("need --users >= 1 and --memories >= --users")
    if args.queries < 1 or args.warmup < 0 or args.k < 1:
        parser.error("need --queries >= 1, --warmup >= 0 and --k >= 1")
    missing = missing_packages()
    if args.peers and missing:
        raise SystemExit(f"--peers needs {', '.join(missing)}: {INSTALL}")
    if args.peers is None:
        args.peers = not missing
        if missing:
            print(f"peers skipped: {', '.join(missing)} not installed ({INSTALL})",
                  file=sys.stderr)
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the corpus, ingest it, measure, and return the report."""
    rng = np.random.default_rng(args.seed)
    with contextlib.ExitStack() as stack:
        url, client = open_redis(stack, args.redis_url)
        engine = scratch_engine(stack, url, client)
        config = engine.config

        corpus = make_corpus(rng, args.memories, args.users, engine.embedder.dims)
        if args.embed_text:
            corpus = dataclasses.replace(corpus, texts=TextVectors(engine.embedder.inner))
        queries = make_queries(rng, corpus.users, args.queries)
        distinct = len({text for _, text in queries})
        if distinct > engine.config.query_cache_size:
            raise SystemExit(f"{distinct} distinct queries do not fit the query cache "
                             f"({engine.config.query_cache_size}); use fewer --queries")
        # Same model object, no query cache: every search embeds its query.
        e2e = stack.enter_context(
            MemoryEngine(config.with_(query_cache_size=0), embedder=engine.embedder.inner)
        )
        e2e.connect()

        before_ingest = copy.deepcopy(rng)  # the peers get the same memories
        ingest_stats = ingest(engine, corpus, rng, interleave=args.interleave)
        indexed = int(info_value(client.execute_command("FT.INFO", config.index_name), "num_docs"))
        if indexed != corpus.size:
            print(f"warning: the index holds {indexed} documents, {corpus.size} were written",
                  file=sys.stderr)
        torch_reference = SentenceTransformerEmbedder(query_backend="torch")
        measurements, check, calls = run_measurements(
            engine, e2e, client, queries, args.k, args.warmup, torch_reference)
        concurrent_rows = concurrent(engine, queries, args.k, args.warmup)
        peer_rows, peer_info = (
            peers(engine, url, corpus, before_ingest, queries, args, engine.embedder.inner,
                  calls)
            if args.peers else ([], {}))
        check["query_backend"] = engine.embedder.inner.query_backend
        check["query_cosine_min_vs_torch"] = query_agreement(
            engine.embedder.inner, torch_reference, [text for _, text in queries])
        versions = server_versions(client)

    results = [summary(m) for m in measurements]
    results += concurrent_rows
    results += [summary(m) for m in peer_rows]
    cfg = engine.config
    return {
        **provenance("recall_latency", versions),
        "params": {
            "memories": corpus.size, "users": len(corpus.users), "queries": len(queries),
            "distinct_queries": distinct, "warmup": args.warmup, "seed": args.seed,
            "k": args.k, "dims": int(corpus.centroids.shape[1]), "clusters": N_CLUSTERS,
            "vectors": "model (--embed-text)" if args.embed_text else "synthetic clusters",
            "write_order": write_order(args.interleave),
            "vocabulary_words": vocabulary_size(), "embedder": engine.embedder.name,
            "hnsw": {"m": cfg.hnsw_m, "ef_construction": cfg.hnsw_ef_construction,
                     "ef_runtime": cfg.hnsw_ef_runtime},
            **common_params(args),
        },
        "ingest": {k: round(v, 3) for k, v in ingest_stats.items()},
        "results": results,
        "ratios": ratios(results) | (peer_ratios(results) if args.peers else {}),
        "peers": peer_info,
        "consistency": check,
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the bundled model is on disk
    args = parse_args(argv)
    save_report(run(args), args.out, plot, print_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

