"""The benchmark scripts run end to end (``--quick``) and write sane reports and plots."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis

pytestmark = pytest.mark.integration

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "recall_latency.py"
NAMES = {"raw_knn", "raw_bm25", "raw_count", "raw_hybrid_bm25", "raw_hybrid_knn", "raw_hybrid",
         "raw_hybrid_all", "raw_hybrid_all_kept", "vector", "keyword", "hybrid", "vector_e2e",
         "hybrid_e2e", "hybrid_after_sleep", "hybrid_after_encoder", "query_embedding",
         "query_embedding_torch"}


def run_quick(script: Path, redis_url: str, out: Path, *args: str) -> dict[str, Any]:
    """Run a benchmark with ``--quick`` (and ``args``) on the test Redis; its report, once the
    script has exited 0 and written a non-empty PNG beside the JSON."""
    proc = subprocess.run(
        [sys.executable, str(script), "--quick", "--redis-url", redis_url, "--out", str(out),
         *args],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    png = out.with_suffix(".png")
    assert png.is_file()
    assert png.stat().st_size > 0
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def test_recall_latency_quick(redis_url: str, tmp_path: Path) -> None:
    report = run_quick(SCRIPT, redis_url, tmp_path / "r.json", "--no-peers")
    assert report["benchmark"] == "recall_latency"
    assert report["params"]["quick"] is True
    assert report["params"]["vectors"] == "synthetic clusters"
    assert report["params"]["write_order"] == "user by user"
    results = {r["name"]: r for r in report["results"] if r["clients"] == 1}
    assert set(results) == NAMES
    crowd = [r for r in report["results"] if r["clients"] > 1]
    assert {(r["name"], r["clients"]) for r in crowd} == {
        (name, n) for name in ("hybrid", "hybrid_e2e") for n in (8, 32)}
    for r in crowd:
        assert r["calls"] == report["params"]["queries"]
        assert 0 < r["p50_ms"] <= r["p99_ms"]
        assert r["qps"] > 0
    for name, r in results.items():
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"], (name, r)
        assert r["qps"] > 0, name
    for mode in ("vector", "hybrid"):
        assert results[mode]["query_cache_hit_rate"] == 1.0  # query embedding excluded
        assert results[f"{mode}_e2e"]["query_cache_hit_rate"] == 0.0  # embedding included
    for mode in ("vector", "keyword", "hybrid"):  # the raw floor is the engine's own command
        assert report["consistency"][f"{mode}_hits_in_raw"] == 1.0
        assert report["consistency"][f"{mode}_mean_hits"] > 0
    assert report["ratios"]["hybrid_over_raw_hybrid_p50"] > 0
    # the target ratio: hybrid over the sum of the three FT.SEARCH calls it makes
    raw_sum = sum(results[n]["p50_ms"] for n in ("raw_count", "raw_hybrid_bm25", "raw_hybrid_knn"))
    assert report["ratios"]["hybrid_over_raw_calls_p50"] == pytest.approx(
        results["hybrid"]["p50_ms"] / raw_sum, abs=1e-3)
    paired = report["consistency"]["paired"]  # the same ratio, floor and engine taking turns
    assert paired["blocks"] == len(paired["ratio_per_block"]) >= 1
    assert set(paired["p50_ms"]) == {"raw_count", "raw_hybrid_bm25", "raw_hybrid_knn", "hybrid"}
    assert all(r > 0 for r in paired["ratio_per_block"])
    assert paired["hybrid_over_raw_calls_p50"] == pytest.approx(
        paired["p50_ms"]["hybrid"] / sum(v for n, v in paired["p50_ms"].items() if n != "hybrid"),
        abs=2e-3)
    e2e = report["consistency"]["paired_e2e"]  # hybrid_e2e over its parts, taking turns
    assert set(e2e["p50_ms"]) == {"query_embedding", "hybrid", "hybrid_e2e"}
    assert e2e["blocks"] == len(e2e["ratio_per_block"]) >= 1
    assert e2e["hybrid_e2e_over_query_embedding_plus_hybrid_p50"] == pytest.approx(
        e2e["p50_ms"]["hybrid_e2e"] / (e2e["p50_ms"]["query_embedding"] + e2e["p50_ms"]["hybrid"]),
        abs=2e-3)
    # the final read is one more round trip on top of the search pair
    assert results["raw_hybrid_all"]["p50_ms"] > 0
    assert report["ratios"]["hybrid_over_raw_hybrid_all_p50"] > 0
    assert results["raw_hybrid_all_kept"]["p50_ms"] > 0
    assert report["ratios"]["hybrid_over_raw_hybrid_all_kept_p50"] > 0
    # the engine's query path (ONNX with the fast extra) gives the reference model's vectors
    assert report["consistency"]["query_backend"] == "onnx"
    assert report["consistency"]["query_cosine_min_vs_torch"] >= 0.99
    assert report["ratios"]["hybrid_e2e_over_query_embedding_plus_hybrid_p50"] > 0
    assert report["peers"] == {}
    assert not any("peer" in name for name in report["ratios"])


def test_recall_latency_can_embed_the_memories_texts(
    redis_url: str, tmp_path: Path, minilm: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # --embed-text: the same sentences, each memory's vector the model's embedding of it
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import recall_latency as bench

    def draw(texts: Any) -> list[Any]:
        rng = np.random.default_rng(3)
        corpus = bench.make_corpus(rng, 40, 2, minilm.dims)
        if texts is not None:
            corpus = bench.dataclasses.replace(corpus, texts=texts)
        return bench.user_memories(rng, corpus, 0, 1_000.0)

    synthetic, embedded = draw(None), draw(bench.TextVectors(minilm))
    assert [m.text for m in embedded] == [m.text for m in synthetic]
    assert [m.created_at for m in embedded] == [m.created_at for m in synthetic]
    model = np.asarray(minilm.embed_documents([m.text for m in embedded]))
    stored = np.stack([np.asarray(m.embedding) for m in embedded])
    assert np.allclose(stored, model, atol=1e-5)
    assert not np.allclose(np.stack([np.asarray(m.embedding) for m in synthetic]), model,
                           atol=1e-2)
    report = run_quick(SCRIPT, redis_url, tmp_path / "text.json", "--no-peers", "--embed-text",
                       "--memories", "200", "--users", "5", "--queries", "20",
                       "--warmup", "2")
    assert report["params"]["vectors"] == "model (--embed-text)"
    assert report["params"]["memories"] == 200
    for mode in ("vector", "keyword", "hybrid"):
        assert report["consistency"][f"{mode}_hits_in_raw"] == 1.0


def test_recall_latency_can_write_users_in_turn(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # --interleave: the same memories, one session per user in turn; the peers' copy too
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import recall_latency as bench

    assert list(bench.taking_turns([3, 0, 5], 2)) == [
        (0, slice(0, 2)), (2, slice(0, 2)), (0, slice(2, 4)), (2, slice(2, 4)), (2, slice(4, 6))]

    def written(interleave: bool) -> list[tuple[str, list[Any]]]:
        rng = np.random.default_rng(5)
        corpus = bench.make_corpus(rng, 300, 4, 8)
        return list(bench.write_batches(rng, corpus, 1_000.0, interleave))

    def peers(interleave: bool) -> list[tuple[str, list[str]]]:
        rng = np.random.default_rng(5)
        corpus = bench.make_corpus(rng, 300, 4, 8)
        return [(m.user, m.texts) for m in bench.peer_batches(rng, corpus, interleave)]

    def per_user(batches: list[tuple[str, list[Any]]]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for user, items in batches:
            out.setdefault(user, []).extend(items)
        return out

    whole, turns = written(False), written(True)
    assert len({user for user, _ in turns[:4]}) == 4  # every user once before anyone again
    assert all(len(items) <= bench.SESSION_LENGTH for _, items in turns)
    mine = per_user(whole)
    assert {u: [(m.text, m.created_at) for m in ms] for u, ms in per_user(turns).items()} == {
        u: [(m.text, m.created_at) for m in ms] for u, ms in mine.items()}
    assert [user for user, _ in peers(True)] == [user for user, _ in turns]
    assert per_user(peers(True)) == per_user(peers(False)) == {
        u: [m.text for m in ms] for u, ms in mine.items()}
    report = run_quick(SCRIPT, redis_url, tmp_path / "turns.json", "--no-peers", "--interleave",
                       "--memories", "400", "--users", "8", "--queries", "20", "--warmup", "2")
    assert report["params"]["write_order"].startswith("interleaved")
    assert report["params"]["memories"] == 400
    for mode in ("vector", "keyword", "hybrid"):
        assert report["consistency"][f"{mode}_hits_in_raw"] == 1.0


PEERS = ("langchain_redis", "redisvl_history", "mem0")


@pytest.mark.bench_peers  # needs the bench extra: `make bench-test`
def test_recall_latency_quick_peers(
    redis_url: str, redis_client: redis.Redis, tmp_path: Path
) -> None:
    # _peers.py fails the run unless every peer finds >= 1 of the user's memories for the
    # first query, so a run that exits 0 had all three peers searching real data
    report = run_quick(SCRIPT, redis_url, tmp_path / "peers.json", "--peers")
    results = {r["name"]: r for r in report["results"] if r["clients"] == 1}
    assert set(results) == NAMES | {f"peer_{p}{e}" for p in PEERS for e in ("", "_e2e")}
    for peer in PEERS:
        for row, mine in ((f"peer_{peer}", "hybrid"), (f"peer_{peer}_e2e", "hybrid_e2e")):
            r = results[row]
            assert r["calls"] == report["params"]["queries"], row
            assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"], (row, r)
            assert r["qps"] > 0, row
            ratio = report["ratios"][f"{mine}_over_{row}_p50"]
            assert ratio == round(results[mine]["p50_ms"] / r["p50_ms"], 3), row
        # the cached row is the peer's search alone: the model ran in the e2e row only
        assert results[f"peer_{peer}"]["p50_ms"] < results[f"peer_{peer}_e2e"]["p50_ms"], peer
        assert report["peers"][peer]["version"], peer
        paired = report["peers"][peer]["paired"]  # the engine and the peer taking turns
        for suffix in ("", "_e2e"):
            theirs = paired["p50_ms"][f"peer_{peer}{suffix}"]
            for mine in ("vector", "hybrid"):
                assert paired[f"{mine}{suffix}_over_peer_{peer}{suffix}_p50"] == pytest.approx(
                    paired["p50_ms"][f"{mine}{suffix}"] / theirs, abs=2e-3), (peer, mine)
                blocks = paired[f"{mine}{suffix}_over_peer_{peer}{suffix}_per_block"]
                assert len(blocks) == paired["blocks"] >= 1
    # every peer dropped its index and documents
    indexes = [i.decode() for i in redis_client.execute_command("FT._LIST")]
    assert not [i for i in indexes if i.startswith("peer_")]
    assert not list(redis_client.scan_iter(match="*peer_*", count=1000))


def test_peer_checks_fail_loudly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    from _peers import PeerCheckError, _check, _Vectors

    with pytest.raises(PeerCheckError, match="no hit"):
        _check("peer", "u1", [], {"a memory"})
    with pytest.raises(PeerCheckError, match="not u1's"):
        _check("peer", "u1", ["a memory", "someone else's"], {"a memory"})
    _check("peer", "u1", ["a memory"], {"a memory", "another"})

    class Fixed:  # an Embedder stand-in: the precomputed path must never reach it
        dims, name = 2, "fixed"

        def embed_query(self, text: str) -> Any:
            raise AssertionError("the model ran during a precomputed ingest")

    vectors = _Vectors(Fixed())  # type: ignore[arg-type]

    def ingest(given: Any, texts: list[str]) -> list[list[float]]:
        with vectors.precomputed(given):
            return [vectors(t) for t in texts]

    given = np.eye(2, dtype=np.float32)
    assert ingest(given, ["x", "y"]) == given.tolist()
    with pytest.raises(PeerCheckError, match="fewer"):
        ingest(given, ["x"])
    with pytest.raises(PeerCheckError, match="more"):
        ingest(given[:1], ["x", "y"])


CHAT_SCRIPT = SCRIPT.with_name("chat_history.py")
CHAT_NAMES = {"add_message_remember_off", "add_message_remember_on", "add_message_sync_embed",
              "embed_one"}


def test_chat_history_benchmark_quick(redis_url: str, tmp_path: Path) -> None:
    report = run_quick(CHAT_SCRIPT, redis_url, tmp_path / "chat.json")
    assert report["benchmark"] == "chat_history"
    assert report["params"]["quick"] is True
    results = {r["name"]: r for r in report["results"]}
    assert set(results) == CHAT_NAMES
    for name, r in results.items():
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"], (name, r)
        assert r["per_s"] > 0, name
        assert r["calls"] == report["params"]["messages"], name
    background = report["background"]
    assert background["long_term_written"] == background["expected"] > 0
    assert background["flush_s"] >= 0
    assert set(report["ratios"]) >= {"remember_on_over_off_p50", "sync_embed_over_remember_on_p50"}


LIFECYCLE_SCRIPT = SCRIPT.with_name("lifecycle.py")


def test_lifecycle_benchmark_quick(redis_url: str, tmp_path: Path) -> None:
    report = run_quick(LIFECYCLE_SCRIPT, redis_url, tmp_path / "lifecycle.json")
    assert report["benchmark"] == "lifecycle"
    assert report["params"]["quick"] is True
    assert 0 < report["baseline_recall@10"] <= 100
    points = {(p["summarizer"], p["budget_fraction"], p["consolidate"]): p
              for p in report["points"]}
    assert set(points) == {("extractive", None, True), ("extractive", 0.3, True),
                           ("llm", None, True), ("llm", 0.3, True), ("none", 0.3, False)}
    turns = report["params"]["turns"]
    for key, p in points.items():
        assert 0 < p["kept"] < turns, key
        assert p["kept_fraction"] == round(p["kept"] / turns, 4)
        assert 0 <= p["recall@10"] <= 100
        if key[1] is not None:
            assert p["kept"] <= 0.3 * turns, key  # the budget held for every user
        assert (p["summaries"] > 0) == key[2], key
    last = report["points"][-1]
    assert last["after_undo"]["memories"] == turns  # undo brought every turn back


INGEST_SCRIPT = SCRIPT.with_name("ingest.py")


def test_ingest_benchmark_quick(redis_url: str, tmp_path: Path) -> None:
    report = run_quick(INGEST_SCRIPT, redis_url, tmp_path / "ingest.json")
    assert report["benchmark"] == "ingest"
    assert report["params"]["quick"] is True
    results = {r["name"]: r for r in report["results"]}
    assert set(results) == {"embedding_only", "add_many", "raw_hset"}
    turns = report["params"]["turns"]
    for name, r in results.items():
        assert r["turns"] == turns > 0, name
        assert r["per_s"] == pytest.approx(turns / r["seconds"], rel=0.01), name
    # the storage floor is far faster than the model, and add_many is bounded by both
    assert results["raw_hset"]["per_s"] > results["embedding_only"]["per_s"]
    ratio = report["ratios"]["add_many_over_embedding_only_per_s"]
    assert ratio == pytest.approx(results["add_many"]["per_s"] / results["embedding_only"]["per_s"],
                                  rel=0.01)
    memory = report["memory"]
    assert 0 < memory["float16_bytes_per_memory"] < memory["float32_bytes_per_memory"]


SCALE_SCRIPT = SCRIPT.with_name("scale.py")


def test_scale_benchmark_quick(redis_url: str, tmp_path: Path) -> None:
    # --interleave here; the default order's ingest is checked against it below
    report = run_quick(SCALE_SCRIPT, redis_url, tmp_path / "scale.json", "--interleave")
    assert report["benchmark"] == "scale"
    assert report["params"]["write_order"].startswith("interleaved")
    points = report["points"]
    assert [(p["memories"], p["users"]) for p in points] == [
        (2_000, 100), (6_000, 100), (6_000, 10), (6_000, 1_000)]
    for p in points:
        assert p["indexed"] == p["memories"]
        for name in ("raw_knn", "vector", "hybrid"):
            r = p["results"][name]
            assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"], (p["memories"], name)
        assert 0.9 <= p["vector_recall_at_10_vs_exact"] <= 1.0
        assert p["bytes_per_memory"] > 1_536  # at least the float32 vector itself


def test_scale_ingest_keeps_the_same_memories_in_either_write_order(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # what exact search compares against: each kept user's memories, whichever the order
    monkeypatch.syspath_prepend(str(SCALE_SCRIPT.parent))
    import contextlib

    import scale
    from _common import scratch_engine

    def kept(interleave: bool) -> tuple[dict[str, list[str]], dict[str, Any], list[str]]:
        rng = np.random.default_rng(9)
        with contextlib.ExitStack() as stack:
            engine = scratch_engine(stack, redis_url, redis_client)
            corpus = scale.make_corpus(rng, 90, 3, engine.embedder.dims)
            keep = set(corpus.users[:2])
            order: list[str] = []
            add_many = engine.add_many

            def recorded(user: str, items: Any) -> Any:
                order.append(user)
                return add_many(user, items)

            monkeypatch.setattr(engine, "add_many", recorded)
            _, got = scale.ingest(engine, rng, corpus, keep, interleave=interleave)
            texts = {u: [engine.get(u, i).text for i in ids] for u, (ids, _) in got.items()}
            return texts, {u: matrix for u, (_, matrix) in got.items()}, order

    whole_texts, whole, whole_order = kept(False)
    turn_texts, turns, turn_order = kept(True)
    assert whole_order == sorted(whole_order, key=whole_order.index)  # user by user
    assert len(set(turn_order[:3])) == 3  # every user once before anyone again
    assert turn_order[3] == turn_order[0]  # and again, in the same turn order
    assert set(whole) == set(turns) == set(whole_texts)
    for user in whole:
        assert whole[user].shape[0] == len(whole_texts[user]) > 0
        assert turn_texts[user] == whole_texts[user]
        np.testing.assert_array_equal(turns[user], whole[user])


ENCRYPTION_SCRIPT = SCRIPT.with_name("encryption.py")


def test_encryption_benchmark_quick(redis_url: str, redis_client: redis.Redis,
                                    tmp_path: Path) -> None:
    report = run_quick(ENCRYPTION_SCRIPT, redis_url, tmp_path / "e.json", "--rounds", "2")
    assert report["benchmark"] == "encryption"
    assert report["params"]["quick"] is True
    assert isinstance(report["commit"], str)
    assert isinstance(report["dirty"], bool)
    storage = report["ingest"]["storage_path"]
    assert len(storage["off_turns_s"]) == len(storage["on_turns_s"]) == 2
    assert all(v > 0 for v in storage["off_turns_s"] + storage["on_turns_s"])
    assert storage["best_ratio_on_over_off"] == pytest.approx(
        storage["best_on_turns_s"] / storage["best_off_turns_s"], abs=0.001)
    assert report["ingest"]["end_to_end"]["skipped"] is True  # recorded, not silently absent
    rows = {r["name"]: r for r in report["search"]}
    assert set(rows) == {f"{m}_{s}" for m in ("hybrid", "keyword", "vector") for s in ("off", "on")}
    questions = report["params"]["questions"]
    for name, r in rows.items():
        assert r["calls"] == questions > 0, name
        assert 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"], (name, r)
        assert r["qps"] > 0, name
        # real hits, and every one a turn of the asking user (decrypted metadata included)
        assert 0 < r["mean_hits"] <= 10, name
        assert r["hits_that_are_the_users_turns"] == 1.0, name
    for mode in ("hybrid", "keyword", "vector"):
        assert report["ratios"][f"{mode}_p50_on_over_off"] == pytest.approx(
            rows[f"{mode}_on"]["p50_ms"] / rows[f"{mode}_off"]["p50_ms"], abs=0.001)
    for side in ("off", "on"):
        for mode in ("hybrid", "keyword", "vector"):
            result = report["recall"][side][mode]
            for k in report["params"]["k"]:
                assert all(0 <= v <= 100 for v in result[f"recall@{k}"].values()), (side, mode)
        assert report["checks"][f"query_cache_misses_{side}"] == 0  # query embedding excluded
    for key, delta in report["recall_delta_points"].items():
        mode, k = key.split("@")
        off = report["recall"]["off"][mode][f"recall@{k}"]["overall"]
        on = report["recall"]["on"][mode][f"recall@{k}"]["overall"]
        assert delta == pytest.approx(on - off, abs=0.011), key
    # the blind index finds evidence: keyword recall with encryption on is far above zero
    assert report["recall"]["on"]["keyword"]["recall@10"]["overall"] > 20
    # what Redis holds: ciphertext and a blind TAG index on, plaintext and BM25 text off
    checks = report["checks"]
    turns = report["params"]["turns"]
    assert checks["on"]["memories"] == checks["off"]["memories"] == turns
    assert checks["on"]["text_values_in_plaintext"] == 0
    assert checks["off"]["text_values_in_plaintext"] == turns
    assert "kw" in checks["on"]["index_attributes"]
    assert "text" not in checks["on"]["index_attributes"]
    assert "text" in checks["off"]["index_attributes"]
    # the script dropped every index and key it made
    indexes = [i.decode() for i in redis_client.execute_command("FT._LIST")]
    assert not [i for i in indexes if i.startswith("bench_enc_")]
    assert not list(redis_client.scan_iter(match="bench_enc_*", count=1000))


def test_a_benchmark_stopped_with_sigterm_stops_its_private_server() -> None:
    """``kill`` (or a CI timeout) on a benchmark unwinds it like Ctrl-C: the embedded server
    it started for itself stops too instead of running on, orphaned."""
    child = textwrap.dedent(f"""
        import contextlib, sys, time
        sys.path.insert(0, {str(SCRIPT.parent)!r})
        from _common import private_server
        with contextlib.ExitStack() as stack:
            print(private_server(stack), flush=True)
            time.sleep(120)
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert redis.Redis.from_url(url).ping()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        proc.kill()
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
