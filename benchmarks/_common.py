"""Helpers the benchmarks share: a private embedded server and a scratch index, the timing
loop and its latency summary, common CLI arguments, provenance, and JSON / PNG output."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import redis

from memory_engine import EmbeddedServer, EngineConfig, MemoryEngine

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
LOCOMO_DEV = REPO_ROOT.parent / "shared" / "data" / "locomo_dev.json"  # ../shared beside the repo


def private_server(stack: contextlib.ExitStack) -> str:
    """Start an embedded server in a temporary data directory; stopped when ``stack`` closes,
    also when the benchmark is stopped with SIGTERM (see :func:`exit_on_sigterm`)."""
    exit_on_sigterm()
    home = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="memory-engine-bench-")))
    server = EmbeddedServer(home)
    state = server.start(persistent=True)
    stack.callback(server.stop)
    return state.url


def exit_on_sigterm() -> None:
    """Make SIGTERM (``kill``, ``timeout``, a CI runner) unwind the main thread like Ctrl-C
    does, so ``with`` blocks and exit stacks run: otherwise the process dies on the spot and
    the private server it started keeps running, orphaned, in its temporary directory."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def open_redis(stack: contextlib.ExitStack, redis_url: str | None) -> tuple[str, redis.Redis]:
    """The URL to use (``redis_url``, or a private server's) and a RESP2 client on it.

    The client is closed, and a private server stopped, when ``stack`` closes.
    """
    url = redis_url or private_server(stack)
    client = redis.Redis.from_url(url, protocol=2)
    stack.callback(client.close)
    return url, client


def drop_index(client: redis.Redis, config: EngineConfig) -> None:
    """Drop the benchmark's index with its documents, and the engine's metadata key."""
    # Dropping a million documents blocks Redis for longer than redis-py's default 5 s read
    # timeout: a client of its own, with a long one.
    pool = client.connection_pool
    slow_pool = redis.ConnectionPool(connection_class=pool.connection_class,
                                     **{**pool.connection_kwargs, "socket_timeout": 600.0})
    with redis.Redis(connection_pool=slow_pool) as slow, contextlib.suppress(redis.ResponseError):
        slow.execute_command("FT.DROPINDEX", config.index_name, "DD")  # never created: no-op
    client.delete(f"{config.key_prefix}:meta")


def drop_prefix(client: redis.Redis, config: EngineConfig) -> None:
    """:func:`drop_index`, then every other key of the prefix (chat histories, ...)."""
    drop_index(client, config)
    keys = list(client.scan_iter(match=f"{config.key_prefix}:*", count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])


def scratch_engine(
    stack: contextlib.ExitStack,
    url: str,
    client: redis.Redis,
    cleanup: Callable[[redis.Redis, EngineConfig], None] = drop_index,
) -> MemoryEngine:
    """A connected engine on an index and key prefix of its own (``bench_<12 hex>``).

    Closed when ``stack`` closes, then ``cleanup(client, config)`` drops what it wrote.
    Connecting loads the bundled model and creates the index.
    """
    name = f"bench_{uuid.uuid4().hex[:12]}"
    config = EngineConfig(redis_url=url, index_name=name, key_prefix=name)
    stack.callback(cleanup, client, config)
    engine = stack.enter_context(MemoryEngine(config))
    engine.connect()
    return engine


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
    """The commit this process runs: HEAD and whether tracked files differed from it when
    the benchmark started (the code is imported then; a commit made during a long run must
    not be credited with its numbers). ("unknown", True) without git."""
    return _STARTED


def _head() -> tuple[str, bool]:
    """HEAD commit and whether tracked files differ from it, read now.

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


_STARTED = _head()


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


def provenance(benchmark: str, server: dict[str, str | None]) -> dict[str, Any]:
    """The opening fields of a report: ``benchmark``, then the ``commit`` and ``dirty`` of
    :func:`git_state`, the ``machine`` and the ``server`` versions."""
    commit, dirty = git_state()
    return {
        "benchmark": benchmark,
        "commit": commit,
        "dirty": dirty,
        "machine": machine_info(),
        "server": server,
    }


def write_json(report: dict[str, Any], out: Path) -> None:
    """Write atomically (a ``.tmp`` file, then rename)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out)


# --- Timing ------------------------------------------------------------------------------


@dataclass(slots=True)
class Measurement:
    """Latencies of one timed loop; ``extra`` holds fields a benchmark adds to its summary."""

    name: str
    latencies_ms: npt.NDArray[np.float64]
    wall_s: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def calls(self) -> int:
        return len(self.latencies_ms)

    def latency_summary(self) -> dict[str, float]:
        """``p50_ms``, ``p95_ms``, ``p99_ms``, ``mean_ms`` and ``max_ms``, to 4 decimals."""
        p50, p95, p99 = np.percentile(self.latencies_ms, [50, 95, 99])
        return {
            "p50_ms": round(float(p50), 4),
            "p95_ms": round(float(p95), 4),
            "p99_ms": round(float(p99), 4),
            "mean_ms": round(float(self.latencies_ms.mean()), 4),
            "max_ms": round(float(self.latencies_ms.max()), 4),
        }

    def per_second(self) -> float:
        """Calls per second of the loop's wall time, to 2 decimals."""
        return round(self.calls / self.wall_s, 2)


def timed(
    name: str, calls: Sequence[Callable[[], object]],
    before: Sequence[Callable[[], object]] | None = None,
) -> Measurement:
    """Time each call once, in order, with ``time.perf_counter``. With ``before``, its i-th
    callable runs untimed just before the i-th call, and the wall time (hence QPS) is the sum
    of the timed calls alone."""
    latencies = np.empty(len(calls), dtype=np.float64)
    clock = time.perf_counter
    start = clock()
    for i, call in enumerate(calls):
        if before is not None:
            before[i]()
        t0 = clock()
        call()
        latencies[i] = clock() - t0
    wall = float(latencies.sum()) if before is not None else clock() - start
    return Measurement(name, latencies * 1000.0, wall)


# --- Command line ------------------------------------------------------------------------


def add_size_arguments(
    parser: argparse.ArgumentParser,
    full: Mapping[str, int],
    quick: Mapping[str, int],
    about: Mapping[str, str],
) -> None:
    """One integer option per key of ``full`` (``--users`` for ``users``), in that order.

    Its help is ``about[key]`` (if any), then the full run's default and, where it differs,
    the quick run's; :func:`apply_defaults` fills the options left unset.
    """
    for name, default in full.items():
        help_text = f"default {default:,}"
        if quick[name] != default:
            help_text += f" ({quick[name]:,} with --quick)"
        if name in about:
            help_text = f"{about[name]}; {help_text}"
        parser.add_argument(f"--{name}", type=int, help=help_text)


def add_common_arguments(parser: argparse.ArgumentParser, *, seed_of: str, quick_run: str) -> None:
    """``--seed``, ``--quick``, ``--out`` and ``--redis-url``.

    ``seed_of`` names what the seed draws (``"data"``), ``quick_run`` the size of a quick run
    (``"~200 messages"``); both only show in ``--help``.
    """
    parser.add_argument("--seed", type=int, default=42, help=f"{seed_of} seed (default 42)")
    parser.add_argument("--quick", action="store_true",
                        help=f"a small run ({quick_run}) for CI and smoke tests")
    parser.add_argument("--out", type=Path, help="result JSON; the PNG is written next to it")
    parser.add_argument("--redis-url", help="a Redis with the search module; default: start a "
                        "private embedded server in a temporary directory")


def common_params(args: argparse.Namespace) -> dict[str, Any]:
    """The report's record of :func:`add_common_arguments`: ``quick``, and ``redis``
    (``"external"`` with ``--redis-url``, else ``"embedded"``)."""
    return {"quick": bool(args.quick), "redis": "external" if args.redis_url else "embedded"}


def apply_defaults(
    args: argparse.Namespace, full: Mapping[str, int], quick: Mapping[str, int], stem: str
) -> None:
    """Fill the size arguments left unset from ``quick`` (with ``--quick``) or ``full``, and
    ``--out`` with ``benchmarks/results/<stem>.json`` (``<stem>_quick.json`` with ``--quick``)."""
    sizes = quick if args.quick else full
    for name, default in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.out is None:
        args.out = RESULTS_DIR / (f"{stem}_quick.json" if args.quick else f"{stem}.json")


# --- Output ------------------------------------------------------------------------------


def plot_latency_bars(
    results: Sequence[Mapping[str, Any]],
    path: Path,
    title: str,
    *,
    tick_labels: Sequence[str] | None = None,
    title_size: float | None = None,
) -> None:
    """Grouped bars of ``p50_ms`` and ``p99_ms`` per result, log scale, saved as a PNG.

    The bars are labelled with the results' names unless ``tick_labels`` are given; the title
    has the default size unless ``title_size`` is given.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["name"] for r in results]
    x = np.arange(len(names))
    width = 0.38
    # ~0.65 inch per pair of bars, so neither the value labels nor the names overlap
    fig, ax = plt.subplots(figsize=(max(9.5, 0.65 * len(names) + 1.5), 4.5))
    for offset, key, color in ((-width / 2, "p50_ms", "#4c72b0"), (width / 2, "p99_ms", "#dd8452")):
        values = [r[key] for r in results]
        bars = ax.bar(x + offset, values, width, label=key.removesuffix("_ms"), color=color)
        ax.bar_label(bars, labels=[f"{v:.2f}" for v in values], fontsize=7, padding=2)
    ax.set_xticks(x, names if tick_labels is None else list(tick_labels), fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("latency (ms, log scale)")
    if title_size is None:
        ax.set_title(title)
    else:
        ax.set_title(title, fontsize=title_size)
    ax.legend()
    ax.margins(y=0.2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def print_ratios(ratios: Mapping[str, float]) -> None:
    """A blank line, then one ``name  value x`` line per ratio."""
    print()
    width = max([34, *(len(name) + 2 for name in ratios)])
    for name, value in ratios.items():
        print(f"{name:<{width}}{value:>8.2f}x")


def save_report(
    report: dict[str, Any],
    out: Path,
    plot: Callable[[dict[str, Any], Path], None],
    print_table: Callable[[dict[str, Any]], None],
) -> None:
    """Write the JSON to ``out`` and ``plot`` to the PNG next to it, print the table, then
    both paths."""
    write_json(report, out)
    png = out.with_suffix(".png")
    plot(report, png)
    print_table(report)
    print(f"\nwrote {out} and {png}")
