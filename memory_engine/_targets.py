"""Where backups are stored: a local directory or an S3 bucket, behind one small interface.

A ``Target`` stores whole objects under ``/``-separated names relative to its root. Names are
checked before anything touches the disk or the network, and every failure -- an unreachable
endpoint, a missing object, a refused key -- is a ``BackupError`` that names the target (never
its credentials) with the original error chained.

``open_target`` turns a destination string into a target: ``s3://bucket/prefix`` is an
``S3Target`` (boto3, the ``s3`` extra), ``file:///abs/path`` or a plain path a
``DirectoryTarget``.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import os
import re
import secrets
import threading
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import unquote, urlsplit

from .exceptions import BackupError, MissingDependencyError

__all__ = ["DirectoryTarget", "S3Target", "Target", "open_target"]

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@")
# In-flight writes of a DirectoryTarget: hidden, random, and never listed.
_PARTIAL = re.compile(r"^\..+\.[0-9a-f]{16}\.partial$")
_MULTIPART_THRESHOLD = 64 * 1024 * 1024


@runtime_checkable
class Target(Protocol):
    """A place that stores whole backup objects under ``/``-separated names."""

    def put(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name``, replacing any object already there."""

    def get(self, name: str) -> bytes:
        """The object stored under ``name``; ``BackupError`` if there is none."""

    def exists(self, name: str) -> bool:
        """Whether an object is stored under ``name``."""

    def list(self, prefix: str = "") -> builtins.list[str]:
        """The sorted names starting with ``prefix``."""

    def delete(self, name: str) -> None:
        """Remove the object under ``name``; a missing one is not an error."""

    def describe(self) -> str:
        """Where the objects go, for messages (no secrets)."""


def _redact(dest: str) -> str:
    """``dest`` with any ``user:password@`` of a URL hidden."""
    return _USERINFO.sub(r"\1***@", dest)


def _check_name(name: object, where: str) -> builtins.list[str]:
    """The parts of a valid object name; ``BackupError`` (before any I/O) otherwise."""
    if not isinstance(name, str) or not name:
        raise BackupError(f"invalid backup object name {name!r} for {where}: it must be a "
                          "non-empty string")
    reason = ""
    if "\\" in name or "\0" in name:
        reason = "backslashes and NUL characters are not allowed"
    elif name.startswith("/"):
        reason = "it must be relative, not absolute"
    else:
        parts = name.split("/")
        if any(p in ("", ".", "..") for p in parts):
            reason = "empty, '.' and '..' path parts are not allowed"
        elif _PARTIAL.match(parts[-1]):
            reason = "names of in-flight writes are reserved"
        else:
            return parts
    raise BackupError(f"invalid backup object name {name!r} for {where}: {reason}")


def _check_prefix(prefix: object, where: str) -> str:
    if not isinstance(prefix, str) or "\\" in prefix or "\0" in prefix or prefix.startswith(
            "/"):
        raise BackupError(f"invalid backup name prefix {prefix!r} for {where}")
    return prefix


class DirectoryTarget:
    """Objects as files under a local directory; ``a/b`` is the file ``b`` in ``root/a``.

    Writes are atomic (a temporary file in the same directory, fsynced, then renamed over the
    name), files are created ``0600`` and directories ``0700``.

    Args:
        root: The directory; created (with its missing parents) on the first ``put``.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()

    def describe(self) -> str:
        return f"directory {self.root}"

    def _path(self, name: str) -> Path:
        return self.root.joinpath(*_check_name(name, self.describe()))

    def put(self, name: str, data: bytes) -> None:
        path = self._path(name)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.partial")
        try:
            _make_private_dirs(path.parent)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                with open(fd, "wb", closefd=False) as f:
                    f.write(data)
                    f.flush()
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise BackupError(f"could not write {name!r} to {self.describe()}: {exc}") from exc

    def get(self, name: str) -> bytes:
        path = self._path(name)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise BackupError(f"no backup object {name!r} in {self.describe()}") from exc
        except OSError as exc:
            raise BackupError(f"could not read {name!r} from {self.describe()}: {exc}") from exc

    def exists(self, name: str) -> bool:
        path = self._path(name)
        try:
            return path.is_file()
        except OSError as exc:
            raise BackupError(f"could not check {name!r} in {self.describe()}: {exc}") from exc

    def list(self, prefix: str = "") -> builtins.list[str]:
        prefix = _check_prefix(prefix, self.describe())
        names: builtins.list[str] = []

        def fail(exc: OSError) -> None:
            if not isinstance(exc, FileNotFoundError):
                raise BackupError(f"could not list {self.describe()}: {exc}") from exc

        for folder, _dirs, files in os.walk(self.root, onerror=fail):
            rel = Path(folder).relative_to(self.root).as_posix()
            base = "" if rel == "." else rel + "/"
            names.extend(base + f for f in files
                         if not _PARTIAL.match(f) and (base + f).startswith(prefix))
        return sorted(names)

    def delete(self, name: str) -> None:
        path = self._path(name)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise BackupError(f"could not delete {name!r} from {self.describe()}: {exc}") from exc


def _make_private_dirs(path: Path) -> None:
    """Create ``path`` and its missing parents, each ``0700`` (``mkdir -p`` would not)."""
    missing: list[Path] = []
    while not path.is_dir():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    for folder in reversed(missing):
        with contextlib.suppress(FileExistsError):
            folder.mkdir(mode=0o700)


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _boto3() -> Any:
    try:
        import boto3
    except ImportError as exc:
        raise MissingDependencyError("boto3", extra="s3",
                                     feature="s3:// backup destinations") from exc
    return boto3


def _aws_errors() -> tuple[type[Exception], ...]:
    """The exceptions boto3 raises for a failed request (imported only once one failed)."""
    from boto3.exceptions import Boto3Error
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError, Boto3Error)


def _error_code(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


class S3Target:
    """Objects in an S3 bucket (AWS, MinIO, SeaweedFS, ...), under an optional key prefix.

    Without ``client``, a boto3 client is made on first use: credentials and region from the
    standard AWS chain, the endpoint from ``MEMORY_ENGINE_S3_ENDPOINT`` (AWS when unset),
    path-style addressing and three attempts per request. One target may be used from one
    thread at a time; the lazy client is created under a lock.

    Args:
        bucket: The bucket name (3-63 characters of ``a-z 0-9 . -``).
        prefix: Prepended to every name with ``/``; empty for the bucket root.
        client: A boto3 S3 client to use instead of the default one.
    """

    def __init__(self, bucket: str, prefix: str = "", *, client: Any | None = None) -> None:
        if not isinstance(bucket, str) or not _BUCKET.match(bucket) or ".." in bucket:
            raise BackupError(f"invalid S3 bucket name {bucket!r}: 3-63 characters of "
                              "a-z, 0-9, '.' and '-', starting and ending with a letter or digit")
        if not isinstance(prefix, str):
            raise BackupError(f"invalid S3 key prefix {prefix!r} for s3://{bucket}")
        prefix = prefix.strip("/")
        if prefix:
            try:
                _check_name(prefix, f"s3://{bucket}")
            except BackupError as exc:
                raise BackupError(f"invalid S3 key prefix {prefix!r} for s3://{bucket}: "
                                  "empty, '.' and '..' parts, backslashes and NUL are not "
                                  "allowed") from exc
        self.bucket = bucket
        self.prefix = prefix
        self.multipart_threshold = _MULTIPART_THRESHOLD
        self._client = client
        self._lock = threading.Lock()

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _s3(self) -> Any:
        with self._lock:
            if self._client is None:
                boto3 = _boto3()
                from botocore.config import Config

                config = Config(retries={"max_attempts": 3, "mode": "standard"},
                                s3={"addressing_style": "path"}, connect_timeout=10)
                errors: tuple[type[Exception], ...] = (*_aws_errors(), ValueError)
                try:
                    self._client = boto3.client(
                        "s3", endpoint_url=os.environ.get("MEMORY_ENGINE_S3_ENDPOINT") or None,
                        config=config)
                except errors as exc:
                    raise BackupError(f"could not set up an S3 client for {self.describe()}: "
                                      f"{exc}") from exc
            return self._client

    def _key(self, name: str) -> str:
        _check_name(name, self.describe())
        return f"{self.prefix}/{name}" if self.prefix else name

    def _fail(self, action: str, exc: Exception) -> BackupError:
        code = _error_code(exc)
        if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch",
                    "ExpiredToken", "InvalidToken", "403"):
            what = f"access denied ({code})"
        elif code == "NoSuchBucket":
            what = "the bucket does not exist"
        elif code:
            message = getattr(exc, "response", {}).get("Error", {}).get("Message", "")
            what = f"{code}: {message}" if message else code
        else:
            what = str(exc)
        return BackupError(f"could not {action} {self.describe()}: {what}")

    def put(self, name: str, data: bytes) -> None:
        key = self._key(name)
        client = self._s3()
        try:
            if len(data) > self.multipart_threshold:
                from boto3.s3.transfer import TransferConfig

                client.upload_fileobj(io.BytesIO(data), self.bucket, key, Config=TransferConfig(
                    multipart_threshold=self.multipart_threshold,
                    multipart_chunksize=max(self.multipart_threshold // 4, 8 * 1024 * 1024)))
            else:
                client.put_object(Bucket=self.bucket, Key=key, Body=data)
        except _aws_errors() as exc:
            raise self._fail(f"write {name!r} to", exc) from exc

    def get(self, name: str) -> bytes:
        key = self._key(name)
        client = self._s3()
        try:
            body = client.get_object(Bucket=self.bucket, Key=key)["Body"]
            try:
                data: bytes = body.read()
            finally:
                body.close()
            return data
        except _aws_errors() as exc:
            if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise BackupError(f"no backup object {name!r} in {self.describe()}") from exc
            raise self._fail(f"read {name!r} from", exc) from exc

    def exists(self, name: str) -> bool:
        key = self._key(name)
        client = self._s3()
        try:
            client.head_object(Bucket=self.bucket, Key=key)
        except _aws_errors() as exc:
            if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return False
            raise self._fail(f"check {name!r} in", exc) from exc
        return True

    def list(self, prefix: str = "") -> builtins.list[str]:
        prefix = _check_prefix(prefix, self.describe())
        root = f"{self.prefix}/" if self.prefix else ""
        client = self._s3()
        names: builtins.list[str] = []
        try:
            pages = client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=root + prefix)
            for page in pages:
                names.extend(obj["Key"][len(root):] for obj in page.get("Contents", ())
                             if not obj["Key"].endswith("/"))
        except _aws_errors() as exc:
            raise self._fail("list", exc) from exc
        return sorted(names)

    def delete(self, name: str) -> None:
        key = self._key(name)
        client = self._s3()
        try:
            client.delete_object(Bucket=self.bucket, Key=key)
        except _aws_errors() as exc:
            if _error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                return
            raise self._fail(f"delete {name!r} from", exc) from exc


def open_target(dest: str | os.PathLike[str], *, s3_client: Any | None = None) -> Target:
    """The target for a destination: ``s3://bucket[/prefix]``, ``file:///path`` or a path.

    Args:
        dest: Where backups go.
        s3_client: A boto3 S3 client for an ``s3://`` destination (default: made on first use).

    Raises:
        BackupError: The destination is malformed or of an unsupported scheme.
    """
    try:
        text = os.fspath(dest)
    except TypeError as exc:
        raise BackupError(f"invalid backup destination {dest!r}") from exc
    if not isinstance(text, str) or not text.strip():
        raise BackupError(f"invalid backup destination {text!r}: use a directory or "
                          "s3://bucket/prefix")
    scheme = _SCHEME.match(text)
    if scheme is None:
        return DirectoryTarget(Path(text).expanduser())
    kind = scheme.group(1).lower()
    rest = text[scheme.end():]
    if kind == "s3":
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise BackupError(f"invalid backup destination {_redact(text)!r}: no bucket name "
                              "(use s3://bucket/prefix)")
        if not _BUCKET.match(bucket) or ".." in bucket:
            raise BackupError(f"invalid backup destination {_redact(text)!r}: {bucket!r} is "
                              "not an S3 bucket name (3-63 characters of a-z, 0-9, '.', '-')")
        return S3Target(bucket, prefix, client=s3_client)
    if kind == "file":
        parts = urlsplit(text)
        path = unquote(parts.path)
        if parts.netloc not in ("", "localhost") or not path.startswith("/"):
            raise BackupError(f"invalid backup destination {_redact(text)!r}: a file URL must "
                              "be file:///absolute/path")
        return DirectoryTarget(Path(path))
    raise BackupError(f"unsupported backup destination {_redact(text)!r}: use a directory or "
                      "s3://bucket/prefix")
