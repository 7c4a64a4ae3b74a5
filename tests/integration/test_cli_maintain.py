"""``memory-engine maintain``, ``audit`` and ``undo``, run in-process through ``cli.main`` on
the real embedded Redis with the real model; the LLM summarizer talks to a FAKE
OpenAI-compatible server (``tests/openai_server.py``)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
import redis

from memory_engine import EngineConfig, MemoryEngine
from memory_engine.cli import main
from memory_engine.exceptions import MemoryNotFoundError
from tests.openai_server import FakeOpenAIServer, RecordedRequest, message_text

pytestmark = pytest.mark.integration

NOW = "2024-01-01T00:00:00"  # no zone: UTC
NOW_TS = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
LONG_AGO = datetime(2023, 5, 1, tzinfo=UTC).timestamp()
DAY = 86_400.0

ANA_TURNS = [
    "I adopted a beagle puppy named Biscuit last weekend.",
    "Biscuit loves chewing on my running shoes.",
    "I take Biscuit to the dog park every morning before work.",
    "The vet said Biscuit needs his second vaccine next month.",
]
BEN_TURNS = [
    "I started learning to play the cello in March.",
    "My cello teacher gives me lessons every Tuesday evening.",
    "I practice cello scales for an hour each night.",
    "I want to play a Bach cello suite at the spring recital.",
]
ANA_FACT = "Ana's sister Clara lives in Lisbon."  # two days before NOW: fresh, not stale
LLM_SUMMARY = "Ana adopted a beagle named Biscuit in May 2023 and walks him every morning."


@dataclass
class Seeded:
    engine: MemoryEngine
    base: list[str]


@dataclass
class Ran:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No MEMORY_ENGINE_* or OPENAI_* setting of this machine leaks into the commands."""
    for name in [k for k in os.environ if k.startswith(("MEMORY_ENGINE_", "OPENAI_"))]:
        monkeypatch.delenv(name)


@pytest.fixture(autouse=True)
def _audit_trail_removed(config: EngineConfig, redis_client: redis.Redis) -> Iterator[None]:
    """The audit trail's keys go after each test (dropping the index leaves them)."""
    yield
    for key in redis_client.scan_iter(match=f"{config.key_prefix}:audit:*", count=1000):
        redis_client.delete(key)


@pytest.fixture
def seeded(engine: MemoryEngine, config: EngineConfig, redis_url: str) -> Seeded:
    """Ana and Ben each said four turns on one topic long before NOW; Ana also has a fresh
    fact."""
    for user, turns in (("ana", ANA_TURNS), ("ben", BEN_TURNS)):
        for i, text in enumerate(turns):
            engine.add(user, text, session_id="s1", role="user", created_at=LONG_AGO + 60 * i)
    engine.add("ana", ANA_FACT, kind="fact", created_at=NOW_TS - 2 * DAY)
    return Seeded(engine, ["--redis-url", redis_url, "--index", config.index_name])


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> Ran:
    code = main(list(args))
    out, err = capsys.readouterr()
    return Ran(code, out, err)


def _counts(engine: MemoryEngine) -> dict[str, int]:
    return {u: engine.count(u) for u in ("ana", "ben")}


def test_dry_run_json_changes_nothing(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _counts(seeded.engine)
    assert before == {"ana": 5, "ben": 4}
    ran = _cli(capsys, *seeded.base, "maintain", "--dry-run", "--json", "--now", NOW)
    assert ran.code == 0, ran.err
    report = ran.json()  # stdout holds the JSON and nothing else
    assert report["dry_run"] is True
    assert report["now"] == NOW_TS
    assert report["summarizer"] == "extractive"
    assert report["totals"] == {"before": 9, "after": 3, "expired": 0, "pruned": 0,
                                "deduped": 0, "consolidated": 8, "summaries": 2}
    users = {u["user_id"]: u for u in report["users"]}
    assert set(users) == {"ana", "ben"}
    assert users["ana"]["changes"] == []
    assert users["ben"]["changes"] == []
    ana_plan = users["ana"]["plan"]  # a dry run shows its decisions
    actions = sorted(d["action"] for p in ana_plan for d in p["decisions"])
    assert actions == ["consolidate"] * 4 + ["keep"]
    assert "maintaining" in ran.err  # the progress bar is on stderr
    assert _counts(seeded.engine) == before
    assert seeded.engine.audit_trail("ana") == []
    assert seeded.engine.audit_trail("ben") == []


def test_maintain_audit_undo(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    engine, base = seeded.engine, seeded.base
    ran = _cli(capsys, *base, "maintain", "--json", "--now", NOW)
    assert ran.code == 0, ran.err
    report = ran.json()
    assert report["dry_run"] is False
    assert report["totals"] == {"before": 9, "after": 3, "expired": 0, "pruned": 0,
                                "deduped": 0, "consolidated": 8, "summaries": 2}
    users = {u["user_id"]: u for u in report["users"]}
    assert "plan" not in users["ana"]
    assert len(users["ana"]["changes"]) == 1
    assert len(users["ben"]["changes"]) == 1
    assert _counts(engine) == {"ana": 2, "ben": 1}
    change = users["ana"]["changes"][0]

    trail = _cli(capsys, *base, "audit", "--user", "ana", "--json")
    assert trail.code == 0, trail.err
    entries = trail.json()
    assert [e["change_id"] for e in entries] == [change]
    assert entries[0]["action"] == "consolidate"
    assert entries[0]["summarizer"] == "extractive"
    assert sorted(r["text"] for r in entries[0]["removed"]) == sorted(ANA_TURNS)
    summary = engine.get("ana", entries[0]["summary_id"])
    assert summary.kind.value == "summary"
    assert "Biscuit" in summary.text
    ben_entries = _cli(capsys, *base, "audit", "--user", "ben", "--json").json()
    assert sorted(r["text"] for r in ben_entries[0]["removed"]) == sorted(BEN_TURNS)

    text = _cli(capsys, *base, "audit", "--user", "ana")
    assert text.code == 0
    assert text.out.startswith(change)
    assert "consolidate" in text.out
    assert "4 memories removed" in text.out
    assert "reason: stale" in text.out
    assert "removed: 'I adopted a beagle puppy named Biscuit last \u2026' (+3 more)" in text.out
    assert "undone" not in text.out

    undone = _cli(capsys, *base, "undo", "--user", "ana", change)
    assert undone.code == 0, undone.err
    assert f"undid change {change}: restored 4 memories of 'ana'" in undone.out
    assert "I take Biscuit to the dog park" in undone.out
    assert f"removed summary {summary.id}" in undone.out
    assert _counts(engine) == {"ana": 5, "ben": 1}
    with pytest.raises(MemoryNotFoundError):
        engine.get("ana", summary.id)
    assert "[undone " in _cli(capsys, *base, "audit", "--user", "ana").out

    again = _cli(capsys, *base, "undo", "--user", "ana", change)
    assert again.code == 2
    assert "already undone" in again.err
    unknown = _cli(capsys, *base, "undo", "--user", "ana", "0" * 32)
    assert unknown.code == 2
    assert unknown.err.startswith("memory-engine: error: no change '" + "0" * 32)
    malformed = _cli(capsys, *base, "undo", "--user", "ana", "not-a-change")
    assert malformed.code == 2
    assert "'not-a-change' is not a change id" in malformed.err
    # Ben cannot undo Ana's change: it is not in his trail
    crossed = _cli(capsys, *base, "undo", "--user", "ben", change)
    assert crossed.code == 2
    assert "no change" in crossed.err
    assert _counts(engine) == {"ana": 5, "ben": 1}


def test_table_for_one_user(seeded: Seeded, capsys: pytest.CaptureFixture[str]) -> None:
    ran = _cli(capsys, *seeded.base, "maintain", "--user", "ben", "--now", NOW)
    assert ran.code == 0, ran.err
    lines = ran.out.splitlines()
    assert lines[0] == "maintained: 1 user at 2024-01-01 00:00:00 UTC (summarizer: extractive)"
    assert lines[1].split() == ["user", "before", "after", "expired", "consolidated",
                                "summaries", "pruned", "deduped"]
    assert lines[2].split() == ["ben", "4", "1", "0", "4", "1", "0", "0"]
    assert lines[4].split() == ["total", "4", "1", "0", "4", "1", "0", "0"]
    assert lines[5].startswith("1 change; list them with `memory-engine audit")
    assert _counts(seeded.engine) == {"ana": 5, "ben": 1}  # ana was not maintained
    empty = _cli(capsys, *seeded.base, "audit", "--user", "ana")
    assert empty.out.strip() == "no maintenance changes recorded for 'ana'"


def test_budget_is_per_user(
    engine: MemoryEngine, config: EngineConfig, redis_url: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sizes = {"ana": 5, "ben": 3, "cara": 1}
    for user, n in sizes.items():
        for i in range(n):
            engine.add(user, f"{user} fact number {i}: likes colour {i}", kind="fact",
                       created_at=NOW_TS - DAY * (i + 1))
    base = ["--redis-url", redis_url, "--index", config.index_name]
    ran = _cli(capsys, *base, "maintain", "--budget", "2", "--json", "--now", NOW)
    assert ran.code == 0, ran.err
    users = {u["user_id"]: u for u in ran.json()["users"]}
    assert {u: (r["after"], r["pruned"]) for u, r in users.items()} == {
        "ana": (2, 3), "ben": (2, 1), "cara": (1, 0)}
    assert {u: engine.count(u) for u in sizes} == {"ana": 2, "ben": 2, "cara": 1}
    # the budget prunes the least present first: Ana's three oldest facts
    pruned = {e.removed_text[0] for e in engine.audit_trail("ana")}
    assert pruned == {f"ana fact number {i}: likes colour {i}" for i in (2, 3, 4)}
    assert {e.action for e in engine.audit_trail("ana")} == {"prune"}


def test_ttl_and_stale_below_overrides(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    ran = _cli(capsys, *seeded.base, "maintain", "--dry-run", "--json", "--now", NOW,
               "--stale-below", "0", "--ttl", "fact=86400", "summary=604800")
    assert ran.code == 0, ran.err
    totals = ran.json()["totals"]
    # nothing is below a decay score of 0, so nothing is consolidated; the 2-day-old fact
    # outlived its 1-day ttl
    assert (totals["consolidated"], totals["expired"], totals["after"]) == (0, 1, 8)


@pytest.mark.parametrize(("args", "message"), [
    (["--now", "last tuesday"], "argument --now: not an ISO 8601 time: 'last tuesday'"),
    (["--now", "2024-13-01"], "argument --now: not an ISO 8601 time"),
    (["--budget", "0"], "argument --budget: expected a positive integer; got '0'"),
    (["--stale-below", "1.5"], "argument --stale-below: expected a number from 0 to 1"),
    (["--ttl", "memo=60"], "argument --ttl: expected KIND=SECONDS with KIND one of turn"),
    (["--ttl", "turn=-5"], "argument --ttl: a ttl must be a positive number of seconds"),
    (["--ttl", "turn"], "argument --ttl: a ttl must be a positive number of seconds"),
])
def test_bad_arguments_exit_2(
    seeded: Seeded, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*seeded.base, "maintain", *args])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "memory-engine maintain: error: " + message in err
    assert _counts(seeded.engine) == {"ana": 5, "ben": 4}


def test_llm_summarizer_needs_an_llm(
    seeded: Seeded, capsys: pytest.CaptureFixture[str]
) -> None:
    ran = _cli(capsys, *seeded.base, "maintain", "--summarizer", "llm", "--now", NOW)
    assert ran.code == 2
    assert ran.err.startswith("memory-engine: error: --summarizer llm needs an "
                              "OpenAI-compatible chat model, and none is configured.")
    assert "export OPENAI_BASE_URL=" in ran.err
    assert "Traceback" not in ran.err
    assert ran.out == ""
    assert _counts(seeded.engine) == {"ana": 5, "ben": 4}


def _summary_reply(body: dict[str, Any]) -> str:
    return LLM_SUMMARY


def _transcript(request: RecordedRequest) -> str:
    return " / ".join(message_text(m) for m in request.body["messages"]
                      if m.get("role") == "user")


def test_auto_summarizer_uses_the_configured_llm(
    seeded: Seeded, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeOpenAIServer(reply=_summary_reply) as server:
        for name, value in {"OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": "test",
                            "NO_PROXY": "127.0.0.1,localhost",
                            "no_proxy": "127.0.0.1,localhost"}.items():
            monkeypatch.setenv(name, value)
        extractive = _cli(capsys, *seeded.base, "maintain", "--user", "ben", "--json",
                          "--now", NOW, "--summarizer", "extractive")
        assert extractive.code == 0, extractive.err
        assert extractive.json()["summarizer"] == "extractive"
        assert server.requests == []
        ran = _cli(capsys, *seeded.base, "maintain", "--user", "ana", "--json", "--now", NOW,
                   "--model", "fake-summarizer")
        assert ran.code == 0, ran.err
        requests = list(server.requests)
    report = ran.json()
    assert report["summarizer"] == "llm:fake-summarizer"
    assert report["totals"]["summaries"] == 1
    assert len(requests) == 1
    assert requests[0].body["model"] == "fake-summarizer"
    sent = _transcript(requests[0])
    assert all(turn in sent for turn in ANA_TURNS)
    assert ANA_FACT not in sent  # the fresh fact is kept, not summarized
    entry = seeded.engine.audit_trail("ana")[0]
    assert entry.summarizer == "llm:fake-summarizer"
    assert entry.summary_id is not None
    assert seeded.engine.get("ana", entry.summary_id).text == LLM_SUMMARY
