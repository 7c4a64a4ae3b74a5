"""What moves LoCoMo evidence recall: hybrid search with one part of the defaults changed.

Each row reruns ``locomo_recall.py --modes hybrid`` (or ``hybrid+decay``) on a fresh index
with one setting overridden through the environment, so every row is the engine as a user
would configure it. Writes one JSON (``--out``) with recall@k of every row and prints a table.

Run::

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/locomo_ablation.py \\
        --data ../shared/data/locomo_dev.json [--rows NAME ...] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS_DIR, git_state, machine_info, write_json

# (name, environment overrides, mode, extra arguments)
ROWS: list[tuple[str, dict[str, str], str, list[str]]] = [
    ("defaults", {}, "hybrid", []),
    ("no context credit", {"MEMORY_ENGINE_CONTEXT_CREDIT": "0"}, "hybrid", []),
    ("no earlier turns indexed", {"MEMORY_ENGINE_CONTEXT_TURNS": "0"}, "hybrid", []),
    ("neither", {"MEMORY_ENGINE_CONTEXT_TURNS": "0", "MEMORY_ENGINE_CONTEXT_CREDIT": "0"},
     "hybrid", []),
    ("linear fusion", {"MEMORY_ENGINE_FUSION": "linear"}, "hybrid", []),
    ("RRF k=60, equal weights", {"MEMORY_ENGINE_FUSION": "rrf", "MEMORY_ENGINE_RRF_K": "60",
                                 "MEMORY_ENGINE_KEYWORD_WEIGHT": "1.0"}, "hybrid", []),
    ("linear, equal weights", {"MEMORY_ENGINE_FUSION": "linear",
                               "MEMORY_ENGINE_KEYWORD_WEIGHT": "1.0"}, "hybrid", []),
    ("context credit 0.3", {"MEMORY_ENGINE_CONTEXT_CREDIT": "0.3"}, "hybrid", []),
    ("context credit 0.7", {"MEMORY_ENGINE_CONTEXT_CREDIT": "0.7"}, "hybrid", []),
    ("100 candidates", {"MEMORY_ENGINE_HYBRID_CANDIDATES": "100"}, "hybrid", []),
    # Searches with k=10 (the others use k=50, which fetches 50 candidates whatever the
    # default): the candidate depth a k=5 or k=10 search gets by default, against deeper.
    ("k=10: 20 candidates (default)", {}, "hybrid", ["--k", "5", "10"]),
    ("k=10: 50 candidates", {"MEMORY_ENGINE_HYBRID_CANDIDATES": "50"}, "hybrid",
     ["--k", "5", "10"]),
    ("decay 0.1", {}, "hybrid+decay", ["--decay-weight", "0.1"]),
    ("decay 0.2", {}, "hybrid+decay", ["--decay-weight", "0.2"]),
    ("decay 0.5", {}, "hybrid+decay", ["--decay-weight", "0.5"]),
]


def run_row(data: Path, env: dict[str, str], mode: str, extra: list[str]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "row.json"
        script = Path(__file__).resolve().parent / "locomo_recall.py"
        subprocess.run(
            [sys.executable, str(script), "--data", str(data), "--out", str(out),
             "--modes", mode, *extra],
            env={**os.environ, **env}, check=True, stdout=subprocess.DEVNULL,
        )
        result: dict[str, Any] = json.loads(out.read_text())["modes"][mode]
        return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "locomo_ablation.json")
    parser.add_argument("--rows", nargs="+", metavar="NAME", choices=[r[0] for r in ROWS],
                        help="run only these rows (default: all)")
    args = parser.parse_args(argv)
    rows = []
    for name, env, mode, extra in ROWS:
        if args.rows and name not in args.rows:
            continue
        result = run_row(args.data, env, mode, extra)
        recall = {k: v["overall"] for k, v in result.items() if k.startswith("recall@")}
        rows.append({"name": name, "env": env, "mode": mode, "args": extra, "recall": recall,
                     "by_category@10": result["recall@10"]})
        print(f"{name:28} " + "  ".join(f"{k} {v:5.1f}" for k, v in recall.items()), flush=True)
    commit, dirty = git_state()
    write_json({"benchmark": "locomo_ablation", "rows": rows, "data": str(args.data),
                "commit": commit, "dirty": dirty, "machine": machine_info(),
                "timestamp": datetime.now(UTC).isoformat()}, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
