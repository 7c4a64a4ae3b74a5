"""The peers ``recall_latency.py`` times next to the engine: same run, same Redis, same data,
same model, one client, k hits per call, the same (user, query) list.

Each peer gets its own index and key prefix (``peer_<name>_<12 hex>``), dropped with its
documents when its loop is done, so peers never run while another peer's data is indexed.

What each peer's timed call includes (all embed the query text with the same encoder object
as the engine's ``query_embedding`` row - the bundled all-MiniLM-L6-v2 through the engine's
query path, ONNX with the ``fast`` extra - so the rows compare the search libraries, not two
runtimes of one model; ``query_embedding_torch`` shows what torch would add to each). Each
peer is timed twice, like the engine: ``peer_<name>_e2e`` embeds every query, ``peer_<name>``
gets the query's vector from the encoder's cache (:class:`QueryCache`), so it is the peer's
search alone, to compare with the engine's ``hybrid`` and ``vector``:

* ``peer_langchain_redis`` - langchain-redis ``RedisVectorStore.similarity_search(query,
  k=k, filter=Tag("user_id") == user)``: the query embedded by a LangChain ``Embeddings``
  wrapping the shared encoder, then one KNN FT.SEARCH (langchain-redis adds its own
  ``_index_name`` text filter) and ``Document`` building. Its default index: FLAT, cosine,
  float32, hash storage.
* ``peer_redisvl_history`` - redisvl ``SemanticMessageHistory.get_relevant(query,
  top_k=k, session_tag=user, distance_threshold=2.0)``: the query embedded by a
  ``CustomTextVectorizer`` over the shared encoder, then one range FT.SEARCH
  (FLAT, its default) and message formatting. The threshold is opened to the whole cosine
  range (its default, 0.3, would drop every hit, see below) so it returns k like the rest.
* ``peer_mem0`` - mem0 OSS ``Memory.search(query, top_k=k, filters={"user_id": user},
  threshold=0.0)``: the query embedded by the shared encoder (mem0 is configured with its
  ``huggingface`` embedder on the bundled path, whose model object is then replaced by an
  adapter with mem0's ``embed(text, memory_action)`` interface over the shared encoder),
  then its hybrid: a vector FT.SEARCH for ``max(4k, 60)`` candidates and a BM25 FT.SEARCH
  for as many, both filtered by user, scored and cut to k in Python. spaCy (the
  ``mem0ai[nlp]`` extra) is not installed, as with a plain ``pip install mem0ai``, so mem0
  skips query lemmatisation and entity boosts. Threshold 0.0 for the reason below. Telemetry is
  off (``MEM0_TELEMETRY=False``); its LLM (openai provider, base URL http://127.0.0.1:9/, a dummy
  key) is never called - a tripwire fails the run if it is - and ``MEM0_DIR`` and the history
  database are in a temporary directory. mem0 2.2.1's Redis store calls
  ``SearchIndex.set_client``, which redisvl 0.28 removed (deprecated before, in favour of the
  constructor's ``redis_client``); where it is missing, :func:`_restore_set_client` gives it back
  for this process as exactly that constructor argument (the report's ``peers.mem0.compat``
  says so). Only mem0's constructor calls it.

The data: every memory of every user, with the corpus's own precomputed vectors (the
synthetic, clustered vectors the engine stores, not the model's embedding of the text, which
is why score thresholds meant for real embeddings are opened). The peers' write APIs take
text and embed it themselves, so the vectors reach them through the embedder each one is
given: while ingesting, it hands out the corpus's vectors in order instead of running the
model (checked: exactly one per memory). langchain-redis ingests with ``add_texts`` (one call
per user, ``user_id`` as a tag metadata field); redisvl with ``add_messages`` (one call per
user, ``session_tag`` = user, roles ``user`` / ``llm``); mem0 through its Redis vector store's
``insert`` (one call per user) with the payload ``Memory.add(..., infer=False)`` writes (user,
role, data, hash, created_at, updated_at, text_lemmatized), because ``add`` embeds one memory
at a time. Its SQLite history rows, which search never reads, are not written. Before the
bulk insert one probe memory goes through ``Memory.add(..., infer=False)`` for a user no query
asks about; the stored fields of both paths are compared (the run fails if they differ) and
the probe is deleted again.

Every peer is checked before it is timed: for the first query, at least one hit, and every
hit one of that user's memories; otherwise the benchmark fails.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import redis
from _common import Measurement

from memory_engine import Embedder
from memory_engine.embeddings import bundled_model_path
from memory_engine.models import Vector

# import name -> distribution (pip) name; redisvl is a core dependency of memory-engine
PACKAGES = {"langchain_redis": "langchain-redis", "mem0": "mem0ai"}
INSTALL = ".venv/bin/pip install -e '.[bench]'"
RANGE = 2.0  # the whole cosine-distance range
PROBE_USER = "peer-probe"


def missing_packages() -> list[str]:
    """The peers' packages that cannot be imported (pip names)."""
    return [pip for module, pip in PACKAGES.items() if importlib.util.find_spec(module) is None]


@dataclass(frozen=True, slots=True)
class UserMemories:
    """Every memory of one user, as the engine stored them."""

    user: str
    texts: list[str]
    roles: list[str]  # "user" or "assistant"
    created_at: npt.NDArray[np.float64]
    vectors: npt.NDArray[np.float32]  # (len(texts), dims), unit rows


@dataclass(frozen=True, slots=True)
class Workload:
    """What every peer gets: the Redis, the memories, the queries, k and the model."""

    redis_url: str
    corpus: Callable[[], Iterable[UserMemories]]  # each call: a fresh pass, same memories,
    # a user's memories whole or in parts (in order)
    queries: Sequence[tuple[str, str]]
    k: int
    embedder: QueryEncoder  # the engine's query encoder (bundled model; ONNX with the fast extra)
    dims: int


class QueryEncoder(Protocol):
    def embed_query(self, text: str) -> Vector: ...


class QueryCache:
    """The shared query encoder, with a switch: while ``cached``, a query text seen before
    gets its vector back without running the model (as the engine's query cache does for its
    ``hybrid`` and ``vector`` rows), so a timed call is the peer's search alone."""

    def __init__(self, encoder: Embedder):
        self._encoder = encoder
        self._seen: dict[str, Vector] = {}
        self.cached = False

    def embed_query(self, text: str) -> Vector:
        if self.cached and text in self._seen:
            return self._seen[text]
        vector = self._seen[text] = self._encoder.embed_query(text)
        return vector


class PeerCheckError(RuntimeError):
    """A peer returned nothing, or another user's memories, for the check query."""


Calls = list[Callable[[], object]]


class _Vectors:
    """Text to vector for a peer: the shared embedder, except inside :meth:`precomputed`,
    where the corpus's own vectors are handed out in order (the peers' write APIs embed the
    text themselves; this is how they get the same vectors as the engine)."""

    def __init__(self, embedder: QueryEncoder):
        self._embedder = embedder
        self._pending: Iterator[list[float]] | None = None

    @contextlib.contextmanager
    def precomputed(self, vectors: npt.NDArray[np.float32]) -> Iterator[None]:
        self._pending = iter(vectors.tolist())
        try:
            yield
            if next(self._pending, None) is not None:
                raise PeerCheckError("the peer embedded fewer texts than it was given")
        finally:
            self._pending = None

    def __call__(self, text: str) -> list[float]:
        if self._pending is not None:
            given = next(self._pending, None)
            if given is None:
                raise PeerCheckError("the peer embedded more texts than it was given")
            return given
        vector: list[float] = self._embedder.embed_query(text).tolist()
        return vector


def _ingest(work: Workload, write: Callable[[UserMemories], object]) -> set[str]:
    """``write`` every batch of the corpus (a user's memories, whole or in parts); returns
    the texts of the first query's user."""
    first, texts = work.queries[0][0], set[str]()
    for mem in work.corpus():
        write(mem)
        if mem.user == first:
            texts |= set(mem.texts)
    return texts


def _check(name: str, user: str, found: Sequence[str], texts: set[str]) -> None:
    """At least one hit, every one of them one of ``texts`` (the user's memories)."""
    if not found:
        raise PeerCheckError(f"{name} returned no hit for the first query (user {user})")
    strangers = [t for t in found if t not in texts]
    if strangers:
        raise PeerCheckError(f"{name} returned memories that are not {user}'s: {strangers[:3]}")


def _name(peer: str) -> str:
    return f"peer_{peer}_{uuid.uuid4().hex[:12]}"


# --- langchain-redis ---------------------------------------------------------------------


def langchain_redis(stack: contextlib.ExitStack, work: Workload) -> Calls:
    """``RedisVectorStore.similarity_search`` with a user tag filter; see the module doc."""
    from langchain_core.embeddings import Embeddings
    from langchain_redis import RedisConfig, RedisVectorStore
    from redisvl.query.filter import Tag

    vectors = _Vectors(work.embedder)

    class SharedEmbeddings(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return [vectors(t) for t in texts]

        def embed_query(self, text: str) -> list[float]:
            return vectors(text)

    name = _name("langchain_redis")
    store = RedisVectorStore(SharedEmbeddings(), config=RedisConfig(
        index_name=name, key_prefix=name, redis_url=work.redis_url,
        embedding_dimensions=work.dims,  # else its constructor embeds a probe sentence
        metadata_schema=[{"name": "user_id", "type": "tag"}],
    ))
    stack.callback(store.index.delete, drop=True)

    def write(mem: UserMemories) -> None:
        with vectors.precomputed(mem.vectors):
            store.add_texts(mem.texts, metadatas=[{"user_id": mem.user}] * len(mem.texts))

    expected = _ingest(work, write)

    def call(user: str, text: str) -> list[Any]:
        return store.similarity_search(text, k=work.k, filter=Tag("user_id") == user)

    user, text = work.queries[0]
    _check("langchain-redis", user, [d.page_content for d in call(user, text)], expected)
    return [functools.partial(call, u, t) for u, t in work.queries]


# --- redisvl SemanticMessageHistory ------------------------------------------------------


def redisvl_history(stack: contextlib.ExitStack, work: Workload) -> Calls:
    """``SemanticMessageHistory.get_relevant`` for the user's session; see the module doc."""
    from redisvl.extensions.message_history import SemanticMessageHistory
    from redisvl.utils.vectorize import CustomTextVectorizer

    vectors = _Vectors(work.embedder)
    name = _name("redisvl_history")
    history = SemanticMessageHistory(
        name, prefix=name, vectorizer=CustomTextVectorizer(embed=vectors),
        redis_url=work.redis_url,
    )
    stack.callback(history.delete)

    def write(mem: UserMemories) -> None:
        messages = [{"role": "user" if role == "user" else "llm", "content": text}
                    for text, role in zip(mem.texts, mem.roles, strict=True)]
        with vectors.precomputed(mem.vectors):
            history.add_messages(messages, session_tag=mem.user)

    expected = _ingest(work, write)

    def call(user: str, text: str) -> Any:
        return history.get_relevant(text, top_k=work.k, session_tag=user,
                                    distance_threshold=RANGE)

    user, text = work.queries[0]
    _check("redisvl SemanticMessageHistory", user,
           [m["content"] for m in call(user, text)], expected)
    return [functools.partial(call, u, t) for u, t in work.queries]


# --- mem0 ---------------------------------------------------------------------------------


class _LLMCalled(RuntimeError):
    pass


COMPAT: dict[str, str] = {}  # peer -> the shim it needed, for the report


def _restore_set_client() -> str | None:
    """Give redisvl's ``SearchIndex`` back the ``set_client`` mem0's Redis store calls,
    as the constructor's ``redis_client`` (redisvl's replacement for it); None if present."""
    from redisvl.index import SearchIndex

    if hasattr(SearchIndex, "set_client"):
        return None

    def set_client(self: SearchIndex, redis_client: redis.Redis, **_: object) -> SearchIndex:
        SearchIndex.__init__(self, self.schema, redis_client=redis_client)
        return self

    SearchIndex.set_client = set_client
    version = importlib.metadata.version("redisvl")
    return (f"redisvl {version} has no SearchIndex.set_client, which mem0's Redis store "
            "calls; restored as SearchIndex(schema, redis_client=client)")


class _Mem0Embedder:
    """mem0's embedder interface (``embed(text, memory_action)``) over the shared encoder."""

    def __init__(self, embedder: QueryEncoder):
        self._embedder = embedder

    def embed(self, text: str, memory_action: str | None = None) -> list[float]:
        vector: list[float] = self._embedder.embed_query(text).tolist()
        return vector


def _no_llm(*args: object, **kwargs: object) -> object:
    raise _LLMCalled("mem0 called its LLM; the benchmark runs it with infer=False and search")


def mem0(stack: contextlib.ExitStack, work: Workload) -> Calls:
    """mem0 OSS ``Memory.search`` filtered by user; see the module doc."""
    home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mem0-bench-")))
    os.environ["MEM0_TELEMETRY"] = "False"  # read when mem0 is first imported
    os.environ["MEM0_DIR"] = str(home)
    from mem0 import Memory
    from mem0.utils.lemmatization import lemmatize_for_bm25

    shim = _restore_set_client()
    if shim:
        COMPAT["mem0"] = shim
    name = _name("mem0")
    memory = Memory.from_config({
        "vector_store": {"provider": "redis", "config": {
            "redis_url": work.redis_url, "collection_name": name,
            "embedding_model_dims": work.dims}},
        "embedder": {"provider": "huggingface", "config": {
            "model": bundled_model_path(), "embedding_dims": work.dims}},  # replaced below
        "llm": {"provider": "openai", "config": {
            "api_key": "unused", "openai_base_url": "http://127.0.0.1:9/", "model": "unused"}},
        "history_db_path": str(home / "history.db"),
    })
    stack.callback(memory.close)
    stack.callback(memory.vector_store.client.close)
    client = redis.Redis.from_url(work.redis_url)
    stack.callback(client.close)
    for index in (name, f"{name}_entities"):  # the entity store, if mem0 made one
        stack.callback(_drop, client, index)
    memory.llm.generate_response = _no_llm
    memory.embedding_model = _Mem0Embedder(work.embedder)  # the shared query encoder
    store = memory.vector_store

    def payload(user: str, text: str, role: str, created: float) -> dict[str, Any]:
        """What ``Memory.add(..., infer=False)`` stores for one message."""
        stamp = dt.datetime.fromtimestamp(created, dt.UTC).isoformat()
        return {"user_id": user, "role": role, "data": text,
                "hash": hashlib.md5(text.encode()).hexdigest(), "created_at": stamp,
                "updated_at": stamp, "text_lemmatized": lemmatize_for_bm25(text)}

    # mem0's own write path, once, as the reference for the bulk path's stored fields
    probe = memory.add("a probe memory", user_id=PROBE_USER, infer=False)["results"][0]["id"]
    store.insert(vectors=[np.ones(work.dims).tolist()], ids=["bulk-probe"],
                 payloads=[payload(PROBE_USER, "a probe memory", "user", time.time())])
    prefix = store.schema["index"]["prefix"]
    stored = [_mem0_fields(client, f"{prefix}:{key}") for key in (probe, "bulk-probe")]
    client.delete(*(f"{prefix}:{key}" for key in (probe, "bulk-probe")))
    if stored[0] != stored[1]:
        raise PeerCheckError(f"mem0 stores {sorted(stored[0])} from add(infer=False) but "
                             f"{sorted(stored[1])} from the bulk insert")

    def write(mem: UserMemories) -> None:
        store.insert(
            vectors=mem.vectors.tolist(),
            ids=[str(uuid.uuid4()) for _ in mem.texts],
            payloads=[payload(mem.user, t, r, float(c)) for t, r, c in
                      zip(mem.texts, mem.roles, mem.created_at, strict=True)],
        )

    expected = _ingest(work, write)

    def call(user: str, text: str) -> Any:
        return memory.search(text, top_k=work.k, filters={"user_id": user}, threshold=0.0)

    user, text = work.queries[0]
    _check("mem0", user, [h["memory"] for h in call(user, text)["results"]], expected)
    return [functools.partial(call, u, t) for u, t in work.queries]


def _mem0_fields(client: redis.Redis, key: str) -> set[str]:
    """The hash fields of a mem0 memory, and the keys of its ``metadata`` JSON."""
    fields = {k.decode() if isinstance(k, bytes) else k: v
              for k, v in client.hgetall(key).items()}
    if not fields:
        raise PeerCheckError(f"mem0 wrote nothing at {key}")
    return set(fields) | {f"metadata.{k}" for k in json.loads(fields["metadata"])}


def _drop(client: redis.Redis, index: str) -> None:
    with contextlib.suppress(redis.ResponseError):  # never created
        client.execute_command("FT.DROPINDEX", index, "DD")  # type: ignore[no-untyped-call]


# --- Running them ------------------------------------------------------------------------

SETUPS: Mapping[str, tuple[str, Callable[[contextlib.ExitStack, Workload], Calls]]] = {
    "langchain_redis": ("langchain-redis", langchain_redis),
    "redisvl_history": ("redisvl", redisvl_history),
    "mem0": ("mem0ai", mem0),
}


def measure_peers(
    work: Workload, measure: Callable[[str, Sequence[Callable[[], object]]], Measurement],
    pair: Callable[[str, Calls, Calls], dict[str, Any]] | None = None,
) -> tuple[list[Measurement], dict[str, Any]]:
    """Each peer in turn: ingest, check, ``measure`` (warmup and timed loop) twice, ``pair``,
    drop.

    ``peer_<name>_e2e`` embeds every query; ``peer_<name>`` has the query's vector from the
    encoder's cache (every query was embedded in the first loop), like the engine's
    ``hybrid`` and ``vector`` rows. ``pair(name, cached, e2e)``, while the peer's data is
    still there, gets both loops (each call setting the cache as its row does) to time them
    taking turns with the engine's; what it returns is the peer's ``paired``.
    ``work.embedder`` must be a :class:`QueryCache`. Returns the measurements and, per peer,
    its package version and the seconds its ingest (and check) took.
    """
    if not isinstance(work.embedder, QueryCache):
        raise TypeError("measure_peers needs a QueryCache as the workload's embedder")
    cache = work.embedder

    def with_cache(cached: bool, call: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            cache.cached = cached
            return call()
        return run

    rows: list[Measurement] = []
    about: dict[str, Any] = {}
    for name, (package, setup) in SETUPS.items():
        print(f"peer {name}: ingest and check", file=sys.stderr)
        with contextlib.ExitStack() as stack:
            t0 = time.perf_counter()
            calls = setup(stack, work)
            ingest_s = time.perf_counter() - t0
            cache.cached = False
            rows.append(measure(f"peer_{name}_e2e", calls))
            cache.cached = True
            rows.append(measure(f"peer_{name}", calls))
            cache.cached = False
            about[name] = {"package": package, "version": importlib.metadata.version(package),
                           "ingest_s": round(ingest_s, 3)}
            if pair is not None:
                print(f"peer {name}: taking turns with the engine", file=sys.stderr)
                about[name]["paired"] = pair(
                    name, [with_cache(True, c) for c in calls],
                    [with_cache(False, c) for c in calls])
                cache.cached = False
        if name in COMPAT:
            about[name]["compat"] = COMPAT[name]
    return rows, about


def peer_ratios(results: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The engine's p50 over each peer's (below 1: the engine is faster): ``hybrid`` and
    ``vector`` over ``peer_<name>`` (query embedding excluded from both), ``hybrid_e2e`` and
    ``vector_e2e`` over ``peer_<name>_e2e`` (included in both)."""
    p50 = {r["name"]: r["p50_ms"] for r in results if r["clients"] == 1}
    out = {}
    for name in SETUPS:
        for mine in ("hybrid", "vector"):
            out[f"{mine}_over_peer_{name}_p50"] = round(p50[mine] / p50[f"peer_{name}"], 3)
            out[f"{mine}_e2e_over_peer_{name}_e2e_p50"] = round(
                p50[f"{mine}_e2e"] / p50[f"peer_{name}_e2e"], 3)
    return out
