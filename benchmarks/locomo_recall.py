"""Evidence recall on LoCoMo: does search find the turns that answer each question?

For each conversation of ``--data`` (LoCoMo format, see ``../shared/data/README.md``) the
conversation's ``sample_id`` is one user. Every turn goes in through the public ``add_many``,
exactly as a chat application would write it:

* ``text``: the turn text, plus ``" [shares <blip_caption>]"`` when an image was shared;
* ``name``: the speaker; ``role``: ``user`` for speaker_a, ``assistant`` for speaker_b;
* ``session_id``: ``session_N``; ``created_at``: the session's date and time (UTC);
* ``metadata``: ``{"dia_id": ...}``.

Then every question is asked with ``search(user, question, k=max(--k), now=<last session + 1
day>)`` in each mode, with the default configuration. Evidence recall@k of a question is the
fraction of its evidence turns among the top k hits; evidence ids that match no turn are
skipped, and a question left without evidence counts as recall 1 (as the LoCoMo reference code
does). Reported overall and per category, in percent.

Modes: ``keyword`` (BM25), ``vector`` (HNSW), ``hybrid`` (the default search) and
``hybrid+decay`` (hybrid with ``decay_weight=--decay-weight``; it runs first, on its own fresh
index, and each recall is flushed before the next question, so recall reinforcement applies in
question order, deterministically).

Run::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/locomo_recall.py \\
        --data ../shared/data/locomo_dev.json --out benchmarks/results/locomo_recall.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    RESULTS_DIR,
    drop_index,
    git_state,
    machine_info,
    open_redis,
    write_json,
)

from memory_engine import EngineConfig, MemoryEngine, NewMemory

CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
MODES = ("keyword", "vector", "hybrid", "hybrid+decay")
DAY = 86_400.0

# Published evidence recall (turn level) of the LoCoMo paper's DRAGON retriever, for reference.
DRAGON = {"recall@5": 56.7, "recall@10": 66.2, "recall@25": 76.7, "recall@50": 82.7}


@dataclass
class Conversation:
    user: str
    items: list[NewMemory]
    dia_ids: set[str]
    questions: list[dict[str, Any]]
    now: float


@dataclass
class Scores:
    by_category: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    latencies_ms: list[float] = field(default_factory=list)


def parse_when(text: str) -> float:
    """'1:56 pm on 8 May, 2023' as epoch seconds (UTC)."""
    when = datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y")
    return when.replace(tzinfo=UTC).timestamp()


def load(path: Path) -> list[Conversation]:
    conversations = []
    for sample in json.loads(path.read_text()):
        conv = sample["conversation"]
        speaker_a = conv["speaker_a"]
        items: list[NewMemory] = []
        last = 0.0
        sessions = sorted(
            (int(key.split("_")[1]) for key in conv if key.startswith("session_")
             and not key.endswith("date_time")),
        )
        for n in sessions:
            turns = conv.get(f"session_{n}") or []
            if not turns:
                continue
            start = parse_when(conv[f"session_{n}_date_time"])
            last = max(last, start)
            for turn in turns:
                text = turn["text"]
                if turn.get("blip_caption"):
                    text += f" [shares {turn['blip_caption']}]"
                items.append(NewMemory(
                    text=text, name=turn["speaker"],
                    role="user" if turn["speaker"] == speaker_a else "assistant",
                    session_id=f"session_{n}", created_at=start,
                    metadata={"dia_id": turn["dia_id"]},
                ))
        conversations.append(Conversation(
            user=sample["sample_id"], items=items,
            dia_ids={str(i.metadata["dia_id"]) for i in items},
            questions=sample["qa"], now=last + DAY,
        ))
    return conversations


def evidence_recall(
    evidence: Sequence[str], ranked: Sequence[str], k: int, valid: set[str]
) -> float:
    wanted = {e for e in evidence if e in valid}
    if not wanted:
        return 1.0
    return len(wanted & set(ranked[:k])) / len(wanted)


def run_mode(
    engine: MemoryEngine, conversations: list[Conversation], mode: str, ks: Sequence[int],
    decay_weight: float,
) -> dict[int, Scores]:
    scores = {k: Scores() for k in ks}
    depth = max(ks)
    total = sum(len(c.questions) for c in conversations)
    with tqdm(total=total, desc=f"{mode:12}", unit="q", file=sys.stderr) as bar:
        for conv in conversations:
            for qa in conv.questions:
                kwargs: dict[str, Any] = {"mode": "hybrid" if mode.startswith("hybrid") else mode}
                if mode == "hybrid+decay":
                    kwargs["decay_weight"] = decay_weight
                t = time.perf_counter()
                hits = engine.search(conv.user, qa["question"], k=depth, now=conv.now, **kwargs)
                elapsed = (time.perf_counter() - t) * 1000
                if mode == "hybrid+decay":
                    engine.flush()  # recall reinforcement lands before the next question
                ranked = [str(h.metadata.get("dia_id")) for h in hits]
                category = CATEGORIES.get(qa.get("category", 0), "other")
                evidence = [str(e) for e in qa.get("evidence", [])]
                for k in ks:
                    recall = evidence_recall(evidence, ranked, k, conv.dia_ids)
                    scores[k].by_category[category].append(recall)
                    scores[k].latencies_ms.append(elapsed)
                bar.update(1)
    return scores


def summarise(scores: dict[int, Scores]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, s in scores.items():
        every = [r for values in s.by_category.values() for r in values]
        row = {"overall": round(100 * statistics.fmean(every), 2)}
        for name in CATEGORIES.values():
            if s.by_category.get(name):
                row[name] = round(100 * statistics.fmean(s.by_category[name]), 2)
        out[f"recall@{k}"] = row
    latencies = next(iter(scores.values())).latencies_ms
    out["search_ms"] = {
        "p50": round(statistics.median(latencies), 3),
        "p99": round(statistics.quantiles(latencies, n=100)[98], 3),
    }
    return out


def ingest(engine: MemoryEngine, conversations: list[Conversation]) -> float:
    t = time.perf_counter()
    for conv in tqdm(conversations, desc="ingesting", unit="conversation", file=sys.stderr):
        engine.forget_user(conv.user)
        engine.add_many(conv.user, conv.items)
    return time.perf_counter() - t


def print_table(report: dict[str, Any], ks: Sequence[int]) -> None:
    cats = ["overall", *CATEGORIES.values()]
    print(f"\nLoCoMo evidence recall (%), {report['params']['questions']} questions, "
          f"{report['params']['turns']} turns")
    for k in ks:
        print(f"\nrecall@{k:<3} " + " ".join(f"{c:>12}" for c in cats))
        for mode, result in report["modes"].items():
            row = result[f"recall@{k}"]
            print(f"{mode:12} " + " ".join(f"{row.get(c, float('nan')):12.1f}" for c in cats))
        if f"recall@{k}" in DRAGON:
            print(f"{'DRAGON':12} {DRAGON[f'recall@{k}']:12.1f}   (LoCoMo paper, overall)")
    print("\nsearch latency (ms, embedding included): " + ", ".join(
        f"{m} p50 {r['search_ms']['p50']:.1f} / p99 {r['search_ms']['p99']:.1f}"
        for m, r in report["modes"].items()))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="LoCoMo JSON file")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "locomo_recall.json")
    parser.add_argument("--k", type=int, nargs="+", default=[5, 10, 25, 50])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--decay-weight", type=float, default=0.5,
                        help="decay_weight of the hybrid+decay mode (default 0.5)")
    parser.add_argument("--redis-url", help="default: a private embedded server")
    parser.add_argument("--limit", type=int, help="only the first N conversations (smoke runs)")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> dict[str, Any]:
    conversations = load(args.data)[: args.limit]
    ks = sorted(set(args.k))
    report: dict[str, Any] = {"benchmark": "locomo_recall", "modes": {}}
    with contextlib.ExitStack() as stack:
        url, client = open_redis(stack, args.redis_url)
        ingest_s = 0.0
        modes = [m for m in MODES if m in args.modes]
        # hybrid+decay records recalls, so it gets an index of its own, used first.
        groups = [[m] for m in modes if m == "hybrid+decay"] + [
            [m for m in modes if m != "hybrid+decay"]]
        embedder = None
        for group in [g for g in groups if g]:
            name = f"locomo{uuid.uuid4().hex[:8]}"
            config = EngineConfig.from_env(redis_url=url, index_name=name, key_prefix=name)
            stack.callback(drop_index, client, config)
            engine = stack.enter_context(MemoryEngine(config, embedder=embedder))
            embedder = engine.embedder.inner  # load the model once
            ingest_s += ingest(engine, conversations)
            for mode in group:
                scores = run_mode(engine, conversations, mode, ks, args.decay_weight)
                report["modes"][mode] = summarise(scores)
        commit, dirty = git_state()
        report["params"] = {
            "data": str(args.data), "k": ks, "conversations": len(conversations),
            "turns": sum(len(c.items) for c in conversations),
            "questions": sum(len(c.questions) for c in conversations),
            "decay_weight_of_hybrid+decay": args.decay_weight,
            "config": {key: (str(v) if isinstance(v, Path) else v)
                       for key, v in vars_of(EngineConfig.from_env(redis_url=url)).items()
                       if key not in ("redis_url", "home", "lifecycle")},
            "embedder": engine.embedder.name,
            "ingest_s": round(ingest_s, 1),
        }
        report.update(commit=commit, dirty=dirty, machine=machine_info(),
                      timestamp=datetime.now(UTC).isoformat(), reference_dragon=DRAGON)
    return report


def vars_of(config: EngineConfig) -> dict[str, Any]:
    return {name: getattr(config, name) for name in config.__dataclass_fields__}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    write_json(report, args.out)
    print_table(report, sorted(set(args.k)))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
