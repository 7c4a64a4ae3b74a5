"""Backup and restore on the real embedded Redis, to a directory and to a real S3 API
(SeaweedFS on 127.0.0.1): round trips give identical memories, vectors and search results;
a forgotten user's backup cannot be decrypted; corrupt or foreign snapshots are refused."""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from memory_engine import AsyncMemoryEngine, EngineConfig, LifecyclePolicy, MemoryEngine, NewMemory
from memory_engine import backup as snapshots
from memory_engine.cli import main as cli_main
from memory_engine.embeddings import SentenceTransformerEmbedder
from memory_engine.exceptions import BackupError, DataKeyMissingError
from memory_engine.security import generate_master_key
from tests.redis_state import raw_state
from tests.s3_server import SeaweedS3

pytestmark = pytest.mark.integration

OLD = 1_600_000_000.0
QUERIES = ["beagle puppy", "cello lessons", "where did we go hiking", "tax filing"]
USERS = {
    "alice": ["I adopted a beagle puppy named Biscuit.", "Biscuit chews my running shoes.",
              "My cello teacher gives lessons on Tuesdays.", "We went hiking near Sintra."],
    "bob": ["The quarterly tax filing for my bakery is due in April.",
            "I practice cello scales every night.", "Hiking in the Alps was the best trip."],
    "c%l_ö": ["a user id that needs escaping, with a beagle too"],
}


def fill(engine: MemoryEngine) -> None:
    for user, texts in USERS.items():
        engine.add_many(user, [NewMemory(t, session_id="s1", name=user.title(),
                                         created_at=OLD + 60 * i, metadata={"i": i})
                               for i, t in enumerate(texts)])
        engine.history_append(user, "chat", [json.dumps({"said": texts[0]})], ttl=3600)
    engine.search("alice", "beagle")  # a recall count to carry over
    engine.flush()
    report = engine.maintain("alice", now=OLD + 400 * 86_400,
                             policy=LifecyclePolicy(min_group=2, budget=2))
    assert report.changes, "maintenance changed nothing: the audit trail would be empty"


def state(client: redis.Redis, prefix: str) -> dict[bytes, Any]:
    """Every user key under ``prefix`` with its content (vectors included), no data keys."""
    return raw_state(client, prefix, skip=(b":meta", b":dek:"), with_ttl=True)


def results(
    engine: MemoryEngine, users: list[str], *, exact: bool = False
) -> dict[tuple[str, str, str], Any]:
    """Every mode's hits for ``users``: vector hits in order with their scores; keyword and
    hybrid hits as the set returned, or in order with scores too with ``exact``.

    RediSearch keeps the BM25 statistics of deleted memories, index-wide (and past its
    garbage collector), so a BM25 score depends on what was deleted before; a restored index
    has no such past. Between two indexes that never deleted anything, all of it must match.
    """
    out: dict[tuple[str, str, str], Any] = {}
    for u in users:
        for q in QUERIES:
            for mode in ("keyword", "vector", "hybrid"):
                hits = [(h.memory.id, h.memory.text, json.dumps(h.memory.metadata),
                         round(h.score, 6)) for h in engine.search(u, q, k=5, mode=mode, now=OLD)]
                keep_order = exact or mode == "vector"
                out[(u, q, mode)] = hits if keep_order else sorted(h[:3] for h in hits)
    return out


def wipe(client: redis.Redis, config: EngineConfig, *, keep_data_keys: bool) -> None:
    """Everything of the engine gone: its index and its keys (data keys kept if asked)."""
    client.execute_command("FT.DROPINDEX", config.index_name, "DD")
    for key in client.scan_iter(match=f"{config.key_prefix}:*", count=1000):
        if not (keep_data_keys and b":dek:" in key):
            client.delete(key)
    assert not [k for k in client.scan_iter(match=f"{config.key_prefix}:mem:*")]


@pytest.fixture
def bucket(s3_server: SeaweedS3) -> Iterator[str]:
    name = f"b{uuid.uuid4().hex[:12]}"
    s3_server.make_bucket(name)
    saved = {k: os.environ.get(k) for k in s3_server.env()}
    os.environ.update(s3_server.env())
    yield f"s3://{name}/backups/nightly"
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def _engine(config: EngineConfig, minilm: SentenceTransformerEmbedder) -> MemoryEngine:
    engine = MemoryEngine(config, embedder=minilm)
    engine.connect()
    return engine


@pytest.mark.parametrize("encrypted", [False, True], ids=["plaintext", "encrypted"])
@pytest.mark.parametrize("where", ["directory", "s3"])
def test_all_users_round_trip_is_identical(
    config: EngineConfig, minilm: SentenceTransformerEmbedder, redis_client: redis.Redis,
    tmp_path: Path, request: pytest.FixtureRequest, where: str, encrypted: bool,
) -> None:
    if encrypted:
        config = config.with_(master_key=generate_master_key())
    dest = str(tmp_path / "snapshots") if where == "directory" else request.getfixturevalue(
        "bucket")
    engine = _engine(config, minilm)
    fill(engine)
    before = state(redis_client, config.key_prefix)
    hits = results(engine, list(USERS))
    trail = engine.audit_trail("alice")
    report = engine.backup(dest)
    assert sorted(u.user_id for u in report.users) == sorted(USERS)
    assert report.memories == sum(u.memories for u in report.users) > 0
    engine.close()
    # Encrypted data needs its data keys: a backup never holds them (see the README).
    wipe(redis_client, config, keep_data_keys=encrypted)
    engine = _engine(config, minilm)
    assert engine.count("alice") == 0
    got = engine.restore(dest)
    assert sorted(got.restored) == sorted(USERS)
    assert got.unreadable == {}
    assert state(redis_client, config.key_prefix) == before
    assert results(engine, list(USERS)) == hits
    assert [t for _, t in engine.history_read("bob", "chat")] == [
        json.dumps({"said": USERS["bob"][0]})]
    assert engine.audit_trail("alice") == trail
    # Once more from the restored state: every mode, in order, with every score.
    exact = results(engine, list(USERS), exact=True)
    engine.close()
    wipe(redis_client, config, keep_data_keys=encrypted)
    engine = _engine(config, minilm)
    engine.restore(dest)
    assert state(redis_client, config.key_prefix) == before  # before searches record recalls
    assert results(engine, list(USERS), exact=True) == exact
    engine.close()
    redis_client.execute_command("FT.DROPINDEX", config.index_name, "DD")


@pytest.mark.parametrize("where", ["directory", "s3"])
def test_one_user_round_trip_leaves_the_others_alone(
    engine: MemoryEngine, config: EngineConfig, redis_client: redis.Redis, tmp_path: Path,
    request: pytest.FixtureRequest, where: str,
) -> None:
    dest = str(tmp_path) if where == "directory" else request.getfixturevalue("bucket")
    fill(engine)
    alice_before = {k: v for k, v in state(redis_client, config.key_prefix).items()
                    if b"{alice}" in k}
    alice_hits = results(engine, ["alice"])
    report = engine.backup(dest, user_id="alice")
    assert [u.user_id for u in report.users] == ["alice"]
    engine.forget_user("alice")
    engine.add("bob", "bob learns something new after the backup")
    bob_before = results(engine, ["bob"])
    assert engine.restore(dest, user_id="alice").restored == ["alice"]
    after = state(redis_client, config.key_prefix)
    assert {k: v for k, v in after.items() if b"{alice}" in k} == alice_before
    assert results(engine, ["alice"]) == alice_hits
    assert results(engine, ["bob"]) == bob_before
    assert engine.count("bob") == len(USERS["bob"]) + 1


def test_a_forgotten_user_stays_unreadable_in_older_backups(
    config: EngineConfig, minilm: SentenceTransformerEmbedder, redis_client: redis.Redis,
    tmp_path: Path,
) -> None:
    config = config.with_(master_key=generate_master_key())
    engine = _engine(config, minilm)
    fill(engine)
    bob_hits = results(engine, ["bob"])
    report = engine.backup(tmp_path)
    engine.forget_user("alice")
    got = engine.restore(tmp_path)
    assert sorted(got.restored) == ["bob", "c%l_ö"]
    assert list(got.unreadable) == ["alice"]
    assert "cannot be decrypted" in got.unreadable["alice"]
    assert engine.count("alice") == 0
    assert results(engine, ["bob"]) == bob_hits
    # The file itself: sealed under a key that no longer exists anywhere.
    entry = next(u for u in report.users if u.user_id == "alice")
    blob = (tmp_path / entry.file).read_bytes()
    core = engine._ready().core
    with pytest.raises(DataKeyMissingError):
        snapshots.unpack_user(core, report.snapshot_id, entry, blob)
    # The backup files hold no plaintext of anyone.
    files = b"".join(p.read_bytes() for p in tmp_path.rglob("*") if p.is_file())
    for texts in USERS.values():
        for text in texts:
            assert text.encode() not in files
            assert text.split()[-1].encode() not in files
    engine.close()
    redis_client.execute_command("FT.DROPINDEX", config.index_name, "DD")


def _rewrite_manifest(path: Path, **changes: Any) -> None:
    body = json.loads(path.read_text())
    body.update(changes)
    body["checksum"] = snapshots._checksum(body)
    path.write_text(json.dumps(body))


def test_corrupt_and_foreign_snapshots_are_refused_before_anything_is_written(
    engine: MemoryEngine, tmp_path: Path, minilm: SentenceTransformerEmbedder,
    config: EngineConfig,
) -> None:
    fill(engine)
    report = engine.backup(tmp_path)
    manifest = tmp_path / report.snapshot_id / "manifest.json"
    engine.add("alice", "written after the backup")
    count = engine.count("alice")
    # A flipped byte in a user file: the checksum catches it.
    entry = next(u for u in report.users if u.user_id == "alice")
    data = bytearray((tmp_path / entry.file).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / entry.file).write_bytes(bytes(data))
    with pytest.raises(BackupError, match="corrupt"):
        engine.restore(tmp_path, user_id="alice")
    assert engine.count("alice") == count
    # An edited manifest.
    original = manifest.read_text()
    manifest.write_text(original.replace('"memories": 1', '"memories": 9'))
    with pytest.raises(BackupError, match="checksum"):
        engine.restore(tmp_path)
    manifest.write_text(original)
    # Another schema version, with a valid checksum: refused with a clear message.
    _rewrite_manifest(manifest, schema_version=99)
    with pytest.raises(BackupError, match="schema version 99"):
        engine.restore(tmp_path)
    manifest.write_text(original)
    # An encrypted engine does not take a plaintext snapshot.
    secure = MemoryEngine(config.with_(master_key=generate_master_key(),
                                       index_name=config.index_name + "e",
                                       key_prefix=config.key_prefix + "e"), embedder=minilm)
    with secure, pytest.raises(BackupError, match="not encrypted"):
        secure.restore(tmp_path)
    with pytest.raises(BackupError, match="no snapshot"):
        engine.restore(tmp_path / "empty")
    with pytest.raises(BackupError, match="has no user"):
        engine.restore(tmp_path, user_id="nobody")
    assert engine.count("alice") == count


def test_cli_backup_and_restore(
    engine: MemoryEngine, config: EngineConfig, redis_url: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fill(engine)
    before = results(engine, ["bob"])
    base = ["--redis-url", redis_url, "--index", config.index_name]
    assert cli_main([*base, "backup", "--to", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert ": 3 users, " in out
    engine.forget_user("bob")
    assert cli_main([*base, "restore", "--from", str(tmp_path), "--user", "bob", "--quiet"]) == 0
    assert ": 1 user, " in capsys.readouterr().out
    assert results(engine, ["bob"]) == before
    assert cli_main([*base, "restore", "--from", str(tmp_path / "nothing")]) == 2
    assert "no snapshot" in capsys.readouterr().err


def test_async_backup_restore_and_scheduled_backups(
    config: EngineConfig, minilm: SentenceTransformerEmbedder, redis_client: redis.Redis,
    tmp_path: Path, bucket: str,
) -> None:
    sync = _engine(config, minilm)
    fill(sync)
    hits = results(sync, list(USERS))

    async def run() -> None:
        async with AsyncMemoryEngine(config, embedder=minilm) as engine:
            report = await engine.backup(bucket, progress=False)
            assert len(report.users) == 3
            await engine.forget_user("bob")
            got = await engine.restore(bucket)
            assert sorted(got.restored) == sorted(USERS)
            scheduled = await engine.start_backups(tmp_path, interval=0.2)
            deadline = time.time() + 30
            while scheduled.runs < 2 and time.time() < deadline:
                await asyncio.sleep(0.1)
            await scheduled.stop()
            assert scheduled.runs >= 2
            assert scheduled.failures == 0
            task = await engine.start_backup(tmp_path / "task", user_id="alice")
            assert [u.user_id for u in (await task).users] == ["alice"]

    asyncio.run(run())
    assert results(sync, list(USERS)) == hits
    manifests = sorted(tmp_path.glob("*/manifest.json"))
    assert len(manifests) >= 2
    threaded = sync.start_backups(tmp_path / "threaded", interval=0.2)
    deadline = time.time() + 30
    while threaded.runs < 1 and time.time() < deadline:
        time.sleep(0.1)
    threaded.stop()
    assert threaded.runs >= 1
    assert sync.start_backup(tmp_path / "once").result(timeout=60).memories > 0
    sync.close()
    redis_client.execute_command("FT.DROPINDEX", config.index_name, "DD")
