"""What encryption at rest costs: ingest throughput, search latency, retrieval quality and
Redis memory, with encryption off and on, in one run on one Redis and one model.

The data is LoCoMo's (``--data``), written as ``benchmarks/locomo_recall.py`` writes it: one
user per conversation, one ``add_many`` of its turns. Each side has fresh indexes of its own:
*off* is the default configuration (text, name and context indexed as TEXT, BM25), *on* the
same with ``master_key`` set (text, name and metadata sealed with AES-256-GCM under a per-user
data key; the keyword half searches the blind index, a TAG field of keyed digests of the
stemmed words).

* ``ingest.storage_path``: ``add_many`` with caller-given vectors, so the model is out of the
  measurement. The vectors are the model's for exactly the texts ``add_many`` would embed
  (each turn with its context), computed once up front, so these indexes hold what the public
  path writes. ``--rounds`` rounds, each with fresh indexes, the order off/on alternating
  from round to round; every round is reported, and the ratio of the best on to the best off.
* ``ingest.end_to_end``: ``add_many`` as the public API runs it (the model embeds), one round
  per side, into fresh indexes that the searches below then use. Skipped with ``--quick``
  (the searches use the last storage-path round's indexes then).
* ``memory``: Redis ``used_memory`` growth per stored memory, per side and round.
* ``search``: p50/p95/p99 of ``search(user, question, k=10, now=...)`` in each mode, with the
  query embedding excluded: both engines' query caches are warmed with every question first
  (the cache is per engine), and the misses during the timed loop are reported (0 expected).
  Off and on alternate per question (which goes first alternates too), so machine noise
  lands on both sides alike.
* ``recall``: LoCoMo evidence recall@k (``--k``) per category and overall, keyword, vector and
  hybrid, off and on (``locomo_recall.run_mode`` / ``summarise``); the headline is keyword
  recall@10 with the blind index against plaintext BM25, and hybrid recall@10 on against off,
  in points.

Run::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/encryption.py --data ../shared/data/locomo_dev.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import redis

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    LOCOMO_DEV,
    RESULTS_DIR,
    Measurement,
    drop_prefix,
    info_value,
    open_redis,
    provenance,
    save_report,
    server_versions,
)
from ingest import embedded_texts, used_memory
from locomo_recall import CATEGORIES, Conversation, load, run_mode, summarise

from memory_engine import EngineConfig, MemoryEngine, NewMemory
from memory_engine.embeddings import Embedder
from memory_engine.security import generate_master_key

SIDES = ("off", "on")
MODES = ("hybrid", "keyword", "vector")
SEARCH_K = 10
QUICK_QUESTIONS = 40


def open_engine(
    stack: contextlib.ExitStack, url: str, client: redis.Redis, side: str,
    model: Embedder | None,
) -> MemoryEngine:
    """A connected engine on an index and prefix of its own, encrypted when ``side`` is on;
    closed, then everything under its prefix dropped, when ``stack`` closes."""
    name = f"bench_enc_{side}_{uuid.uuid4().hex[:10]}"
    config = EngineConfig(redis_url=url, index_name=name, key_prefix=name,
                          master_key=generate_master_key() if side == "on" else None)
    stack.callback(drop_prefix, client, config)
    engine = stack.enter_context(MemoryEngine(config, embedder=model))
    engine.connect()
    return engine


def with_vectors(conversations: Sequence[Conversation], model: Embedder,
                 texts: Sequence[str]) -> list[list[NewMemory]]:
    """Each conversation's items, each with the model's vector of its ``texts`` entry."""
    out: list[list[NewMemory]] = []
    start = 0
    for conv in conversations:
        end = start + len(conv.items)
        vectors = model.embed_documents(list(texts[start:end]))
        out.append([dataclasses.replace(item, embedding=v)
                    for item, v in zip(conv.items, vectors, strict=True)])
        start = end
    return out


def ingest(engine: MemoryEngine, client: redis.Redis, conversations: Sequence[Conversation],
           items: Sequence[Sequence[NewMemory]]) -> tuple[float, int]:
    """Seconds to ``add_many`` every conversation's ``items``, and the growth of Redis
    ``used_memory`` in bytes."""
    before = used_memory(client)
    t = time.perf_counter()
    for conv, batch in zip(conversations, items, strict=True):
        engine.add_many(conv.user, batch)
    seconds = time.perf_counter() - t
    return seconds, used_memory(client) - before


def storage_check(client: redis.Redis, engine: MemoryEngine, plain: set[str]) -> dict[str, Any]:
    """What one side's Redis holds: the index's attribute names, and how many stored ``text``
    values are a turn's plaintext."""
    cfg = engine.config
    info = client.execute_command("FT.INFO", cfg.index_name)
    attributes = sorted(str(info_value(a, "attribute")) for a in info_value(info, "attributes"))
    texts = [client.hget(key, "text") for key in
             client.scan_iter(match=f"{cfg.key_prefix}:mem:*", count=1000)]
    readable = sum(1 for t in texts if t is not None and t.decode(errors="replace") in plain)
    return {"index_attributes": attributes, "memories": len(texts),
            "text_values_in_plaintext": readable}


def time_searches(
    engines: dict[str, MemoryEngine], conversations: Sequence[Conversation]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every question in every mode on both sides, off and on alternating per question; the
    rows (latency summary, qps, mean hits, share of hits that are the user's turns) and the
    query-cache checks."""
    latencies: dict[str, list[float]] = {f"{m}_{s}": [] for m in MODES for s in SIDES}
    hits_seen: dict[str, list[int]] = {name: [] for name in latencies}
    valid_seen: dict[str, list[int]] = {name: [] for name in latencies}
    misses = {side: engines[side].embedder.misses for side in SIDES}
    clock = time.perf_counter
    n = 0
    for conv in conversations:
        for qa in conv.questions:
            order = SIDES if n % 2 == 0 else SIDES[::-1]
            n += 1
            for mode in MODES:
                for side in order:
                    t0 = clock()
                    hits = engines[side].search(conv.user, qa["question"], k=SEARCH_K,
                                                mode=mode, now=conv.now)
                    latencies[f"{mode}_{side}"].append((clock() - t0) * 1000.0)
                    hits_seen[f"{mode}_{side}"].append(len(hits))
                    valid_seen[f"{mode}_{side}"].append(
                        sum(str(h.metadata.get("dia_id")) in conv.dia_ids for h in hits))
    rows = []
    for name, values in latencies.items():
        array = np.asarray(values, dtype=np.float64)
        m = Measurement(name, array, float(array.sum()) / 1000.0)
        total = sum(hits_seen[name])
        rows.append({"name": name, "calls": m.calls, **m.latency_summary(),
                     "qps": m.per_second(),
                     "mean_hits": round(total / m.calls, 3),
                     "hits_that_are_the_users_turns": round(sum(valid_seen[name]) / total, 4)
                     if total else 0.0})
    checks = {f"query_cache_misses_{side}": engines[side].embedder.misses - misses[side]
              for side in SIDES}
    return rows, checks


def recall(engine: MemoryEngine, conversations: list[Conversation],
           ks: Sequence[int]) -> dict[str, Any]:
    return {mode: summarise(run_mode(engine, conversations, mode, ks, 0.0)) for mode in MODES}


def ratio(on: float, off: float, digits: int = 3) -> float:
    return round(on / off, digits)


def run(args: argparse.Namespace) -> dict[str, Any]:
    conversations = load(args.data)[: 1 if args.quick else None]
    if args.quick:
        for conv in conversations:  # spread over the conversation, so every category shows
            step = max(1, len(conv.questions) // QUICK_QUESTIONS)
            conv.questions = conv.questions[::step][:QUICK_QUESTIONS]
    ks = sorted(set(args.k))
    turns = sum(len(c.items) for c in conversations)
    plain = {item.text for c in conversations for item in c.items}
    with contextlib.ExitStack() as stack:
        url, client = open_redis(stack, args.redis_url)
        versions = server_versions(client)
        loader = open_engine(stack, url, client, "off", None)  # loads the model once
        model = loader.embedder.inner
        model.embed_documents(["warm the model up"])
        t = time.perf_counter()
        texts = embedded_texts(loader, conversations)
        vectored = with_vectors(conversations, model, texts)
        embed_s = time.perf_counter() - t
        print(f"embedded {turns} turn texts up front in {embed_s:.1f} s", file=sys.stderr)

        storage: dict[str, Any] = {"off_turns_s": [], "on_turns_s": [], "order": [],
                                   "ratio_on_over_off": []}
        memory: dict[str, list[int]] = {"off_bytes_per_memory": [], "on_bytes_per_memory": []}
        engines: dict[str, MemoryEngine] = {}
        round_stack = contextlib.ExitStack()
        for n in range(args.rounds):
            round_stack.close()  # the previous round's indexes go before this round's come
            round_stack = stack.enter_context(contextlib.ExitStack())
            order = SIDES if n % 2 == 0 else SIDES[::-1]
            per_s = {}
            for side in order:
                engine = open_engine(round_stack, url, client, side, model)
                seconds, grown = ingest(engine, client, conversations, vectored)
                per_s[side] = round(turns / seconds, 2)
                storage[f"{side}_turns_s"].append(per_s[side])
                memory[f"{side}_bytes_per_memory"].append(round(grown / turns))
                engines[side] = engine
            storage["order"].append(list(order))
            storage["ratio_on_over_off"].append(ratio(per_s["on"], per_s["off"]))
            print(f"storage path round {n + 1}: off {per_s['off']:,.0f} turns/s, "
                  f"on {per_s['on']:,.0f} turns/s", file=sys.stderr)
        storage["best_off_turns_s"] = max(storage["off_turns_s"])
        storage["best_on_turns_s"] = max(storage["on_turns_s"])
        storage["best_ratio_on_over_off"] = ratio(storage["best_on_turns_s"],
                                                  storage["best_off_turns_s"])

        end_to_end: dict[str, Any]
        if args.quick:
            end_to_end = {"skipped": True, "reason": "--quick: the model would dominate the run"}
            searched_on = "storage_path (last round)"
        else:
            round_stack.close()
            plain_items = [c.items for c in conversations]
            end_to_end = {"skipped": False}
            for side in SIDES:
                engine = open_engine(stack, url, client, side, model)
                seconds, _ = ingest(engine, client, conversations, plain_items)
                end_to_end[f"{side}_turns_s"] = round(turns / seconds, 2)
                end_to_end[f"{side}_seconds"] = round(seconds, 2)
                engines[side] = engine
                print(f"end to end {side}: {end_to_end[f'{side}_turns_s']:,.1f} turns/s",
                      file=sys.stderr)
            end_to_end["ratio_on_over_off"] = ratio(end_to_end["on_turns_s"],
                                                    end_to_end["off_turns_s"])
            searched_on = "end_to_end"

        checks = {side: storage_check(client, engines[side], plain) for side in SIDES}
        for engine in engines.values():  # the query path out of every measurement below
            for conv in conversations:
                for qa in conv.questions:
                    engine.embedder.embed_query(qa["question"])
        results = {side: recall(engines[side], conversations, ks) for side in SIDES}
        rows, cache_checks = time_searches(engines, conversations)
        checks.update(cache_checks)

    by_name = {r["name"]: r for r in rows}
    ratios: dict[str, float] = {
        "storage_path_best_turns_s_on_over_off": storage["best_ratio_on_over_off"]}
    if not end_to_end["skipped"]:
        ratios["end_to_end_turns_s_on_over_off"] = end_to_end["ratio_on_over_off"]
    for mode in MODES:
        for q in ("p50", "p95", "p99"):
            ratios[f"{mode}_{q}_on_over_off"] = ratio(by_name[f"{mode}_on"][f"{q}_ms"],
                                                      by_name[f"{mode}_off"][f"{q}_ms"])
    first = {side: memory[f"{side}_bytes_per_memory"][0] for side in SIDES}
    memory_out: dict[str, Any] = {**memory, "first_round": first}
    if first["off"] > 0:
        memory_out["first_round_on_over_off"] = ratio(first["on"], first["off"])
        ratios["memory_bytes_per_memory_on_over_off"] = memory_out["first_round_on_over_off"]
    deltas: dict[str, float] = {}
    by_category: dict[str, dict[str, float]] = {}
    for mode in MODES:
        for k in ks:
            off, on = (results[s][mode][f"recall@{k}"] for s in SIDES)
            deltas[f"{mode}@{k}"] = round(on["overall"] - off["overall"], 2)
            if k == 10:
                by_category[mode] = {c: round(on[c] - off[c], 2) for c in off if c in on}
    return {
        **provenance("encryption", versions),
        "params": {
            "data": str(args.data), "quick": bool(args.quick),
            "redis": "external" if args.redis_url else "embedded",
            "conversations": len(conversations), "turns": turns,
            "questions": sum(len(c.questions) for c in conversations),
            "k": ks, "search_k": SEARCH_K, "rounds": args.rounds, "modes": list(MODES),
            "embedder": model.name, "up_front_embedding_s": round(embed_s, 1),
            "searched_indexes": searched_on,
            "cipher": "AES-256-GCM per-user data keys; keyword search on a blind index "
                      "(HMAC-SHA256 digests of stemmed words in a TAG field)",
        },
        "ingest": {"storage_path": storage, "end_to_end": end_to_end},
        "memory": memory_out,
        "search": rows,
        "ratios": ratios,
        "recall": results,
        "recall_delta_points": deltas,
        "recall_delta_points_by_category@10": by_category,
        "checks": checks,
    }


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {r["name"]: r for r in report["search"]}
    modes = report["params"]["modes"]
    x = np.arange(len(modes))
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.2
    bars_spec = (("p50_ms", "off", "#4c72b0"), ("p50_ms", "on", "#8fb0e0"),
                 ("p99_ms", "off", "#dd8452"), ("p99_ms", "on", "#f0b890"))
    for i, (key, side, color) in enumerate(bars_spec):
        values = [rows[f"{m}_{side}"][key] for m in modes]
        bars = left.bar(x + (i - 1.5) * width, values, width, color=color,
                        label=f"{key.removesuffix('_ms')} {side}")
        left.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=7, padding=2)
    left.set_xticks(x, modes)
    left.set_ylabel("search latency (ms), query embedding excluded")
    left.set_title(f"search k={report['params']['search_k']}, encryption off vs on")
    left.legend(fontsize=8)
    left.margins(y=0.15)
    width = 0.38
    for i, (side, color) in enumerate((("off", "#4c72b0"), ("on", "#c44e52"))):
        values = [report["recall"][side][m]["recall@10"]["overall"] for m in modes]
        bars = right.bar(x + (i - 0.5) * width, values, width, color=color,
                         label=f"encryption {side}")
        right.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=8, padding=2)
    right.set_xticks(x, modes)
    right.set_ylim(0, 100)
    right.set_ylabel("LoCoMo evidence recall@10 (%)")
    right.set_title(f"recall@10, {report['params']['questions']} questions")
    right.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(report: dict[str, Any]) -> None:
    p = report["params"]
    print(f"\nencryption at rest: {p['turns']:,} LoCoMo turns, {p['conversations']} "
          f"conversations, {p['questions']} questions (commit {report['commit'][:10]}"
          f"{', dirty' if report['dirty'] else ''})")
    storage = report["ingest"]["storage_path"]
    print("\ningest, storage path (caller-given vectors), turns/s")
    print(f"{'round':>6} {'order':>8} {'off':>10} {'on':>10} {'on/off':>8}")
    for n, (order, off, on, r) in enumerate(zip(storage["order"], storage["off_turns_s"],
                                                storage["on_turns_s"],
                                                storage["ratio_on_over_off"], strict=True)):
        print(f"{n + 1:>6} {'/'.join(order):>8} {off:>10,.1f} {on:>10,.1f} {r:>8.3f}")
    print(f"{'best':>6} {'':>8} {storage['best_off_turns_s']:>10,.1f} "
          f"{storage['best_on_turns_s']:>10,.1f} {storage['best_ratio_on_over_off']:>8.3f}")
    e2e = report["ingest"]["end_to_end"]
    if e2e["skipped"]:
        print(f"\ningest, end to end: skipped ({e2e['reason']})")
    else:
        print(f"\ningest, end to end (the model embeds): off {e2e['off_turns_s']:,.1f} turns/s, "
              f"on {e2e['on_turns_s']:,.1f} turns/s, on/off {e2e['ratio_on_over_off']:.3f}")
    mem = report["memory"]
    print("\nRedis used_memory growth per memory (B), per round: off "
          + ", ".join(f"{v:,}" for v in mem["off_bytes_per_memory"]) + "; on "
          + ", ".join(f"{v:,}" for v in mem["on_bytes_per_memory"])
          + (f"; first round on/off {mem['first_round_on_over_off']:.3f}"
             if "first_round_on_over_off" in mem else ""))
    print(f"\nsearch latency (ms, k={p['search_k']}, query embedding excluded)")
    print(f"{'':12} {'p50':>8} {'p95':>8} {'p99':>8} {'mean':>8} {'qps':>8} {'hits':>6}")
    for r in report["search"]:
        print(f"{r['name']:12} {r['p50_ms']:8.2f} {r['p95_ms']:8.2f} {r['p99_ms']:8.2f} "
              f"{r['mean_ms']:8.2f} {r['qps']:8.1f} {r['mean_hits']:6.2f}")
    cats = ["overall", *CATEGORIES.values()]
    for k in p["k"]:
        print(f"\nrecall@{k:<4}    " + " ".join(f"{c:>12}" for c in cats))
        for mode in p["modes"]:
            rows = {s: report["recall"][s][mode][f"recall@{k}"] for s in SIDES}
            for side in SIDES:
                print(f"{mode + ' ' + side:15} "
                      + " ".join(f"{rows[side].get(c, float('nan')):12.2f}" for c in cats))
            print(f"{mode + ' delta':15} " + " ".join(
                f"{rows['on'].get(c, float('nan')) - rows['off'].get(c, float('nan')):+12.2f}"
                for c in cats))
    print("\nratios (on / off)")
    for name, value in report["ratios"].items():
        print(f"  {name:42}{value:>8.3f}")
    print("\nrecall delta, on minus off (points): " + ", ".join(
        f"{name} {value:+.2f}" for name, value in report["recall_delta_points"].items()))
    c = report["checks"]
    print(f"\nchecks: query cache misses while timed: off {c['query_cache_misses_off']}, "
          f"on {c['query_cache_misses_on']}; stored texts readable: off "
          f"{c['off']['text_values_in_plaintext']}/{c['off']['memories']}, on "
          f"{c['on']['text_values_in_plaintext']}/{c['on']['memories']}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=LOCOMO_DEV,
                        help=f"LoCoMo JSON file (default: {LOCOMO_DEV})")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run: the first conversation, {QUICK_QUESTIONS} of its "
                             "questions, no end-to-end ingest")
    parser.add_argument("--out", type=Path, help="result JSON; the PNG is written next to it")
    parser.add_argument("--redis-url", help="default: a private embedded server")
    parser.add_argument("--k", type=int, nargs="+", default=[5, 10, 25, 50],
                        help="recall@k cut-offs (default 5 10 25 50; 10 is always added)")
    parser.add_argument("--rounds", type=int, default=2,
                        help="storage-path ingest rounds per side (default 2)")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if any(k < 1 for k in args.k):
        parser.error("--k values must be at least 1")
    args.k = sorted({*args.k, 10})  # the headline is recall@10
    if args.out is None:
        args.out = RESULTS_DIR / ("encryption_quick.json" if args.quick else "encryption.json")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    save_report(run(args), args.out, plot, print_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
