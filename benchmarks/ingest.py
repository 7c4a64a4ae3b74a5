"""Ingest throughput: ``add_many`` end to end, next to the embedding alone and the raw
pipelined HSET alone, and what one stored memory costs in Redis memory.

The turns are LoCoMo's (``--data``; one user per conversation, written as
``benchmarks/locomo_recall.py`` writes them). In one run, on one model and one Redis:

* ``embedding_only``: the model embedding exactly the texts ``add_many`` embeds (each turn
  with the turns before it in its session, see ``EngineConfig.context_turns``), in the same
  chunks, and nothing else;
* ``add_many``: the public API end to end (validation, context, embedding, pipelined
  MULTI/EXEC writes), into a fresh index;
* ``raw_hset``: the same hashes, vectors included, HSET in pipelined MULTI/EXEC batches of
  ``write_batch_size`` into another fresh index: the storage floor (HNSW insertion included);
* memory: Redis ``used_memory`` growth per stored memory, with float32 vectors (the engine's
  schema) and with float16 vectors (the same hashes, the vector halved, in an index declared
  FLOAT16), to size what a float16 option would save.

The ratio ``add_many / embedding_only`` (turns/s) is the share of the model's throughput the
engine keeps: everything but the embedding is overhead.

Run::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ingest.py --data ../shared/data/locomo_dev.json
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import redis
from redisvl.index import SearchIndex

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    LOCOMO_DEV,
    RESULTS_DIR,
    drop_prefix,
    open_redis,
    provenance,
    save_report,
    scratch_engine,
    server_versions,
)
from locomo_recall import Conversation, load

from memory_engine import MemoryEngine
from memory_engine._engine_base import EMBED_CHUNK
from memory_engine.store._schema import build_schema

QUICK_TURNS = 120


def conversations_upto(path: Path, turns: int | None) -> list[Conversation]:
    """The conversations of ``path``, the last one cut so that at most ``turns`` remain."""
    out: list[Conversation] = []
    left = turns
    for conv in load(path):
        if left is not None:
            if left <= 0:
                break
            conv.items = conv.items[:left]
            left -= len(conv.items)
        out.append(conv)
    return out


def embedded_texts(engine: MemoryEngine, conversations: Sequence[Conversation]) -> list[str]:
    """What ``add_many`` hands the model for these conversations (fresh sessions: the
    context of each turn is the turns before it in the same call)."""
    core = engine._core  # the engine's own planning, so the texts are exactly its texts
    texts: list[str] = []
    for conv in conversations:
        prepared = core.with_context(core.prepare_write(conv.user, conv.items, time.time()), {})
        texts += prepared.texts
    return texts


def embedding_only(engine: MemoryEngine, texts: Sequence[str]) -> float:
    """Seconds the model takes for ``texts``, in the engine's chunks."""
    model = engine.embedder.inner
    t = time.perf_counter()
    for start in range(0, len(texts), EMBED_CHUNK):
        model.embed_documents(texts[start : start + EMBED_CHUNK])
    return time.perf_counter() - t


def add_many(engine: MemoryEngine, conversations: Sequence[Conversation]) -> float:
    t = time.perf_counter()
    for conv in conversations:
        engine.add_many(conv.user, conv.items)
    return time.perf_counter() - t


def stored_hashes(client: redis.Redis, prefix: str) -> list[tuple[str, dict[bytes, bytes]]]:
    """Every memory hash under ``prefix``: (key without the prefix, fields)."""
    return [(key.decode()[len(prefix):], client.hgetall(key))
            for key in client.scan_iter(match=f"{prefix}:mem:*", count=1000)]


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


def raw_hset(client: redis.Redis, prefix: str, hashes: Sequence[tuple[str, dict[bytes, bytes]]],
             batch: int) -> float:
    """Seconds to HSET ``hashes`` under ``prefix`` in pipelined MULTI/EXEC batches."""
    t = time.perf_counter()
    for start in range(0, len(hashes), batch):
        pipe = client.pipeline(transaction=True)
        for key, fields in hashes[start : start + batch]:
            pipe.hset(prefix + key, mapping=fields)  # type: ignore[arg-type]
        pipe.execute()
    return time.perf_counter() - t


def float16_index(client: redis.Redis, engine: MemoryEngine, name: str) -> None:
    """An index like the engine's, under its own prefix, with FLOAT16 vectors."""
    spec = {**engine._core.store_core.spec}
    spec["index"] = {**spec["index"], "name": name, "prefix": f"{name}:mem:"}
    spec["fields"] = [
        {**f, "attrs": {**f["attrs"], "datatype": "float16"}} if f["type"] == "vector" else f
        for f in spec["fields"]
    ]
    SearchIndex(build_schema(spec), redis_client=client).create(overwrite=True)


Hashes = list[tuple[str, dict[bytes, bytes]]]


def halved(hashes: Hashes) -> Hashes:
    """The hashes with their float32 vectors as float16."""
    out = []
    for key, fields in hashes:
        vector = np.frombuffer(fields[b"embedding"], dtype=np.float32).astype(np.float16)
        out.append((key, {**fields, b"embedding": vector.tobytes()}))
    return out


def row(name: str, turns: int, seconds: float) -> dict[str, Any]:
    return {"name": name, "turns": turns, "seconds": round(seconds, 6),
            "per_s": round(turns / seconds, 2)}


def run(args: argparse.Namespace) -> dict[str, Any]:
    conversations = conversations_upto(args.data, args.turns)
    turns = sum(len(c.items) for c in conversations)
    with contextlib.ExitStack() as stack:
        url, client = open_redis(stack, args.redis_url)
        engine = scratch_engine(stack, url, client, cleanup=drop_prefix)
        texts = embedded_texts(engine, conversations)
        engine.embedder.inner.embed_documents(texts[:16])  # warm the model up
        embed_s = embedding_only(engine, texts)
        before = used_memory(client)
        ingest_s = add_many(engine, conversations)
        float32_bytes = (used_memory(client) - before) / turns
        prefix = engine.config.key_prefix
        hashes = stored_hashes(client, prefix)
        floor = scratch_engine(stack, url, client, cleanup=drop_prefix)  # an empty index
        hset_s = raw_hset(client, floor.config.key_prefix, hashes, engine.config.write_batch_size)
        half_name = f"{floor.config.index_name}_f16"
        float16_index(client, engine, half_name)
        stack.callback(client.execute_command, "FT.DROPINDEX", half_name, "DD")
        before = used_memory(client)
        raw_hset(client, half_name, halved(hashes), engine.config.write_batch_size)
        float16_bytes = (used_memory(client) - before) / turns
        versions = server_versions(client)
        chunk = engine.config.embedding_batch_size
    results = [row("embedding_only", turns, embed_s), row("add_many", turns, ingest_s),
               row("raw_hset", turns, hset_s)]
    return {
        **provenance("ingest", versions),
        "params": {"data": str(args.data), "turns": turns, "conversations": len(conversations),
                   "embedded_chars_mean": round(float(np.mean([len(t) for t in texts])), 1),
                   "embedding_batch_size": chunk, "quick": args.quick,
                   "redis": "external" if args.redis_url else "embedded"},
        "results": results,
        "ratios": {
            "add_many_over_embedding_only_per_s": round(
                results[1]["per_s"] / results[0]["per_s"], 4),
            "raw_hset_over_add_many_per_s": round(results[2]["per_s"] / results[1]["per_s"], 2),
        },
        "memory": {"float32_bytes_per_memory": round(float32_bytes),
                   "float16_bytes_per_memory": round(float16_bytes),
                   "float16_saving": round(1 - float16_bytes / float32_bytes, 4)},
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = report["results"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    bars = left.bar([r["name"] for r in results], [r["per_s"] for r in results],
                    color=["#4c72b0", "#55a868", "#c44e52"])
    left.bar_label(bars, labels=[f"{r['per_s']:,.0f}" for r in results], fontsize=8)
    left.set_yscale("log")
    left.set_ylabel("memories per second (log scale)")
    left.set_title(f"ingest, {report['params']['turns']:,} LoCoMo turns")
    memory = report["memory"]
    values = [memory["float32_bytes_per_memory"], memory["float16_bytes_per_memory"]]
    bars = right.bar(["float32", "float16"], values, color=["#4c72b0", "#8172b2"])
    right.bar_label(bars, labels=[f"{v:,}" for v in values], fontsize=8)
    right.set_ylabel("Redis bytes per stored memory")
    right.set_title("memory per memory (used_memory growth)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(report: dict[str, Any]) -> None:
    print(f"\ningest of {report['params']['turns']:,} LoCoMo turns")
    for r in report["results"]:
        print(f"{r['name']:16} {r['per_s']:10,.1f} /s   ({r['seconds']:.1f} s)")
    ratio = report["ratios"]["add_many_over_embedding_only_per_s"]
    print(f"\nadd_many keeps {100 * ratio:.1f}% of the embedding-only throughput")
    m = report["memory"]
    print(f"Redis memory per memory: float32 {m['float32_bytes_per_memory']:,} B, "
          f"float16 {m['float16_bytes_per_memory']:,} B ({100 * m['float16_saving']:.1f}% less)")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=LOCOMO_DEV,
                        help=f"LoCoMo JSON file (default: {LOCOMO_DEV})")
    parser.add_argument("--turns", type=int, help="at most this many turns (default: all)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run: the first {QUICK_TURNS} turns")
    parser.add_argument("--out", type=Path, help="result JSON; the PNG is written next to it")
    parser.add_argument("--redis-url", help="default: a private embedded server")
    args = parser.parse_args(argv)
    if args.quick and args.turns is None:
        args.turns = QUICK_TURNS
    if args.turns is not None and args.turns < 1:
        parser.error("--turns must be at least 1")
    if args.out is None:
        args.out = RESULTS_DIR / ("ingest_quick.json" if args.quick else "ingest.json")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    save_report(run(args), args.out, plot, print_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
