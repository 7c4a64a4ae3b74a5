"""How search latency and vector recall grow with the number of memories and of users.

Each point is a fresh index holding ``recall_latency.py``'s synthetic corpus (clustered
384-d vectors, shared-vocabulary text, written through ``add_many`` with precomputed
vectors). At each point, for the same kind of queries (embedded once, cached):

* ``raw_knn``: the engine's own KNN ``FT.SEARCH`` (user filter, k=10), the floor: the exact
  query when the user has at most ``exact_search_limit`` memories, else the HNSW one, as
  the engine sends it (``EngineCore.sent_commands``);
* ``vector`` and ``hybrid``: ``MemoryEngine.search`` (query embedding excluded);
* vector recall@10 against exact search: the engine's vector hits against a brute-force
  cosine top 10 over the same user's vectors (numpy), with the configured HNSW parameters;
* Redis ``used_memory`` after ingest, and ingest throughput.

Sweeps: 10k and 100k memories over 1,000 users (``--million`` adds 1M: ~7 minutes of ingest
and ~7 GB of Redis memory), then 100k memories over 10, 1,000 and 100,000 users.

Memories are written user by user; ``--interleave`` writes one session per user in turn, as
many users talking at once do, so each user's memories lie scattered in the index (see
``recall_latency.py``).

Run::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/scale.py [--million] [--interleave]
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    RESULTS_DIR,
    info_value,
    open_redis,
    provenance,
    save_report,
    scratch_engine,
    server_versions,
    timed,
)
from recall_latency import (
    SESSION_LENGTH,
    make_corpus,
    make_queries,
    write_batches,
    write_order,
)

from memory_engine import MemoryEngine
from memory_engine.retrieval._queries import count_command

K = 10


def ingest(
    engine: MemoryEngine, rng: np.random.Generator, corpus: Any, keep: set[str], *,
    interleave: bool = False,
) -> tuple[float, dict[str, tuple[list[str], np.ndarray]]]:
    """Write the corpus (user by user, or with ``interleave`` one session per user in turn);
    return seconds spent in ``add_many`` and, for the users in ``keep``, their memory ids and
    vectors (for exact search)."""
    spent = 0.0
    kept: dict[str, tuple[list[str], list[Any]]] = {}
    for user, chunk in write_batches(rng, corpus, time.time(), interleave):
        t = time.perf_counter()
        written = engine.add_many(user, chunk)
        spent += time.perf_counter() - t
        if user in keep:
            ids, vectors = kept.setdefault(user, ([], []))
            ids += [m.id for m in written]
            vectors += [np.asarray(item.embedding) for item in chunk]
    return spent, {user: (ids, np.stack(vectors)) for user, (ids, vectors) in kept.items()}


def exact_top(vectors: np.ndarray, ids: Sequence[str], query: np.ndarray, k: int) -> set[str]:
    scores = vectors @ query
    return {ids[i] for i in np.argsort(-scores)[:k]}


def run_point(
    url: str, client: redis.Redis, memories: int, users: int, queries: int, seed: int, *,
    interleave: bool = False,
) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    with contextlib.ExitStack() as scratch:
        engine = scratch_engine(scratch, url, client)
        corpus = make_corpus(rng, memories, users, engine.embedder.dims)
        asked = make_queries(rng, corpus.users, queries)
        before = int(client.info("memory")["used_memory"])
        spent, kept = ingest(engine, rng, corpus, {u for u, _ in asked}, interleave=interleave)
        used = int(client.info("memory")["used_memory"]) - before
        indexed = int(info_value(client.execute_command("FT.INFO", engine.config.index_name),
                                 "num_docs"))
        vectors = {text: engine.embedder.embed_query(text) for _, text in asked}  # cached now
        core = engine._core
        raw = []
        for user, text in asked:
            plan = core.plan_search(user, text, k=K, mode="vector", clock=time.time())
            matches = int(client.execute_command(
                *count_command(engine.config.index_name, plan.request))[0])
            raw.append(core.sent_commands(plan, vectors[text], matches)[-1])
        calls = {
            "raw_knn": [functools.partial(client.execute_command, *c) for c in raw],
            "vector": [functools.partial(engine.search, u, t, k=K, mode="vector")
                       for u, t in asked],
            "hybrid": [functools.partial(engine.search, u, t, k=K) for u, t in asked],
        }
        rows = {}
        for name, loop in calls.items():
            for call in loop[: min(50, len(loop))]:  # warm up
                call()
            m = timed(name, loop)
            rows[name] = {**m.latency_summary(), "qps": m.per_second()}
        recalls = []
        for user, text in asked:
            ids, matrix = kept[user]
            want = exact_top(matrix, ids, vectors[text], min(K, len(ids)))
            got = {h.memory.id for h in engine.search(user, text, k=K, mode="vector")}
            recalls.append(len(want & got) / len(want))
    return {
        "memories": memories, "users": users, "indexed": indexed, "queries": queries,
        "results": rows,
        "vector_recall_at_10_vs_exact": round(float(np.mean(recalls)), 4),
        "used_memory_bytes": used, "bytes_per_memory": round(used / memories),
        "ingest_per_s": round(memories / spent, 1),
    }


def points(args: argparse.Namespace) -> list[tuple[int, int]]:
    if args.quick:
        return [(2_000, 100), (6_000, 100), (6_000, 10), (6_000, 1_000)]
    sizes = [(10_000, 1_000), (100_000, 1_000)] + ([(1_000_000, 1_000)] if args.million else [])
    return [*sizes, (100_000, 10), (100_000, 100_000)]


def run(args: argparse.Namespace) -> dict[str, Any]:
    with contextlib.ExitStack() as stack:
        url, client = open_redis(stack, args.redis_url)
        results = []
        for memories, users in points(args):
            print(f"point: {memories:,} memories, {users:,} users", file=sys.stderr, flush=True)
            results.append(run_point(url, client, memories, users, args.queries, args.seed,
                                     interleave=args.interleave))
        versions = server_versions(client)
    return {
        **provenance("scale", versions),
        "params": {"k": K, "queries": args.queries, "seed": args.seed, "quick": args.quick,
                   "million": args.million,
                   "write_order": write_order(args.interleave),
                   "redis": "external" if args.redis_url else "embedded"},
        "points": results,
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (by_size, by_users) = plt.subplots(1, 2, figsize=(11, 4.2))
    pts = report["points"]
    users_fixed = max({p["users"] for p in pts}, key=lambda u: sum(q["users"] == u for q in pts))
    sizes = sorted((p for p in pts if p["users"] == users_fixed), key=lambda p: p["memories"])
    memories_fixed = max({p["memories"] for p in pts},
                         key=lambda m: sum(q["memories"] == m for q in pts))
    crowd = sorted((p for p in pts if p["memories"] == memories_fixed), key=lambda p: p["users"])
    panels = ((by_size, sizes, "memories", f"memories ({users_fixed:,} users)"),
              (by_users, crowd, "users", f"users ({memories_fixed:,} memories)"))
    for ax, series, key, label in panels:
        xs = [p[key] for p in series]
        for name, color in (("raw_knn", "#8c8c8c"), ("vector", "#4c72b0"), ("hybrid", "#dd8452")):
            ax.plot(xs, [p["results"][name]["p50_ms"] for p in series], marker="o", color=color,
                    label=f"{name} p50")
            ax.plot(xs, [p["results"][name]["p99_ms"] for p in series], marker="x",
                    linestyle="--", color=color, label=f"{name} p99")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("latency (ms)")
        ax.grid(alpha=0.3)
    interleaved = report["params"].get("write_order") == write_order(True)
    by_size.set_title("search latency against index size"
                      + (", interleaved writes" if interleaved else ""))
    by_users.set_title("search latency against number of users")
    by_users.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(report: dict[str, Any]) -> None:
    print(f"\n{'memories':>10} {'users':>8} {'raw_knn p50/p99':>16} {'vector p50/p99':>16} "
          f"{'hybrid p50/p99':>16} {'R@10 exact':>10} {'B/memory':>9}")
    for p in report["points"]:
        r = p["results"]
        cells = [f"{r[n]['p50_ms']:.2f}/{r[n]['p99_ms']:.2f}" for n in ("raw_knn", "vector",
                                                                      "hybrid")]
        print(f"{p['memories']:>10,} {p['users']:>8,} {cells[0]:>16} {cells[1]:>16} "
              f"{cells[2]:>16} {p['vector_recall_at_10_vs_exact']:>10.3f} "
              f"{p['bytes_per_memory']:>9,}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--million", action="store_true", help="add the 1M-memory point")
    parser.add_argument("--queries", type=int, help="queries per point (default 500, 60 quick)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--quick", action="store_true", help="small points, for CI")
    parser.add_argument("--interleave", action="store_true",
                        help=f"write one session ({SESSION_LENGTH} memories) per user in turn "
                        "instead of user by user: each user's memories lie scattered in the index")
    parser.add_argument("--out", type=Path, help="result JSON; the PNG is written next to it")
    parser.add_argument("--redis-url", help="default: a private embedded server")
    args = parser.parse_args(argv)
    if args.queries is None:
        args.queries = 60 if args.quick else 500
    if args.out is None:
        args.out = RESULTS_DIR / ("scale_quick.json" if args.quick else "scale.json")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    save_report(run(args), args.out, plot, print_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
