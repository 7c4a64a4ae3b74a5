"""Backup and restore: versioned, checksummed, compressed snapshots of one user or all users,
written to a directory or an S3 bucket (``_targets``), encrypted when encryption is on.

A snapshot is a folder ``<snapshot id>/`` holding ``manifest.json`` and one file per user,
``users/<sha256 of the user id>.jsonl.gz`` (``.enc`` appended when encrypted). A user's file
holds every key of that user (memories with their vectors, recall counts, session tails,
chat history, the audit trail) with their remaining TTLs, read in one MULTI/EXEC: each user
is a consistent point in time. It never holds the user's data key: an encrypted user file is
sealed under that key (AES-256-GCM), so once ``forget_user`` destroys the key, every backup
of the user is unreadable too (crypto-shredding).

The procedures here are I/O-free generators of Redis steps (``_maintain.Call``), driven by
``MemoryEngine`` and ``AsyncMemoryEngine`` alike; the engines move the bytes to the target.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version
from typing import Any

from ._maintain import Call, Steps
from ._maintainer import check_interval
from ._targets import Target, open_target
from .config import EngineConfig
from .exceptions import BackupError, DataKeyMissingError, InvalidArgumentError
from .store import SCHEMA_VERSION, StoreCore, decode_tag, encode_tag
from .store._crypto import data_key_name

try:
    __version__ = _version("memory-engine")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

FORMAT = "memory-engine-snapshot"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
_SCAN_COUNT = 1000
_READ_RETRIES = 5
# The key kinds under the prefix that belong to one user (``<prefix>:<kind>:{<user>}...``);
# ``dek`` (the data key) is deliberately not among them.
_USER_KINDS = ("mem", "acc", "tail", "hist", "audit")


@dataclass(frozen=True, slots=True)
class UserSnapshot:
    """One user's entry in a manifest."""

    user_id: str
    file: str
    sha256: str
    size: int
    keys: int
    memories: int
    encrypted: bool


@dataclass(slots=True)
class BackupReport:
    """What a backup wrote: where, which snapshot, and per user how much."""

    destination: str
    snapshot_id: str
    users: list[UserSnapshot] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def memories(self) -> int:
        return sum(u.memories for u in self.users)

    @property
    def size(self) -> int:
        return sum(u.size for u in self.users)


@dataclass(slots=True)
class RestoreReport:
    """What a restore put back, and which users it could not (with why)."""

    source: str
    snapshot_id: str
    restored: list[str] = field(default_factory=list)
    memories: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)


def new_snapshot_id(now: float | None = None) -> str:
    """``<UTC time>-<random>``: sortable, so the newest snapshot sorts last."""
    when = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{when}-{os.urandom(3).hex()}"


def user_file(snapshot_id: str, user_id: str, encrypted: bool) -> str:
    digest = hashlib.sha256(user_id.encode("utf-8")).hexdigest()[:32]
    return f"{snapshot_id}/users/{digest}.jsonl.gz" + (".enc" if encrypted else "")


# -- reading a user's keys --------------------------------------------------------------------

def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def list_users(store: StoreCore) -> Steps[list[str]]:
    """Every user with any key under the engine's prefix (memories, history or audit)."""
    prefix = store.keys.prefix
    users: set[str] = set()
    for kind in _USER_KINDS:
        cursor = "0"
        while True:
            reply = yield Call([["SCAN", cursor, "MATCH", f"{prefix}:{kind}:{{*", "COUNT",
                                 _SCAN_COUNT]])
            cursor, keys = _s(reply[0][0]), reply[0][1]
            for key in keys:
                rest = _s(key)[len(prefix) + len(kind) + 3:]  # after "<prefix>:<kind>:{"
                tag, sep, _ = rest.partition("}")
                if sep:
                    users.add(decode_tag(tag))
            if cursor == "0":
                break
    return sorted(users)


def _patterns(store: StoreCore, user_id: str) -> list[str]:
    tag = encode_tag(user_id)  # only [A-Za-z0-9_.~%-]: nothing SCAN reads as a wildcard
    p = store.keys.prefix
    return [f"{p}:mem:{{{tag}}}:*", f"{p}:acc:{{{tag}}}", f"{p}:tail:{{{tag}}}",
            f"{p}:hist:{{{tag}}}:*", f"{p}:audit:{{{tag}}}", f"{p}:audit:{{{tag}}}:*"]


def _user_keys(store: StoreCore, user_id: str) -> Steps[list[str]]:
    keys: set[str] = set()
    for pattern in _patterns(store, user_id):
        if "*" not in pattern:
            reply = yield Call([["EXISTS", pattern]])
            if reply[0]:
                keys.add(pattern)
            continue
        cursor = "0"
        while True:
            reply = yield Call([["SCAN", cursor, "MATCH", pattern, "COUNT", _SCAN_COUNT]])
            cursor = _s(reply[0][0])
            keys.update(_s(k) for k in reply[0][1])
            if cursor == "0":
                break
    return sorted(keys)


_READERS = {
    "hash": lambda k: ["HGETALL", k],
    "string": lambda k: ["GET", k],
    "zset": lambda k: ["ZRANGE", k, 0, -1, "WITHSCORES"],
    "list": lambda k: ["LRANGE", k, 0, -1],
    "set": lambda k: ["SMEMBERS", k],
}


def _b64(value: Any) -> str:
    raw = value if isinstance(value, bytes) else str(value).encode()
    return base64.b64encode(raw).decode("ascii")


def _record(relative: str, kind: str, ttl: int, value: Any) -> dict[str, Any]:
    if kind == "hash":
        pairs = value.items() if isinstance(value, dict) else zip(
            value[::2], value[1::2], strict=True)
        data: Any = {_b64(f): _b64(v) for f, v in pairs}
    elif kind == "zset":
        data = [[_b64(value[i]), float(value[i + 1])] for i in range(0, len(value), 2)]
    elif kind in ("list", "set"):
        data = sorted(_b64(v) for v in value) if kind == "set" else [_b64(v) for v in value]
    else:
        data = _b64(value)
    return {"k": relative, "t": kind, "ttl": ttl, "v": data}


def read_user(store: StoreCore, user_id: str) -> Steps[list[dict[str, Any]]]:
    """Every key of one user as records, read in one MULTI/EXEC (a consistent point in
    time); retried when a key changes type or vanishes between listing and reading."""
    prefix = store.keys.prefix
    for _ in range(_READ_RETRIES):
        keys = yield from _user_keys(store, user_id)
        if not keys:
            return []
        types = [_s(t) for t in (yield Call([["TYPE", k] for k in keys]))]
        commands: list[list[Any]] = []
        for key, kind in zip(keys, types, strict=True):
            if kind not in _READERS:
                break
            commands += [["TYPE", key], ["PTTL", key], _READERS[kind](key)]
        else:
            reply = yield Call(commands, transaction=True)
            rows = [reply[i:i + 3] for i in range(0, len(reply), 3)]
            if all(_s(row[0]) == kind for row, kind in zip(rows, types, strict=True)):
                return [_record(key[len(prefix):], kind, int(row[1]), row[2])
                        for key, kind, row in zip(keys, types, rows, strict=True)]
    raise BackupError(f"user {user_id!r}'s keys kept changing while being read; try again")


# -- files ------------------------------------------------------------------------------------

def _file_aad(snapshot_id: str, user_id: str) -> str:
    return f"backup\x00{snapshot_id}\x00{encode_tag(user_id)}"


def pack_user(
    store: StoreCore, snapshot_id: str, user_id: str, records: Sequence[dict[str, Any]]
) -> tuple[bytes, UserSnapshot]:
    """A user's records as a file (JSON lines, gzip, then sealed under the user's data key
    when encryption is on) and its manifest entry."""
    lines = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records)
    blob = gzip.compress(lines.encode("utf-8"), compresslevel=6, mtime=0)
    sealer = store.sealer
    if sealer is not None:
        blob = sealer.cipher(user_id).encrypt_bytes(blob, _file_aad(snapshot_id, user_id))
    memories = sum(1 for r in records if r["k"].startswith(":mem:"))
    entry = UserSnapshot(
        user_id=user_id, file=user_file(snapshot_id, user_id, sealer is not None),
        sha256=hashlib.sha256(blob).hexdigest(), size=len(blob), keys=len(records),
        memories=memories, encrypted=sealer is not None,
    )
    return blob, entry


def unpack_user(
    store: StoreCore, snapshot_id: str, entry: UserSnapshot, blob: bytes
) -> list[dict[str, Any]]:
    """A user's records from their file: checksum verified, decrypted, decompressed."""
    digest = hashlib.sha256(blob).hexdigest()
    if len(blob) != entry.size or digest != entry.sha256:
        raise BackupError(
            f"{entry.file} is corrupt: sha256 {digest} ({len(blob)} bytes), the manifest says "
            f"{entry.sha256} ({entry.size} bytes)")
    if entry.encrypted:
        if store.sealer is None:
            raise BackupError("the snapshot is encrypted; configure the master key to restore it")
        try:
            cipher = store.sealer.cipher(entry.user_id)
        except DataKeyMissingError:
            raise DataKeyMissingError(
                f"user {entry.user_id!r} has no data key in this Redis (forgotten, so "
                "crypto-shredded): their snapshot cannot be decrypted") from None
        blob = cipher.decrypt_bytes(blob, _file_aad(snapshot_id, entry.user_id))
    try:
        lines = gzip.decompress(blob).decode("utf-8").splitlines()
        return [json.loads(line) for line in lines if line]
    except (OSError, EOFError, ValueError) as exc:
        raise BackupError(f"{entry.file} does not decompress: {exc}") from exc


def restore_commands(
    store: StoreCore, user_id: str, records: Iterable[dict[str, Any]]
) -> list[list[Any]]:
    """Commands that replace one user's keys with the records' (in one MULTI/EXEC). The
    records' keys must be this user's: a snapshot cannot write into another user."""
    prefix = store.keys.prefix
    allowed = _patterns(store, user_id)
    commands: list[list[Any]] = []
    for record in records:
        key = prefix + str(record["k"])
        if not any(_matches(key, p) for p in allowed):
            raise BackupError(f"the snapshot of {user_id!r} holds key {key!r}, which is not theirs")
        kind, value = record["t"], record["v"]
        if kind == "hash":
            flat = [x for f, v in value.items() for x in (_unb64(f), _unb64(v))]
            commands.append(["HSET", key, *flat])
        elif kind == "string":
            commands.append(["SET", key, _unb64(value)])
        elif kind == "zset":
            commands.append(["ZADD", key, *(x for m, s in value for x in (s, _unb64(m)))])
        elif kind == "list":
            commands.append(["RPUSH", key, *(_unb64(v) for v in value)])
        elif kind == "set":
            commands.append(["SADD", key, *(_unb64(v) for v in value)])
        else:
            raise BackupError(f"the snapshot holds a key of unknown type {kind!r}")
        if int(record["ttl"]) > 0:
            commands.append(["PEXPIRE", key, int(record["ttl"])])
    return commands


def _matches(key: str, pattern: str) -> bool:
    return key.startswith(pattern[:-1]) if pattern.endswith("*") else key == pattern


def _unb64(value: str) -> bytes:
    return base64.b64decode(value.encode("ascii"), validate=True)


def replace_user(store: StoreCore, user_id: str, commands: list[list[Any]]) -> Steps[None]:
    """Replace one user's keys (all but their data key) with a snapshot's, in one
    MULTI/EXEC: a failed restore leaves the user as they were."""
    keys = yield from _user_keys(store, user_id)
    yield Call([*([["DEL", *keys]] if keys else []), *commands], transaction=True)


# -- manifests --------------------------------------------------------------------------------

def manifest(store: StoreCore, snapshot_id: str, users: Sequence[UserSnapshot],
             created_at: float) -> bytes:
    body = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "schema_version": SCHEMA_VERSION, "engine_version": __version__,
        "snapshot_id": snapshot_id, "created_at": created_at,
        "key_prefix": store.keys.prefix, "index_name": store.index_name,
        "embedder": store.settings.embedder_name, "dims": store.settings.dims,
        "encrypted": store.sealer is not None,
        "users": [_entry_json(u) for u in users],
    }
    body["checksum"] = _checksum(body)
    return json.dumps(body, indent=1, ensure_ascii=False).encode("utf-8")


def _entry_json(u: UserSnapshot) -> dict[str, Any]:
    return {"user_id": u.user_id, "file": u.file, "sha256": u.sha256, "size": u.size,
            "keys": u.keys, "memories": u.memories, "encrypted": u.encrypted}


def _checksum(body: dict[str, Any]) -> str:
    canonical = json.dumps({k: v for k, v in body.items() if k != "checksum"},
                           sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def read_manifest(store: StoreCore, raw: bytes, where: str) -> tuple[str, list[UserSnapshot]]:
    """The snapshot id and user entries of a manifest, after checking that it is intact and
    that this engine can restore it (schema version, model, encryption)."""
    try:
        body = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BackupError(f"{where} is not a snapshot manifest: {exc}") from exc
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise BackupError(f"{where} is not a memory-engine snapshot manifest")
    if body.get("checksum") != _checksum(body):
        raise BackupError(f"{where} is corrupt: its checksum does not match its content")
    if body.get("format_version") != FORMAT_VERSION:
        raise BackupError(f"{where} is snapshot format {body.get('format_version')}; this "
                          f"memory-engine {__version__} reads format {FORMAT_VERSION}")
    if body.get("schema_version") != SCHEMA_VERSION:
        raise BackupError(
            f"{where} was taken from schema version {body.get('schema_version')} (memory-engine "
            f"{body.get('engine_version')}); this engine uses schema version {SCHEMA_VERSION}. "
            "Restore it with the memory-engine version that wrote it, or re-add the memories.")
    want = (store.settings.embedder_name, store.settings.dims)
    if (body.get("embedder"), body.get("dims")) != want:
        raise BackupError(
            f"{where} holds vectors of {body.get('embedder')} ({body.get('dims')} dims); this "
            f"engine embeds with {want[0]} ({want[1]} dims): they cannot share an index")
    if bool(body.get("encrypted")) != (store.sealer is not None):
        state = "encrypted" if body.get("encrypted") else "not encrypted"
        raise BackupError(f"{where} is {state}, and this engine's encryption is "
                          f"{'on' if store.sealer is not None else 'off'}: configure the same "
                          "setting (and master key) it was taken with")
    users = [UserSnapshot(**u) for u in body["users"]]
    return str(body["snapshot_id"]), users


def latest_snapshot(names: Sequence[str]) -> str | None:
    """The newest snapshot id among a target's names (ids sort by time)."""
    ids = sorted(n.split("/", 1)[0] for n in names if n.endswith("/" + MANIFEST))
    return ids[-1] if ids else None


def open_snapshot(
    store: StoreCore, target: Target, snapshot: str | None, user_id: str | None = None
) -> tuple[str, list[UserSnapshot]]:
    """The chosen (default: the newest complete) snapshot in ``target``: its id and the
    entries of every user, or of ``user_id`` only, manifest checked (``read_manifest``)."""
    snap_id = snapshot if snapshot is not None else latest_snapshot(target.list())
    if snap_id is None:
        raise BackupError(f"no snapshot in {target.describe()}")
    name = f"{snap_id}/{MANIFEST}"
    if not target.exists(name):
        raise BackupError(f"no snapshot {snap_id!r} in {target.describe()}")
    snap_id, entries = read_manifest(store, target.get(name), f"{target.describe()}/{name}")
    if user_id is not None:
        entries = [e for e in entries if e.user_id == user_id]
        if not entries:
            raise BackupError(
                f"snapshot {snap_id} in {target.describe()} has no user {user_id!r}")
    return snap_id, entries


def schedule(
    config: EngineConfig, to: str | os.PathLike[str] | None, interval: float | None
) -> tuple[str | os.PathLike[str], float]:
    """Where and how often ``start_backups`` writes (defaults from ``config``), checked now
    so a malformed destination fails in the caller, not in the background."""
    dest = to if to is not None else config.backup_to
    if dest is None:
        raise InvalidArgumentError("no backup destination: pass `to` or set backup_to "
                                   "(MEMORY_ENGINE_BACKUP_TO)")
    open_target(dest)
    return dest, check_interval(config.backup_interval if interval is None else interval)


__all__ = [
    "BackupReport", "RestoreReport", "UserSnapshot", "data_key_name", "latest_snapshot",
    "list_users", "manifest", "new_snapshot_id", "open_snapshot", "pack_user", "read_manifest",
    "read_user", "replace_user", "restore_commands", "schedule", "unpack_user",
]
