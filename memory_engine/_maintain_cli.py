"""``memory-engine maintain``, ``undo`` and ``audit``: lifecycle maintenance from a terminal.

``cli.py`` stays the dispatcher: it calls ``add_parsers`` to declare these subcommands and
``run`` for any command in ``COMMANDS``. The environment is read here, at the edge: the
summarizer is chosen from ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` (``--summarizer auto``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import IO, Any

from ._maintain import MaintenanceReport
from .config import EngineConfig
from .engine import MemoryEngine
from .lifecycle import AuditEntry, ExtractiveSummarizer, LifecyclePolicy, Summarizer
from .models import Kind

COMMANDS = frozenset({"maintain", "undo", "audit"})
SUMMARIZERS = ("auto", "extractive", "llm")
LLM_VARIABLES = ("OPENAI_API_KEY", "OPENAI_BASE_URL")  # what ``_chat.chat_model`` reads
COLUMNS = ("before", "after", "expired", "consolidated", "summaries", "pruned", "deduped")
FIRST_WORDS = 8  # words of a removed memory that ``audit`` shows


def parse_time(text: str) -> float:
    """An ISO 8601 time (``2024-05-01``, ``2024-05-01T12:00:00+02:00``, ``...Z``) as
    seconds since the epoch; a time without a zone is UTC."""
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 time: {text!r} (e.g. 2024-05-01 or 2024-05-01T12:00:00Z; "
            "a time without a zone is UTC)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def parse_ttl(text: str) -> tuple[Kind, float]:
    """``KIND=SECONDS``, e.g. ``turn=2592000``."""
    kind, sep, seconds = text.partition("=")
    kinds = ", ".join(k.value for k in Kind)
    try:
        key = Kind(kind.strip())
        value = float(seconds) if sep else math.nan
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected KIND=SECONDS with KIND one of {kinds}; got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(
            f"a ttl must be a positive number of seconds, as KIND=SECONDS; got {text!r}")
    return key, value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1; got {text!r}")
    return value


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Declare ``maintain``, ``undo`` and ``audit`` on the CLI's subparsers."""
    maintain = sub.add_parser(
        "maintain", help="expire, consolidate and prune stale memories (undoable)",
        description="Plan and apply the lifecycle policy (config.lifecycle, with the "
                    "overrides given here) to one user or every user: expired memories go, "
                    "stale ones are consolidated into summaries, a budget prunes the least "
                    "present. Every change is recorded; see `audit`, revert with `undo`.")
    maintain.add_argument("--user", help="maintain this user only (default: every user)")
    maintain.add_argument("--now", type=parse_time, metavar="ISO8601",
                          help="plan as if it were this time (no zone = UTC); default: now")
    maintain.add_argument("--dry-run", action="store_true",
                          help="plan and report, change nothing")
    maintain.add_argument("--json", action="store_true",
                          help="print the report as JSON (with the plan's decisions when "
                               "--dry-run)")
    maintain.add_argument("--budget", type=_positive_int, metavar="N",
                          help="most memories each user may keep")
    maintain.add_argument("--stale-below", type=_fraction, metavar="X",
                          help="decay score under which a memory is stale (0 to 1)")
    maintain.add_argument("--ttl", type=parse_ttl, action="extend", nargs="+",
                          metavar="KIND=SECONDS",
                          help="seconds a memory of KIND lives after it was created")
    maintain.add_argument("--summarizer", choices=SUMMARIZERS, default="auto",
                          help="auto (default): an LLM when OPENAI_API_KEY or OPENAI_BASE_URL "
                               "is set, else extractive (no LLM)")
    maintain.add_argument("--model", help="the LLM summarizer's model; default: env "
                                          "MEMORY_ENGINE_CHAT_MODEL, else gpt-4o-mini")

    undo = sub.add_parser("undo", help="revert one maintenance change")
    undo.add_argument("--user", required=True)
    undo.add_argument("change_id", metavar="CHANGE_ID", help="from `audit` or `maintain --json`")

    audit = sub.add_parser("audit", help="list a user's maintenance changes, newest first")
    audit.add_argument("--user", required=True)
    audit.add_argument("--limit", type=_positive_int, default=20, metavar="N",
                       help="entries shown (default 20)")
    audit.add_argument("--json", action="store_true", help="print JSON instead of text")


def policy(base: LifecyclePolicy, args: argparse.Namespace) -> LifecyclePolicy:
    """``base`` with the command line's overrides."""
    changes: dict[str, Any] = {}
    if args.budget is not None:
        changes["budget"] = args.budget
    if args.stale_below is not None:
        changes["stale_below"] = args.stale_below
    if args.ttl:
        changes["ttl"] = {**base.ttl, **dict(args.ttl)}
    return dataclasses.replace(base, **changes)


def summarizer(choice: str, model: str | None, environ: Mapping[str, str]) -> Summarizer:
    """The summarizer ``--summarizer`` names; ``auto`` is the LLM one when an LLM is set up.

    Raises:
        ConfigurationError: ``llm`` with no LLM configured (the message says how to set one).
    """
    if choice == "extractive" or (
            choice == "auto" and not any(environ.get(v) for v in LLM_VARIABLES)):
        return ExtractiveSummarizer()
    from . import _chat  # LangChain and the OpenAI client load for an LLM summarizer only

    llm, _ = _chat.chat_model(model, environ, feature="--summarizer llm")
    from .langchain import LLMSummarizer

    return LLMSummarizer(llm)


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


def report_table(report: MaintenanceReport) -> list[str]:
    """The report as text: a header line, one row per user, a total row, and what next."""
    verb = "dry run, nothing changed" if report.dry_run else "maintained"
    plural = "" if len(report.users) == 1 else "s"
    lines = [f"{verb}: {len(report.users)} user{plural} at {when(report.now)} "
             f"(summarizer: {report.summarizer})"]
    rows = [[u.user_id, *(str(getattr(u, c)) for c in COLUMNS)] for u in report.users]
    total = ["total", *(str(report.total(c)) for c in COLUMNS)]
    head = ["user", *COLUMNS]
    widths = [max(len(r[i]) for r in [head, total, *rows]) for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        return "  ".join([first.ljust(widths[0]),
                          *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True))])

    lines += [line(head), *(line(r) for r in rows), line(["-" * w for w in widths]), line(total)]
    changes = len(report.changes)
    if changes:
        lines.append(f"{changes} change{'' if changes == 1 else 's'}; list them with "
                     "`memory-engine audit --user USER`, revert one with "
                     "`memory-engine undo --user USER CHANGE_ID`")
    return lines


def first_words(text: str, n: int = FIRST_WORDS) -> str:
    words = text.split()
    return " ".join(words[:n]) + (" \u2026" if len(words) > n else "")


def entry_json(entry: AuditEntry) -> dict[str, Any]:
    """An audit entry for ``audit --json``: the removed memories by id and text (their
    stored vectors stay out)."""
    return {
        "change_id": entry.change_id, "user_id": entry.user_id, "action": entry.action,
        "reason": entry.reason, "at": entry.at, "now": entry.now,
        "source_ids": list(entry.source_ids), "summary_id": entry.summary_id,
        "summarizer": entry.summarizer, "undone_at": entry.undone_at,
        "removed": [{"memory_id": r.memory_id, "text": r.text} for r in entry.removed],
    }


def entry_lines(entry: AuditEntry) -> list[str]:
    """One audit entry as text: id, time, action, count and undone marker, then why and what."""
    n = len(entry.removed)
    head = (f"{entry.change_id}  {when(entry.at)}  {entry.action:<11}  "
            f"{n} memor{'y' if n == 1 else 'ies'} removed")
    if entry.summary_id:
        head += f", summary {entry.summary_id}"
    if entry.undone_at is not None:
        head += f"  [undone {when(entry.undone_at)}]"
    lines = [head, f"    reason: {entry.reason}"]
    if entry.removed:
        more = f" (+{n - 1} more)" if n > 1 else ""
        lines.append(f"    removed: {first_words(entry.removed[0].text)!r}{more}")
    return lines


def _maintain(args: argparse.Namespace, cfg: EngineConfig, out: IO[str]) -> int:
    chosen = policy(cfg.lifecycle, args)
    writer = summarizer(args.summarizer, args.model, os.environ)  # before touching any data
    with MemoryEngine(cfg, summarizer=writer) as engine:
        report = engine.maintain(args.user, now=args.now, dry_run=args.dry_run, policy=chosen,
                                 progress=True)
    if args.json:
        print(json.dumps(report.as_dict(decisions=args.dry_run), ensure_ascii=False, indent=2),
              file=out)
    else:
        print("\n".join(report_table(report)), file=out)
    return 0


def _undo(args: argparse.Namespace, cfg: EngineConfig, out: IO[str]) -> int:
    with MemoryEngine(cfg) as engine:
        result = engine.undo(args.user, args.change_id)
        restored = [engine.get(args.user, i) for i in result.restored]
    n = len(restored)
    print(f"undid change {result.change_id}: restored {n} memor{'y' if n == 1 else 'ies'} "
          f"of {args.user!r}", file=out)
    for memory in restored:
        print(f"  {memory.id}  {first_words(memory.text, 12)}", file=out)
    if result.removed_summary:
        print(f"removed summary {result.removed_summary}", file=out)
    return 0


def _audit(args: argparse.Namespace, cfg: EngineConfig, out: IO[str]) -> int:
    with MemoryEngine(cfg) as engine:
        entries = engine.audit_trail(args.user, limit=args.limit)
    if args.json:
        print(json.dumps([entry_json(e) for e in entries], ensure_ascii=False, indent=2),
              file=out)
    elif not entries:
        print(f"no maintenance changes recorded for {args.user!r}", file=out)
    else:
        for entry in entries:
            print("\n".join(entry_lines(entry)), file=out)
    return 0


def run(args: argparse.Namespace, cfg: EngineConfig, out: IO[str] | None = None) -> int:
    """Run ``maintain``, ``undo`` or ``audit``; returns the exit code."""
    commands = {"maintain": _maintain, "undo": _undo, "audit": _audit}
    return commands[args.command](args, cfg, out or sys.stdout)


__all__ = ["COMMANDS", "add_parsers", "run"]
