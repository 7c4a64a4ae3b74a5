"""Memory kept against recall kept: maintenance on LoCoMo at several budgets.

Every turn of ``--data`` goes in as ``benchmarks/locomo_recall.py`` writes it (one user per
conversation, through ``add_many``). Then, for each point, maintenance runs with ``now`` far
after the last session (``--age-days`` after it, so every turn is stale), and each question
is asked with the default hybrid ``search(k=10)``. Evidence recall@10 counts a summary as
covering the evidence turns it replaced. The baseline is the same search before any
maintenance, in the same run. Each point starts from a copy of the ingested turns (their
stored hashes, vectors included) in an index of its own, so no point sees the HNSW graph or
BM25 statistics another point churned. At the last point every change is then undone
(``undo``): the script checks that every turn came back and reports recall after it.

Points: consolidation alone (no budget), then per-user budgets of ``--budgets`` x the
user's turns with consolidation, then the same budgets with consolidation off (pruning
alone), for each summarizer of ``--summarizers``. ``llm`` runs the LLM summarizer through the
real ``ChatOpenAI`` client against the local OpenAI-compatible test server
(``tests/openai_server.py``), which answers with the dated transcript it was sent: it shows
the wiring, not an LLM's quality.

Run::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/lifecycle.py \\
        --data ../shared/data/locomo_dev.json --out benchmarks/results/lifecycle.json
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import statistics
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import redis
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests/openai_server.py
from _common import (
    LOCOMO_DEV,
    RESULTS_DIR,
    drop_prefix,
    open_redis,
    provenance,
    save_report,
    server_versions,
)
from locomo_recall import CATEGORIES, Conversation, load

from memory_engine import Embedder, EngineConfig, MemoryEngine
from memory_engine.lifecycle import LifecyclePolicy, Summarizer
from memory_engine.models import Kind

K = 10
DAY = 86_400.0
QUICK_QUESTIONS = 60


@dataclasses.dataclass
class Corpus:
    """The ingested conversations, and which LoCoMo turn each stored memory id is."""

    conversations: list[Conversation]
    dia_of: dict[str, str]
    turns: int


def ingest(engine: MemoryEngine, conversations: list[Conversation]) -> Corpus:
    dia_of: dict[str, str] = {}
    for conv in tqdm(conversations, desc="ingesting", unit="conversation", file=sys.stderr):
        engine.forget_user(conv.user)
        for memory in engine.add_many(conv.user, conv.items):
            dia_of[memory.id] = str(memory.metadata["dia_id"])
    return Corpus(conversations, dia_of, len(dia_of))


def covered(engine: MemoryEngine, corpus: Corpus, user: str, question: str,
            now: float) -> list[set[str]]:
    """The LoCoMo turns each of the top-K hits stands for: a turn itself, or every turn a
    summary replaced."""
    out = []
    for hit in engine.search(user, question, k=K, now=now):
        m = hit.memory
        if m.kind is Kind.SUMMARY:
            out.append({corpus.dia_of[i] for i in m.replaces if i in corpus.dia_of})
        else:
            out.append({str(m.metadata.get("dia_id"))})
    return out


def recall_at_k(engine: MemoryEngine, corpus: Corpus, now: float | None) -> dict[str, float]:
    """Evidence recall@K in percent, overall and per category (as locomo_recall.py counts:
    evidence ids matching no turn are skipped; a question left without evidence counts 1)."""
    by_category: dict[str, list[float]] = {}
    for conv in corpus.conversations:
        when = conv.now if now is None else now
        for qa in conv.questions:
            wanted = {str(e) for e in qa.get("evidence", [])} & conv.dia_ids
            found: set[str] = set().union(*covered(engine, corpus, conv.user, qa["question"], when))
            recall = len(wanted & found) / len(wanted) if wanted else 1.0
            category = CATEGORIES.get(qa.get("category", 0), "other")
            by_category.setdefault(category, []).append(recall)
    every = [r for values in by_category.values() for r in values]
    out = {"overall": round(100 * statistics.fmean(every), 2)}
    out |= {c: round(100 * statistics.fmean(v), 2) for c, v in by_category.items()}
    return out


@dataclasses.dataclass(frozen=True)
class Point:
    summarizer: str
    budget_fraction: float | None
    consolidate: bool

    @property
    def label(self) -> str:
        budget = "no budget" if self.budget_fraction is None else f"budget {self.budget_fraction:g}"
        how = "consolidate" if self.consolidate else "prune only"
        return f"{self.summarizer}: {how}, {budget}"


def points(args: argparse.Namespace) -> Iterator[Point]:
    for name in args.summarizers:
        yield Point(name, None, True)
        for fraction in args.budgets:
            yield Point(name, fraction, True)
    for fraction in args.budgets:  # pruning alone needs no summarizer: run once
        yield Point("none", fraction, False)


Snapshot = list[tuple[str, dict[bytes, bytes]]]  # (key without the prefix, hash)


def snapshot(client: redis.Redis, prefix: str) -> Snapshot:
    """Every memory hash and session-tails hash under ``prefix``, as stored."""
    out: Snapshot = []
    for pattern in (f"{prefix}:mem:*", f"{prefix}:tail:*"):
        for key in client.scan_iter(match=pattern, count=1000):
            out.append((key.decode()[len(prefix):], client.hgetall(key)))
    return out


def copy_of(
    stack: contextlib.ExitStack, client: redis.Redis, config: EngineConfig, saved: Snapshot,
    embedder: Embedder, summarizer: Summarizer | None,
) -> MemoryEngine:
    """A new index holding ``saved`` (its own name and prefix), and an engine on it."""
    name = f"{config.index_name}_{uuid.uuid4().hex[:6]}"
    copy = config.with_(index_name=name, key_prefix=name)
    stack.callback(drop_prefix, client, copy)
    engine = stack.enter_context(MemoryEngine(copy, embedder=embedder, summarizer=summarizer))
    engine.connect()  # the index exists before the hashes: they are indexed as written
    pipe = client.pipeline(transaction=False)
    for key, fields in saved:
        pipe.hset(name + key, mapping=fields)  # type: ignore[arg-type]
    pipe.execute()
    return engine


def run_point(
    engine: MemoryEngine, corpus: Corpus, point: Point, base: LifecyclePolicy, now: float,
    *, undo: bool,
) -> dict[str, Any]:
    """Maintain every user under ``point`` and measure; with ``undo``, revert every change
    and measure again."""
    t = time.perf_counter()
    changes: list[tuple[str, str]] = []
    totals = {"expired": 0, "pruned": 0, "consolidated": 0, "summaries": 0}
    for conv in tqdm(corpus.conversations, desc=point.label, unit="user", file=sys.stderr):
        budget = None
        if point.budget_fraction is not None:
            budget = max(1, math.floor(point.budget_fraction * len(conv.items)))
        policy = dataclasses.replace(base, budget=budget, consolidate=point.consolidate)
        report = engine.maintain(conv.user, now=now, policy=policy)
        for user in report.users:
            changes += [(user.user_id, c) for c in user.changes]
            for name in totals:
                totals[name] += getattr(user, name)
    maintain_s = time.perf_counter() - t
    kept = sum(engine.count(c.user) for c in corpus.conversations)
    recall = recall_at_k(engine, corpus, now)
    result = {
        "label": point.label, "summarizer": point.summarizer,
        "budget_fraction": point.budget_fraction, "consolidate": point.consolidate,
        "kept": kept, "kept_fraction": round(kept / corpus.turns, 4),
        f"recall@{K}": recall["overall"], "recall_by_category": recall, **totals,
        "changes": len(changes), "maintain_s": round(maintain_s, 1),
    }
    if undo:
        for user, change in tqdm(changes, desc="undo", unit="change", file=sys.stderr):
            engine.undo(user, change)
        restored = sum(engine.count(c.user) for c in corpus.conversations)
        if restored != corpus.turns:
            raise SystemExit(f"undo restored {restored} memories, not the {corpus.turns} turns")
        result["after_undo"] = {"memories": restored,
                                f"recall@{K}": recall_at_k(engine, corpus, None)["overall"]}
    return result


def summarizer_for(name: str, stack: contextlib.ExitStack) -> Summarizer | None:
    """The summarizer called ``name``; None for the engine's default (extractive)."""
    if name == "extractive":
        return None  # the engine's default
    from langchain_openai import ChatOpenAI
    from pydantic import SecretStr

    from memory_engine.langchain import LLMSummarizer
    from tests.openai_server import FakeOpenAIServer, message_text

    server = stack.enter_context(FakeOpenAIServer(
        reply=lambda body: message_text(body["messages"][-1])))
    return LLMSummarizer(ChatOpenAI(model="fake-model", base_url=server.base_url,
                                    api_key=SecretStr("test"), max_retries=0))


def run(args: argparse.Namespace) -> dict[str, Any]:
    conversations = load(args.data)[: args.limit]
    if args.quick:
        for conv in conversations:
            conv.questions = conv.questions[:QUICK_QUESTIONS]
    base = EngineConfig.from_env().lifecycle
    with contextlib.ExitStack() as stack:
        url, client = open_redis(stack, args.redis_url)
        name = f"lifecycle{datetime.now(UTC).strftime('%H%M%S')}"
        # Questions must not count as recalls: a memory a question found would be fresh at
        # the next point and escape maintenance.
        config = EngineConfig.from_env(redis_url=url, index_name=name, key_prefix=name,
                                       record_access=False)
        stack.callback(drop_prefix, client, config)
        engine = stack.enter_context(MemoryEngine(config))
        t = time.perf_counter()
        corpus = ingest(engine, conversations)
        ingest_s = time.perf_counter() - t
        now = max(c.now for c in conversations) + args.age_days * DAY
        baseline = recall_at_k(engine, corpus, None)
        saved = snapshot(client, config.key_prefix)
        summarizers = {name: summarizer_for(name, stack) for name in args.summarizers}
        todo = list(points(args))
        results = []
        for i, point in enumerate(todo):
            with contextlib.ExitStack() as scratch:
                copy = copy_of(scratch, client, config, saved, engine.embedder,
                               summarizers.get(point.summarizer))
                results.append(run_point(copy, corpus, point, base, now,
                                         undo=i == len(todo) - 1))
        report = {
            **provenance("lifecycle", server_versions(client)),
            "timestamp": datetime.now(UTC).isoformat(),
            "params": {
                "data": str(args.data), "conversations": len(conversations),
                "turns": corpus.turns,
                "questions": sum(len(c.questions) for c in conversations),
                "k": K, "age_days": args.age_days, "budgets": args.budgets,
                "quick": args.quick,
                "summarizers": args.summarizers, "ingest_s": round(ingest_s, 1),
                "policy": {f.name: str(getattr(base, f.name)) for f in dataclasses.fields(base)},
            },
            f"baseline_recall@{K}": baseline["overall"],
            "baseline_by_category": baseline,
            "points": results,
        }
    return report


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    base = report[f"baseline_recall@{K}"]
    ax.axhline(base, color="grey", linestyle="--", label=f"no maintenance ({base:.1f})")
    ax.axhline(0.9 * base, color="grey", linestyle=":", label="90% of it")
    series: dict[str, list[dict[str, Any]]] = {}
    for p in report["points"]:
        key = "prune only" if not p["consolidate"] else f"{p['summarizer']} summaries"
        series.setdefault(key, []).append(p)
    for key, pts in series.items():
        pts = sorted(pts, key=lambda p: p["kept_fraction"])
        ax.plot([100 * p["kept_fraction"] for p in pts], [p[f"recall@{K}"] for p in pts],
                marker="o", label=key)
    ax.axvline(30, color="red", alpha=0.3, label="30% kept")
    ax.set_xlabel("memories kept (% of turns)")
    ax.set_ylabel(f"evidence recall@{K} (%)")
    ax.set_title(f"LoCoMo: maintenance at several budgets ({report['params']['turns']} turns)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_table(report: dict[str, Any]) -> None:
    base = report[f"baseline_recall@{K}"]
    print(f"\nLoCoMo evidence recall@{K}: {base:.2f} with no maintenance "
          f"({report['params']['turns']} turns)")
    print(f"{'point':44} {'kept':>6} {'kept %':>7} {'R@10':>6} {'of base':>8} {'summaries':>9}")
    for p in report["points"]:
        print(f"{p['label']:44} {p['kept']:6d} {100 * p['kept_fraction']:6.1f}% "
              f"{p[f'recall@{K}']:6.2f} {100 * p[f'recall@{K}'] / base:7.1f}% "
              f"{p['summaries']:9d}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=LOCOMO_DEV,
                        help=f"LoCoMo JSON file (default: {LOCOMO_DEV})")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "lifecycle.json")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 0.3, 0.2, 0.1],
                        help="per-user budgets as fractions of the user's turns")
    parser.add_argument("--summarizers", nargs="+", choices=["extractive", "llm"],
                        default=["extractive", "llm"])
    parser.add_argument("--age-days", type=float, default=365.0,
                        help="maintenance runs this many days after the last session")
    parser.add_argument("--redis-url", help="default: a private embedded server")
    parser.add_argument("--limit", type=int, help="only the first N conversations (smoke runs)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a smoke run: one conversation, its first {QUICK_QUESTIONS} "
                             "questions, budget 0.3")
    args = parser.parse_args(argv)
    if args.quick:
        args.limit, args.budgets = 1, [0.3]
    for fraction in args.budgets:
        if not 0 < fraction <= 1:
            parser.error(f"budgets are fractions in (0, 1]; got {fraction}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    save_report(run(args), args.out, plot, print_table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
