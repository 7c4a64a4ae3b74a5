"""Latency of ``MemoryChatMessageHistory.add_message``, with and without long-term memory.

What it measures, in one run against one index, each over the same list of chat messages
(alternating human / AI turns of 5 to 60 words, in several sessions over a couple of users),
after a warmup, one client, ``time.perf_counter`` around every call:

* ``add_message_remember_off`` - ``add_message`` on a history with ``remember=False``: the
  message is stored in the session's history (one Lua script, one round trip) and nothing
  else. The floor.
* ``add_message_remember_on`` - ``add_message`` with ``remember=True`` (the default): the
  same history write, plus the turn validated and queued with ``engine.add_later``. A
  background thread embeds the queued turns in batches and writes them to long-term memory,
  so the caller should not pay for the model (it shares the CPU and the GIL with that thread
  while it runs, which this measures too).
* ``add_message_sync_embed`` - the baseline that ``add_later`` avoids: the history write
  (``remember=False``) followed by ``engine.add(...)`` of the same turn on the caller's path
  (embedding with its context turns, then the write), as a synchronous implementation would.
* ``embed_one`` - the bundled all-MiniLM-L6-v2 embedding one turn's text alone
  (``embed_documents([text])``), for reference.

Each gets p50 / p95 / p99 / mean / max latency in ms and messages/s (calls / wall time of the
timed loop). The ratios of remember_on to remember_off p50 (what queueing costs the caller)
and of sync_embed to remember_on p50 (what the background writer saves it) are reported.

The background work is reported too: how long ``engine.flush()`` took right after the timed
remember_on loop (the queue the caller did not wait for), and whether the users' long-term
memory then holds exactly one memory per human / AI message added with remember on
(``long_term_written`` == ``expected``; the script exits non-zero when they differ).

Each measurement uses its own users (``off-user-0``, ``on-user-0``, ...) so histories and
long-term memories do not mix; sessions run one after another (each a whole conversation),
session ``i`` belonging to user ``i % users``. Warmup messages go to a separate warmup user;
the queue is flushed before timing. Texts are reproducible (``--seed``).

Run (from the repository root)::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/chat_history.py --quick
    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/chat_history.py           # 2,000 messages
    .venv/bin/python benchmarks/chat_history.py --redis-url redis://localhost:6379/0

Without ``--redis-url`` a private embedded server is started in a temporary data directory
and stopped at the end. Either way the benchmark writes to its own index and key prefix and
drops them (``FT.DROPINDEX ... DD``, then the prefix's remaining history keys) when done.
Results go to ``benchmarks/results/chat_history.json`` (``chat_history_quick.json`` with
``--quick``), with a PNG chart of the same name, and a table on stdout.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from memory_engine import MemoryEngine
from memory_engine.langchain import MemoryChatMessageHistory
from memory_engine.models import Kind, Role

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (
    Measurement,
    add_common_arguments,
    add_size_arguments,
    apply_defaults,
    common_params,
    drop_prefix,
    open_redis,
    plot_latency_bars,
    print_ratios,
    provenance,
    save_report,
    scratch_engine,
    server_versions,
    timed,
)

FULL = {"messages": 2_000, "sessions": 20, "users": 2, "warmup": 50}
QUICK = {"messages": 200, "sessions": 6, "users": 2, "warmup": 20}

MIN_WORDS, MAX_WORDS = 5, 60
MODES = ("remember_off", "remember_on", "sync_embed")
ORDER = ("add_message_remember_off", "add_message_remember_on", "add_message_sync_embed",
         "embed_one")

# --- Synthetic conversation --------------------------------------------------------------

TOPICS = (
    "cooking", "hiking", "photography", "gardening", "chess", "jazz", "running", "painting",
    "astronomy", "baking", "cycling", "fishing", "sailing", "travel", "climbing", "poetry",
)
NOUNS = (
    "recipe", "trail", "camera", "tomato plants", "opening", "album", "marathon", "canvas",
    "telescope", "sourdough", "bike", "boat", "tent", "lens", "guitar", "playlist", "map",
    "ticket", "backpack", "oven", "book", "workshop", "festival", "concert", "museum",
    "apartment", "neighbor", "sister", "coach", "flight", "train", "budget", "schedule",
)
ADJECTIVES = (
    "old", "new", "favorite", "cheap", "expensive", "small", "quiet", "vintage", "modern",
    "heavy", "broken", "wooden", "spicy", "local", "rare", "simple", "borrowed", "handmade",
)
PLACES = (
    "Lisbon", "Porto", "Berlin", "Madrid", "Kyoto", "Oslo", "Dublin", "Vienna", "Prague",
    "Seattle", "Toronto", "Sydney", "the coast", "the village", "the office", "the park",
)
TIMES = (
    "yesterday", "last week", "last month", "on Monday", "on Friday", "this morning",
    "tonight", "in March", "in July", "over the weekend", "two days ago", "after work",
)
HUMAN_SENTENCES = (
    "I {verb} the {adj} {noun} {time}.",
    "Can you help me plan something for {topic} in {place}?",
    "My {noun} from {place} is {adj}, what should I do about it?",
    "Do you remember what I said about the {noun}?",
    "I am thinking about {topic} again, maybe {time}.",
    "We went to {place} {time} and it was great for {topic}.",
    "What do you think about a {adj} {noun} for {topic}?",
    "Also, my {noun} needs fixing before we leave for {place}.",
    "Honestly I prefer {topic} to anything else right now.",
)
AI_SENTENCES = (
    "That sounds like a good plan for {topic}.",
    "You mentioned the {adj} {noun} {time}, so I would start there.",
    "In {place} there are several options for {topic} worth trying.",
    "A {adj} {noun} usually works well if you keep it simple.",
    "I would check the {noun} first and then decide about {place}.",
    "Here is a short list: the {noun}, the schedule, and a backup for {topic}.",
    "If the {noun} is {adj}, it may be cheaper to replace it than to repair it.",
    "Let me know how {topic} goes {time}, and we can adjust the plan.",
    "Many people who enjoy {topic} also like visiting {place}.",
)
VERBS = (
    "bought", "borrowed", "lost", "found", "fixed", "sold", "cooked", "painted", "booked",
    "cancelled", "tried", "packed", "planned", "repaired", "rented", "watched", "read",
)


def _pick(rng: np.random.Generator, words: Sequence[str]) -> str:
    return words[int(rng.integers(len(words)))]


def sentence(rng: np.random.Generator, templates: Sequence[str]) -> str:
    return _pick(rng, templates).format(
        verb=_pick(rng, VERBS), adj=_pick(rng, ADJECTIVES), noun=_pick(rng, NOUNS),
        topic=_pick(rng, TOPICS), place=_pick(rng, PLACES), time=_pick(rng, TIMES),
    )


def message_text(rng: np.random.Generator, human: bool) -> str:
    """Whole sentences until at least a drawn length (5 to 60 words), cut to that length."""
    target = int(rng.integers(MIN_WORDS, MAX_WORDS + 1))
    templates = HUMAN_SENTENCES if human else AI_SENTENCES
    words: list[str] = []
    while len(words) < target:
        words.extend(sentence(rng, templates).split())
    text = " ".join(words[:target])
    return text if text[-1] in ".?!" else text.rstrip(",;:") + "."


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of the script: which session, who speaks, what."""

    session: int
    human: bool
    text: str

    @property
    def role(self) -> Role:
        return Role.USER if self.human else Role.ASSISTANT

    def message(self) -> BaseMessage:
        return HumanMessage(content=self.text) if self.human else AIMessage(content=self.text)


def conversation(rng: np.random.Generator, messages: int, sessions: int) -> list[Turn]:
    """``messages`` turns in ``sessions`` sessions run one after another; every session
    alternates human / AI, starting with the human."""
    per, extra = divmod(messages, sessions)
    turns = []
    for s in range(sessions):
        for j in range(per + (s < extra)):
            human = j % 2 == 0
            turns.append(Turn(s, human, message_text(rng, human)))
    return turns


def user_of(mode: str, session: int, users: int) -> str:
    return f"{mode.replace('_', '-')}-user-{session % users}"


def session_of(session: int) -> str:
    return f"session-{session:03d}"


# --- Measurement -------------------------------------------------------------------------


def summary(m: Measurement) -> dict[str, Any]:
    """One entry of the report's ``results``."""
    return {"name": m.name, **m.latency_summary(), "per_s": m.per_second(), "calls": m.calls}


class Histories:
    """One ``MemoryChatMessageHistory`` per (user, session) of a mode, built before timing."""

    def __init__(self, engine: MemoryEngine, mode: str, users: int, remember: bool) -> None:
        self.engine, self.mode, self.users, self.remember = engine, mode, users, remember
        self._made: dict[int, MemoryChatMessageHistory] = {}

    def user(self, session: int) -> str:
        return user_of(self.mode, session, self.users)

    def __getitem__(self, session: int) -> MemoryChatMessageHistory:
        history = self._made.get(session)
        if history is None:
            history = self._made[session] = MemoryChatMessageHistory(
                session_of(session), user_id=self.user(session), engine=self.engine,
                remember=self.remember)
        return history


def add_calls(histories: Histories, turns: Sequence[Turn]) -> list[Callable[[], object]]:
    """``add_message`` of each turn (messages and histories built now, not timed)."""
    calls: list[Callable[[], object]] = []
    for turn in turns:
        history, message = histories[turn.session], turn.message()
        calls.append(lambda h=history, m=message: h.add_message(m))
    return calls


def sync_calls(histories: Histories, turns: Sequence[Turn]) -> list[Callable[[], object]]:
    """History write (remember off), then ``engine.add`` of the same turn on the caller's
    path: what ``add_message`` would cost if the long-term write were synchronous."""
    engine = histories.engine
    calls: list[Callable[[], object]] = []
    for seq, turn in enumerate(turns):
        history, message = histories[turn.session], turn.message()
        user, session = histories.user(turn.session), session_of(turn.session)
        meta = {"chat_session": history.key_prefix + session, "seq": seq}

        def call(h: MemoryChatMessageHistory = history, m: BaseMessage = message,
                 u: str = user, s: str = session, t: Turn = turn,
                 md: dict[str, Any] = meta) -> object:
            h.add_message(m)
            return engine.add(u, t.text, session_id=s, kind=Kind.TURN, role=t.role,
                              metadata=md)
        calls.append(call)
    return calls


def long_term(engine: MemoryEngine, mode: str, users: int) -> int:
    return sum(engine.count(user_of(mode, s, users)) for s in range(users))


def run_measurements(
    engine: MemoryEngine, turns: Sequence[Turn], warm: Sequence[Turn], users: int
) -> tuple[list[Measurement], dict[str, Any]]:
    results = []
    background: dict[str, Any] = {}

    # remember off: history only
    off = Histories(engine, "remember_off", users, remember=False)
    for call in add_calls(Histories(engine, "warmup_off", 1, remember=False), warm):
        call()
    results.append(timed("add_message_remember_off", add_calls(off, turns)))

    # remember on: history + queued long-term write; the queue is drained after timing
    on = Histories(engine, "remember_on", users, remember=True)
    for call in add_calls(Histories(engine, "warmup_on", 1, remember=True), warm):
        call()
    engine.flush()  # the warmup's background writes are done before timing
    calls = add_calls(on, turns)
    results.append(timed("add_message_remember_on", calls))
    pending = engine.pending_writes
    t0 = time.perf_counter()
    engine.flush()
    flush_s = time.perf_counter() - t0
    expected = sum(1 for t in turns if t.text.strip())  # every turn is human or AI
    written = long_term(engine, "remember_on", users)
    loop_s = results[-1].wall_s
    background.update({
        "flush_s": round(flush_s, 4),
        "pending_after_loop": pending,
        "timed_loop_s": round(loop_s, 4),
        "end_to_end_per_s": round(len(turns) / (loop_s + flush_s), 2),
        "long_term_written": written,
        "expected": expected,
        "remember_off_long_term": long_term(engine, "remember_off", users),
    })

    # sync baseline: history + engine.add on the caller's path
    sync = Histories(engine, "sync_embed", users, remember=False)
    for call in sync_calls(Histories(engine, "warmup_sync", 1, remember=False), warm):
        call()
    results.append(timed("add_message_sync_embed", sync_calls(sync, turns)))
    background["sync_embed_long_term"] = long_term(engine, "sync_embed", users)

    # the model alone, one turn at a time
    embed = engine.embedder.embed_documents
    for turn in warm:
        embed([turn.text])
    results.append(timed("embed_one", [
        lambda text=turn.text: embed([text]) for turn in turns]))
    return results, background


def ratios(results: Sequence[dict[str, Any]]) -> dict[str, float]:
    p50 = {r["name"]: r["p50_ms"] for r in results}
    p99 = {r["name"]: r["p99_ms"] for r in results}
    off, on, sync = ("add_message_remember_off", "add_message_remember_on",
                     "add_message_sync_embed")
    return {
        "remember_on_over_off_p50": round(p50[on] / p50[off], 3),
        "sync_embed_over_remember_on_p50": round(p50[sync] / p50[on], 3),
        "remember_on_over_off_p99": round(p99[on] / p99[off], 3),
        "sync_embed_over_remember_on_p99": round(p99[sync] / p99[on], 3),
    }


# --- Output ------------------------------------------------------------------------------


def plot(report: dict[str, Any], path: Path) -> None:
    """Grouped bars of p50 and p99 per measurement, log scale."""
    results, params, bg = report["results"], report["params"], report["background"]
    plot_latency_bars(
        results, path,
        f"memory-engine chat history add_message: {params['messages']:,} messages, "
        f"{params['sessions']} sessions, {params['users']} users, 1 client\n"
        f"remember_on queue drained by flush() in {bg['flush_s']:.2f}s afterwards",
        tick_labels=[r["name"].replace("add_message_", "add_message\n") for r in results],
        title_size=10,
    )


def print_table(report: dict[str, Any]) -> None:
    params, bg = report["params"], report["background"]
    print(
        f"\nchat history add_message: {params['messages']:,} messages "
        f"({params['words_mean']:.1f} words on average), {params['sessions']} sessions, "
        f"{params['users']} users, warmup {params['warmup']}, 1 client\n"
    )
    print(f"{'name':<27}{'p50 ms':>10}{'p95 ms':>10}{'p99 ms':>10}{'mean ms':>10}"
          f"{'max ms':>10}{'msgs/s':>10}")
    for r in report["results"]:
        print(f"{r['name']:<27}{r['p50_ms']:>10.3f}{r['p95_ms']:>10.3f}{r['p99_ms']:>10.3f}"
              f"{r['mean_ms']:>10.3f}{r['max_ms']:>10.3f}{r['per_s']:>10.0f}")
    print_ratios(report["ratios"])
    print(f"\nremember_on background: {bg['pending_after_loop']} writes still queued after the "
          f"timed loop; flush() took {bg['flush_s']:.3f}s; end to end "
          f"{bg['end_to_end_per_s']:,.0f} msgs/s")
    status = "OK" if bg["long_term_written"] == bg["expected"] else "MISMATCH"
    print(f"long-term memories written: {bg['long_term_written']} of {bg['expected']} "
          f"expected ({status})")


# --- Entry point -------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="add_message latency of MemoryChatMessageHistory, with and without "
                    "long-term memory.",
    )
    add_size_arguments(parser, FULL, QUICK, {
        "messages": "timed messages per measurement",
        "users": "users the sessions belong to",
        "warmup": "untimed messages before each measurement",
    })
    add_common_arguments(parser, seed_of="text", quick_run="~200 messages")
    args = parser.parse_args(argv)
    apply_defaults(args, FULL, QUICK, "chat_history")
    if args.users < 1 or args.sessions < args.users or args.messages < args.sessions:
        parser.error("need --users >= 1, --sessions >= --users and --messages >= --sessions")
    if args.warmup < 0:
        parser.error("need --warmup >= 0")
    return args


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Build the conversation, measure, and return the report."""
    rng = np.random.default_rng(args.seed)
    turns = conversation(rng, args.messages, args.sessions)
    warm = conversation(rng, args.warmup, 1) if args.warmup else []
    with contextlib.ExitStack() as stack:
        url, client = open_redis(stack, args.redis_url)
        engine = scratch_engine(stack, url, client, cleanup=drop_prefix)  # with the histories
        measurements, background = run_measurements(engine, turns, warm, args.users)
        versions = server_versions(client)

    results = [summary(m) for m in measurements]
    results.sort(key=lambda r: ORDER.index(r["name"]))
    cfg = engine.config
    words = [len(t.text.split()) for t in turns]
    return {
        **provenance("chat_history", versions),
        "params": {
            "messages": len(turns), "sessions": args.sessions, "users": args.users,
            "warmup": args.warmup, "seed": args.seed, "words_min": min(words),
            "words_max": max(words), "words_mean": round(float(np.mean(words)), 2),
            "human_messages": sum(t.human for t in turns), "embedder": engine.embedder.name,
            "embedding_batch_size": cfg.embedding_batch_size,
            "context_turns": cfg.context_turns,
            **common_params(args),
        },
        "results": results,
        "ratios": ratios(results),
        "background": background,
        "timestamp": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the bundled model is on disk
    args = parse_args(argv)
    report = run(args)
    save_report(report, args.out, plot, print_table)
    bg = report["background"]
    if bg["long_term_written"] != bg["expected"]:
        print(f"error: {bg['long_term_written']} long-term memories written, "
              f"{bg['expected']} expected", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
