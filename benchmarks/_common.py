"""Helpers every benchmark shares: a private embedded server, provenance, JSON output."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from memory_engine import EmbeddedServer, EngineConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"


def private_server(stack: contextlib.ExitStack) -> str:
    """Start an embedded server in a temporary data directory; stopped when ``stack`` closes."""
    home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="memory-engine-bench-")))
    server = EmbeddedServer(home)
    state = server.start(persistent=True)
    stack.callback(server.stop)
    return state.url


def drop_index(client: redis.Redis, config: EngineConfig) -> None:
    """Drop the benchmark's index with its documents, and the engine's metadata key."""
    with contextlib.suppress(redis.ResponseError):  # never created: nothing to drop
        client.execute_command("FT.DROPINDEX", config.index_name, "DD")
    client.delete(f"{config.key_prefix}:meta")


def info_value(flat: Sequence[Any], name: str) -> Any:
    """A top-level value of a RESP2 ``FT.INFO`` / key-value reply."""
    for key, value in zip(flat[::2], flat[1::2], strict=False):
        if (key.decode() if isinstance(key, bytes) else key) == name:
            return value.decode() if isinstance(value, bytes) else value
    return None


def server_versions(client: redis.Redis) -> dict[str, str | None]:
    search: str | None = None
    with contextlib.suppress(redis.ResponseError):
        for module in client.execute_command("MODULE", "LIST"):
            if str(info_value(module, "name")).lower() in {"search", "ft"}:
                ver = int(info_value(module, "ver"))  # e.g. 21005 for 2.10.5
                search = f"{ver // 10000}.{ver // 100 % 100}.{ver % 100}"
    return {"redis": str(client.info("server").get("redis_version")), "search_module": search}


def git_state() -> tuple[str, bool]:
    """HEAD commit and whether tracked files differ from it; ("unknown", True) without git.

    Runs with optional locks off, so it never takes the index lock of a concurrent commit.
    """
    env = {**os.environ, "GIT_OPTIONAL_LOCKS": "0"}

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
            check=True, timeout=10,
        ).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return "unknown", True
    return commit, dirty


def machine_info() -> dict[str, Any]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    torch = sys.modules.get("torch")  # loaded with the model; its thread count shapes e2e
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "cpus_usable": affinity,
        "cpu_model": model,
        "torch_threads": torch.get_num_threads() if torch is not None else None,
    }


def write_json(report: dict[str, Any], out: Path) -> None:
    """Write atomically (a ``.tmp`` file, then rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out)
