"""``memory-engine demo``: ingest a bundled two-user conversation, recall, prove isolation."""

from __future__ import annotations

import json
import statistics
import time
from datetime import datetime
from importlib.resources import files
from typing import IO, Any

from tqdm import tqdm

from .engine import MemoryEngine
from .models import NewMemory, SearchMode


def load_conversation() -> dict[str, Any]:
    """The demo conversation shipped with the package."""
    text = files("memory_engine").joinpath("data/demo_conversation.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


def _items(user: dict[str, Any], name: str) -> list[NewMemory]:
    items = []
    for session in user["sessions"]:
        start = datetime.fromisoformat(session["date"]).timestamp()
        for i, (role, text) in enumerate(session["turns"]):
            items.append(NewMemory(
                text=text, session_id=session["id"], role=role,
                name=name.title() if role == "user" else "assistant",
                created_at=start + 60 * i, metadata={"turn": i},
            ))
    return items


def run_demo(engine: MemoryEngine, out: IO[str], *, k: int = 3) -> dict[str, Any]:
    """Run the demo on ``engine``; print to ``out``. Returns the measured numbers.

    Raises:
        AssertionError: never, unless isolation is broken, which the demo reports loudly.
    """
    data = load_conversation()
    users: dict[str, Any] = data["users"]
    print(f"memory-engine demo: Redis at {engine.url or 'the embedded server'}", file=out)
    t0 = time.perf_counter()
    engine.connect()
    print(f"connected and model loaded in {time.perf_counter() - t0:.1f}s", file=out)
    for name in users:
        engine.forget_user(name)  # the demo is repeatable: start from nothing

    items = {name: _items(user, name) for name, user in users.items()}
    total = sum(len(v) for v in items.values())
    t0 = time.perf_counter()
    with tqdm(total=total, desc="ingesting", unit="turn", file=out) as bar:
        for name, user_items in items.items():
            for memory in user_items:  # one at a time, as a live chat would write them
                engine.add_many(name, [memory])
                bar.update(1)
    ingest_s = time.perf_counter() - t0
    print(f"stored {total} turns for {len(users)} users in {ingest_s:.2f}s "
          f"({total / ingest_s:.0f} turns/s, embedding included)", file=out)

    cold: list[float] = []
    warm: list[float] = []
    for name, user in users.items():
        print(f"\n== {name}: {engine.count(name)} memories", file=out)
        for query in user["queries"]:
            t = time.perf_counter()
            hits = engine.search(name, query, k=k)
            cold.append((time.perf_counter() - t) * 1000)
            t = time.perf_counter()
            engine.search(name, query, k=k)
            warm.append((time.perf_counter() - t) * 1000)
            print(f"\n? {query}   [{cold[-1]:.1f} ms with query embedding, "
                  f"{warm[-1]:.2f} ms cached]", file=out)
            for hit in hits:
                m = hit.memory
                print(f"  {hit.score:.3f}  [{m.session_id}] {m.name}: {m.text}", file=out)

    print("\n== isolation: each user searches for the other's facts", file=out)
    leaks = 0
    for name, probes in data["isolation_probes"].items():
        for probe in probes:
            for mode in (SearchMode.VECTOR, SearchMode.KEYWORD):
                hits = engine.search(name, probe, k=10, mode=mode)
                foreign = [h for h in hits if h.memory.user_id != name]
                leaks += len(foreign)
                if not hits:
                    seen = "no hits"
                elif foreign:
                    seen = f"{len(hits)} hits -- LEAK: {len(foreign)} of another user!"
                else:
                    best = hits[0].memory.text[:40]
                    seen = f"{len(hits)} hits, all {name}'s own (best: {best}...)"
                print(f"  {name:4} {mode.value:7} {probe!r}: {seen}", file=out)
    verdict = "no memory crossed users" if leaks == 0 else f"{leaks} MEMORIES LEAKED"
    print(f"  -> {verdict}", file=out)

    summary = {
        "turns": total,
        "ingest_turns_per_s": total / ingest_s,
        "search_p50_ms": statistics.median(cold),
        "search_max_ms": max(cold),
        "cached_p50_ms": statistics.median(warm),
        "leaks": leaks,
    }
    print(f"\nrecall latency over {len(cold)} queries: p50 {summary['search_p50_ms']:.1f} ms "
          f"(max {summary['search_max_ms']:.1f} ms) including query embedding; "
          f"p50 {summary['cached_p50_ms']:.2f} ms with the query embedding cached", file=out)
    if leaks:
        raise AssertionError(f"isolation broken: {leaks} foreign memories returned")
    return summary
