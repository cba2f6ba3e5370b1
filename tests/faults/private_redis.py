"""A redis-server of a test's own (never the shared one): started, stopped (cleanly or as a
crash) and restarted on the same port with its append-only data directory."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from conftest import in_ci

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError:  # the suite still collects without the redis extra
    redis = None  # type: ignore[assignment]


def require_redis_server() -> str:
    """The redis-server binary; else skip (loudly) or, under CI=true, fail."""
    binary = shutil.which("redis-server")
    if redis is None:
        problem = "redis-py is not installed; pip install 'conveyor[redis]'"
    elif binary is None:
        problem = "redis-server is not on PATH; install Redis (e.g. apt-get install redis-server)"
    else:
        return binary
    # "UNREACHABLE" makes the skip count in the conftest's end-of-run summary.
    message = f"REDIS-SERVER UNREACHABLE: {problem}. These tests start their own server."
    if in_ci():
        pytest.fail(f"{message} (CI=true: the redis tests must run, not be skipped)")
    pytest.skip(message)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server of one test's own: its port and data directory survive restarts."""

    def __init__(self, binary: str, root: Path) -> None:
        self.binary = binary
        self.dir = root / "redis"
        self.dir.mkdir()
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.launched_at = 0.0
        """time.time() just before the latest start: later claims were made on that server."""
        self._starts = 0

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0?prefix=t_{uuid.uuid4().hex}"

    def client(self, **options: Any) -> Any:
        return redis.Redis(
            host="127.0.0.1",
            port=self.port,
            decode_responses=True,
            socket_connect_timeout=2,
            socket_timeout=10,
            **options,
        )

    def log(self) -> str:
        return "\n".join(
            f"--- {path.name}:\n{path.read_text(errors='replace')[-3000:]}"
            for path in sorted(self.dir.glob("server-*.log"))
        )

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "redis-server already runs"
        self._starts += 1
        out = open(self.dir / f"server-{self._starts}.log", "wb")  # noqa: SIM115
        self.launched_at = time.time()
        try:
            self.proc = subprocess.Popen(
                [
                    self.binary,
                    "--port",
                    str(self.port),
                    "--bind",
                    "127.0.0.1",
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--save",
                    "",
                    "--dir",
                    str(self.dir),
                    "--daemonize",
                    "no",
                ],
                cwd=self.dir,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        finally:
            out.close()
        deadline = time.monotonic() + 15
        while not self._ready():
            code = self.proc.poll()
            assert code is None, f"redis-server exited with {code}:\n{self.log()}"
            assert time.monotonic() < deadline, f"redis-server not ready in 15 s:\n{self.log()}"
            time.sleep(0.02)

    def _ready(self) -> bool:
        """PING answers, and the data is loaded (PING is answered while the AOF loads)."""
        probe = self.client(retry=Retry(NoBackoff(), 0))
        try:
            return bool(probe.ping()) and probe.info("persistence")["loading"] == 0
        except redis.RedisError:
            return False
        finally:
            probe.close()

    def stop(self, *, crash: bool = False) -> None:
        """SIGTERM: a clean SHUTDOWN (AOF written, exit 0). SIGKILL: a crash."""
        proc = self.proc
        assert proc is not None and proc.poll() is None, "redis-server is not running"
        proc.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"redis-server did not stop in 30 s:\n{self.log()}") from None
        if not crash:
            assert code == 0, f"redis-server shut down with {code}:\n{self.log()}"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
