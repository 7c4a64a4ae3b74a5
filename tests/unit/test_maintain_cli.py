"""The pure parts of ``memory-engine maintain|undo|audit``: argument parsing, the policy
overrides, the summarizer choice and the text output. No Redis, no model."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

import pytest

from memory_engine._maintain import MaintenanceReport, UserReport
from memory_engine._maintain_cli import (
    entry_lines,
    parse_time,
    parse_ttl,
    policy,
    report_table,
    summarizer,
)
from memory_engine.exceptions import ConfigurationError
from memory_engine.lifecycle import AuditEntry, LifecyclePolicy, RemovedMemory
from memory_engine.models import Kind

MIDNIGHT = datetime(2024, 1, 1, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("text", [
    "2024-01-01", "2024-01-01T00:00:00", "2024-01-01 00:00", "2024-01-01T00:00:00Z",
    "2024-01-01T02:00:00+02:00", " 2023-12-31T19:00:00-05:00 ",
])
def test_parse_time_reads_iso_8601_and_a_naive_time_is_utc(text: str) -> None:
    assert parse_time(text) == MIDNIGHT


@pytest.mark.parametrize("text", ["", "yesterday", "2024-02-30", "1704067200", "01/01/2024"])
def test_parse_time_rejects_garbage(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not an ISO 8601 time"):
        parse_time(text)


def test_parse_ttl() -> None:
    assert parse_ttl("turn=3600") == (Kind.TURN, 3600.0)
    assert parse_ttl("summary=1.5") == (Kind.SUMMARY, 1.5)
    for bad in ("turn", "turn=", "turn=0", "turn=nan", "turn=inf", "memo=5", "=5"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_ttl(bad)


def _args(**given: object) -> argparse.Namespace:
    values: dict[str, object] = {"budget": None, "stale_below": None, "ttl": None}
    return argparse.Namespace(**{**values, **given})


def test_policy_keeps_the_base_and_overrides_what_is_given() -> None:
    base = LifecyclePolicy(ttl={Kind.TURN: 10.0, Kind.FACT: 20.0}, budget=50, min_group=4)
    assert policy(base, _args()) == base
    changed = policy(base, _args(budget=2, stale_below=0.5, ttl=[(Kind.FACT, 99.0)]))
    assert changed.budget == 2
    assert changed.stale_below == 0.5
    assert dict(changed.ttl) == {Kind.TURN: 10.0, Kind.FACT: 99.0}
    assert changed.min_group == 4


def test_summarizer_choice() -> None:
    llm_env = {"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}
    assert summarizer("auto", None, {}).name == "extractive"
    assert summarizer("extractive", None, llm_env).name == "extractive"
    assert summarizer("auto", None, llm_env).name == "llm:gpt-4o-mini"  # nothing is sent yet
    assert summarizer("llm", "m1", {"OPENAI_API_KEY": "sk-x"}).name == "llm:m1"
    with pytest.raises(ConfigurationError, match=r"^--summarizer llm needs an OpenAI-compat"):
        summarizer("llm", None, {"OPENAI_API_KEY": ""})


def test_report_table_aligns_users_and_total() -> None:
    report = MaintenanceReport(MIDNIGHT, True, "extractive", [
        UserReport("ana", before=12, after=3, consolidated=9, summaries=2),
        UserReport("bartholomew", before=1, after=1),
    ])
    lines = report_table(report)
    assert lines[0] == ("dry run, nothing changed: 2 users at 2024-01-01 00:00:00 UTC "
                        "(summarizer: extractive)")
    assert [line.split() for line in lines[2:4]] == [
        ["ana", "12", "3", "0", "9", "2", "0", "0"],
        ["bartholomew", "1", "1", "0", "0", "0", "0", "0"],
    ]
    assert lines[5].split() == ["total", "13", "4", "0", "9", "2", "0", "0"]
    assert len({len(line) for line in lines[1:6]}) == 1  # every row as wide as the header
    assert len(lines) == 6  # a dry run made no changes to point at


def test_entry_lines() -> None:
    removed = RemovedMemory("m1", {"text": b"one two three four five six seven eight nine"})
    entry = AuditEntry("c" * 32, "ana", "expire", "ttl of fact (60s) passed", MIDNIGHT,
                       MIDNIGHT, ("m1",), removed=(removed,))
    assert entry_lines(entry) == [
        "c" * 32 + "  2024-01-01 00:00:00 UTC  expire       1 memory removed",
        "    reason: ttl of fact (60s) passed",
        "    removed: 'one two three four five six seven eight \u2026'",
    ]
    assert entry_lines(entry.undone(MIDNIGHT + 61))[0].endswith(
        "[undone 2024-01-01 00:01:01 UTC]")
