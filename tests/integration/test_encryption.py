"""Encryption at rest on the real embedded Redis: nothing readable on disk, search intact,
tampering refused, forgetting destroys the key."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from memory_engine import EngineConfig, MemoryEngine
from memory_engine.embeddings import SentenceTransformerEmbedder
from memory_engine.exceptions import DataKeyMissingError, DecryptionError
from memory_engine.security import generate_master_key
from tests.redis_state import drop_index

pytestmark = pytest.mark.integration


@pytest.fixture
def secure_config(config: EngineConfig) -> EngineConfig:
    return config.with_(master_key=generate_master_key())


@pytest.fixture
def secure(
    secure_config: EngineConfig, minilm: SentenceTransformerEmbedder, redis_client: redis.Redis
) -> Iterator[MemoryEngine]:
    with MemoryEngine(secure_config, embedder=minilm) as eng:
        eng.connect()
        yield eng
    drop_index(redis_client, secure_config)


def _marker() -> str:
    return f"zq{uuid.uuid4().hex[:10]}"


def _wait_persisted(client: redis.Redis) -> None:
    """BGSAVE and an AOF rewrite, both finished."""
    client.bgsave()
    client.bgrewriteaof()
    deadline = time.time() + 60
    while time.time() < deadline:
        persistence = client.info("persistence")
        if not (persistence["rdb_bgsave_in_progress"] or persistence["aof_rewrite_in_progress"]
                or persistence["aof_rewrite_scheduled"]):
            return
        time.sleep(0.1)
    raise AssertionError("BGSAVE / BGREWRITEAOF did not finish in 60 s")


def _disk_bytes(home: Path) -> bytes:
    files = [p for p in (home / "data").rglob("*") if p.is_file()]
    assert any(p.suffix == ".rdb" for p in files), files
    assert any(".aof" in p.name for p in files), files
    return b"".join(p.read_bytes() for p in files)


def test_markers_are_nowhere_on_disk_yet_every_mode_finds_them(
    secure: MemoryEngine, admin_client: redis.Redis, server_home: Path
) -> None:
    text_marker, name_marker, meta_marker = _marker(), _marker(), _marker()
    secure.add_many("alice", [
        {"text": f"my locker code word is {text_marker} at the gym", "name": name_marker,
         "metadata": {"note": meta_marker}, "session_id": "s1"},
        {"text": "we talked about hiking trails near the lake", "session_id": "s1"},
        {"text": "dinner plans for friday with the neighbours", "session_id": "s2"},
    ])
    secure.add("bob", f"bob also knows {text_marker}")
    _wait_persisted(admin_client)
    disk = _disk_bytes(server_home)
    for marker in (text_marker, name_marker, meta_marker):
        assert marker.encode() not in disk
    for mode in ("keyword", "vector", "hybrid"):
        hits = secure.search("alice", f"locker code word {text_marker}", k=3, mode=mode)
        assert hits[0].memory.text == f"my locker code word is {text_marker} at the gym", mode
        assert hits[0].memory.name == name_marker
        assert hits[0].memory.metadata == {"note": meta_marker}
        assert all(h.memory.user_id == "alice" for h in hits)
    # The marker's turn, then the turn after it (which carries it as keyword context).
    only = secure.search("alice", text_marker, mode="keyword")
    assert [h.memory.text for h in only] == [
        f"my locker code word is {text_marker} at the gym",
        "we talked about hiking trails near the lake"]
    assert secure.search("alice", name_marker, mode="keyword")[0].memory.name == name_marker


def test_plaintext_control_does_leave_the_marker_on_disk(
    engine: MemoryEngine, admin_client: redis.Redis, server_home: Path
) -> None:
    # Proves the grep above can fail: the same write without a master key is on disk.
    marker = _marker()
    engine.add("alice", f"the code word is {marker}")
    _wait_persisted(admin_client)
    assert marker.encode() in _disk_bytes(server_home)


def _flip(token: bytes) -> bytes:
    prefix, key_id, payload = token.split(b":", 2)
    raw = bytearray(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
    raw[len(raw) // 2] ^= 0x01
    return b":".join([prefix, key_id, base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=")])


@pytest.mark.parametrize("field", ["text", "name", "metadata"])
def test_a_flipped_byte_raises_the_typed_error(
    secure: MemoryEngine, redis_client: redis.Redis, secure_config: EngineConfig, field: str
) -> None:
    memory = secure.add("alice", "the spare key is under the blue pot", name="Alice",
                        metadata={"k": 1})
    key = f"{secure_config.key_prefix}:mem:{{alice}}:{memory.id}"
    stored = redis_client.hget(key, field)
    assert stored is not None
    assert stored.startswith(b"enc1:")
    redis_client.hset(key, field, _flip(stored))
    with pytest.raises(DecryptionError):
        secure.get("alice", memory.id)
    with pytest.raises(DecryptionError):
        secure.search("alice", "spare key blue pot", mode="keyword")


def test_a_value_moved_to_another_memory_or_user_fails_authentication(
    secure: MemoryEngine, redis_client: redis.Redis, secure_config: EngineConfig
) -> None:
    first = secure.add("alice", "first secret")
    second = secure.add("alice", "second secret")
    prefix = secure_config.key_prefix
    token = redis_client.hget(f"{prefix}:mem:{{alice}}:{first.id}", "text")
    redis_client.hset(f"{prefix}:mem:{{alice}}:{second.id}", "text", token)
    with pytest.raises(DecryptionError):
        secure.get("alice", second.id)
    assert secure.get("alice", first.id).text == "first secret"
    plain = redis_client.hget(f"{prefix}:mem:{{alice}}:{first.id}", "name")
    redis_client.hset(f"{prefix}:mem:{{alice}}:{first.id}", "name", b"Mallory")
    with pytest.raises(DecryptionError, match="not encrypted"):
        secure.get("alice", first.id)
    assert plain is not None


def test_forget_user_destroys_the_data_key_first(
    secure: MemoryEngine, redis_client: redis.Redis, secure_config: EngineConfig
) -> None:
    secure.add_many("alice", ["one", "two"])
    secure.add("bob", "bob's memory")
    dek = f"{secure_config.key_prefix}:dek:{{alice}}"
    assert redis_client.exists(dek) == 1
    assert secure.forget_user("alice") == 2
    assert redis_client.exists(dek) == 0
    assert secure.count("alice") == 0
    assert secure.search("bob", "memory")[0].memory.text == "bob's memory"


def test_data_restored_without_its_key_cannot_be_read(
    secure: MemoryEngine, admin_client: redis.Redis, secure_config: EngineConfig
) -> None:
    memory = secure.add("alice", "the vault opens on tuesdays")
    key = f"{secure_config.key_prefix}:mem:{{alice}}:{memory.id}"
    saved = admin_client.dump(key)
    assert saved is not None
    secure.forget_user("alice")
    admin_client.restore(key, 0, saved)  # an old copy comes back, its data key does not
    with pytest.raises(DataKeyMissingError):
        secure.get("alice", memory.id)
    with pytest.raises(DataKeyMissingError):
        secure.search("alice", "vault tuesdays", mode="vector")
    assert secure.search("alice", "vault tuesdays", mode="keyword") == []


def test_the_wrong_master_key_cannot_open_the_data(
    secure: MemoryEngine, secure_config: EngineConfig, minilm: SentenceTransformerEmbedder
) -> None:
    memory = secure.add("alice", "a secret only the right key opens")
    other = secure_config.with_(master_key=generate_master_key())
    with MemoryEngine(other, embedder=minilm) as eng, pytest.raises(DataKeyMissingError):
        eng.get("alice", memory.id)


def test_chat_history_and_the_audit_trail_are_sealed_too(
    secure: MemoryEngine, redis_client: redis.Redis, admin_client: redis.Redis,
    secure_config: EngineConfig, server_home: Path,
) -> None:
    from memory_engine import LifecyclePolicy, NewMemory

    said, dog = _marker(), _marker()
    secure.history_append("alice", "chat-1", [f'{{"said": "{said}"}}', '{"said": "hi"}'])
    assert [t for _, t in secure.history_read("alice", "chat-1")] == [
        f'{{"said": "{said}"}}', '{"said": "hi"}']
    old, now = 1_600_000_000.0, 1_700_000_000.0
    texts = [f"My beagle puppy {dog} loves the park.", f"{dog} the beagle chews my shoes.",
             f"I walk {dog} the puppy every morning.", f"The vet saw {dog}, my beagle."]
    secure.add_many("alice", [NewMemory(t, session_id="s1", created_at=old + 60 * i)
                              for i, t in enumerate(texts)])
    report = secure.maintain("alice", now=now, policy=LifecyclePolicy(min_group=2))
    assert report.users[0].summaries == 1
    summary = secure.search("alice", "beagle puppy", kinds=["summary"])[0].memory
    assert dog in summary.text
    [entry] = secure.audit_trail("alice")
    assert sorted(r.memory_id for r in entry.removed) == sorted(summary.replaces)
    _wait_persisted(admin_client)
    disk = _disk_bytes(server_home)
    assert said.encode() not in disk
    assert dog.encode() not in disk  # not in the summary, the audit entry or the sources
    prefix = secure_config.key_prefix
    stored = [redis_client.get(k) for k in redis_client.scan_iter(f"{prefix}:audit:*:*")]
    assert stored
    assert all(v is not None and v.startswith(b"enc1:") for v in stored)
    secure.undo("alice", entry.change_id)
    assert sorted(m.memory.text for m in secure.search("alice", "beagle", k=10)) == sorted(texts)


def test_rotating_the_master_key_rewraps_data_keys_only(
    secure: MemoryEngine, secure_config: EngineConfig, minilm: SentenceTransformerEmbedder,
    redis_client: redis.Redis, redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from memory_engine.cli import main as cli_main
    from memory_engine.security import MasterKey

    a = secure.add("alice", "alice's first secret")
    b = secure.add("bob", "bob's first secret")
    prefix = secure_config.key_prefix
    stored_before = redis_client.hget(f"{prefix}:mem:{{alice}}:{a.id}", "text")
    new_key = generate_master_key()
    assert secure.rotate_master_key(new_key) == 2
    # The values are untouched: only the wrapped data keys changed.
    assert redis_client.hget(f"{prefix}:mem:{{alice}}:{a.id}", "text") == stored_before
    assert secure.add("carol", "written after the rotation").text  # new keys wrap with it
    with MemoryEngine(secure_config.with_(master_key=new_key), embedder=minilm) as rotated:
        assert rotated.get("alice", a.id).text == "alice's first secret"
        assert rotated.search("bob", "first secret")[0].memory.id == b.id
    with MemoryEngine(secure_config, embedder=minilm) as old, pytest.raises(
            DataKeyMissingError, match="not configured"):
        old.get("alice", a.id)
    # The CLI: keygen prints a usable key, rotate-key takes it from a 0600 file.
    assert cli_main(["keygen"]) == 0
    newest = capsys.readouterr().out.strip()
    assert len(MasterKey.parse(newest).key) == 32
    key_file = tmp_path / "new.key"
    key_file.write_text(newest)
    key_file.chmod(0o600)
    monkeypatch.setenv("MEMORY_ENGINE_MASTER_KEY", new_key)
    argv = ["--redis-url", redis_url, "--index", secure_config.index_name, "rotate-key",
            "--new-key-file", str(key_file)]
    assert cli_main(argv) == 0
    assert "re-wrapped 3 data keys" in capsys.readouterr().out
    with MemoryEngine(secure_config.with_(master_key=newest), embedder=minilm) as newer:
        assert newer.get("alice", a.id).text == "alice's first secret"
    key_file.chmod(0o644)
    assert cli_main(argv) == 2
    assert "chmod 600" in capsys.readouterr().err


def test_async_twin_encrypts_and_rotates(
    secure_config: EngineConfig, minilm: SentenceTransformerEmbedder, redis_client: redis.Redis
) -> None:
    import asyncio

    from memory_engine import AsyncMemoryEngine

    new_key = generate_master_key()

    async def run() -> None:
        async with AsyncMemoryEngine(secure_config, embedder=minilm) as engine:
            memory = await engine.add("alice", "the async vault code is 4711")
            key = f"{secure_config.key_prefix}:mem:{{alice}}:{memory.id}"
            assert (await asyncio.to_thread(redis_client.hget, key, "text")).startswith(b"enc1:")
            hits = await engine.search("alice", "vault code", mode="keyword")
            assert [h.memory.text for h in hits] == ["the async vault code is 4711"]
            assert await engine.rotate_master_key(new_key) == 1
        async with AsyncMemoryEngine(secure_config.with_(master_key=new_key),
                                     embedder=minilm) as rotated:
            assert (await rotated.get("alice", memory.id)).text == "the async vault code is 4711"

    asyncio.run(run())
    drop_index(redis_client, secure_config)


def test_an_updated_memory_is_resealed_and_reindexed(
    secure: MemoryEngine, redis_client: redis.Redis, secure_config: EngineConfig
) -> None:
    memory = secure.add("alice", "my favourite fruit is the mango", name="Alice")
    key = f"{secure_config.key_prefix}:mem:{{alice}}:{memory.id}"
    before = redis_client.hget(key, "kw")
    secure.update("alice", memory.id, text="my favourite fruit is the durian")
    assert redis_client.hget(key, "kw") != before
    assert redis_client.hget(key, "text").startswith(b"enc1:")  # type: ignore[union-attr]
    assert secure.get("alice", memory.id).text == "my favourite fruit is the durian"
    assert [h.memory.id for h in secure.search("alice", "durian", mode="keyword")] == [memory.id]
    assert secure.search("alice", "mango", mode="keyword") == []


def test_a_write_after_another_process_forgot_the_user_uses_a_new_key(
    secure: MemoryEngine, secure_config: EngineConfig, minilm: SentenceTransformerEmbedder
) -> None:
    secure.add("alice", "before the forget")  # this engine now holds alice's data key
    with MemoryEngine(secure_config, embedder=minilm) as other:
        assert other.forget_user("alice") == 1
    after = secure.add("alice", "after the forget")
    with MemoryEngine(secure_config, embedder=minilm) as fresh:
        assert fresh.get("alice", after.id).text == "after the forget"
        assert [h.memory.text for h in fresh.search("alice", "forget", mode="keyword")] == [
            "after the forget"]
