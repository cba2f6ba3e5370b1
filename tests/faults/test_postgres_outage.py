"""PostgreSQL goes away and comes back: producers and workers recover within seconds.

Each test starts its OWN throwaway PostgreSQL cluster (initdb in a temporary directory, a
free port on 127.0.0.1, fsync off), so stopping it never disturbs the shared server on 5432
or other tests. Needs the PostgreSQL server binaries (`pg_config --bindir` or
/usr/lib/postgresql/*/bin); as root they run as the `postgres` user. Skipped when they are
missing, or when CONVEYOR_TEST_STORES leaves out postgres.

- While the server is stopped for ~3 s under a producer and a worker, both keep failing (the
  producer with a StoreError); once it is back, enqueue succeeds and the worker completes
  new jobs within a few seconds.
- An enqueue while the server is down fails within connect_timeout (plus a margin) with a
  StoreError naming the store and the timeout.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import SELECTED_STORES
from conveyor import Conveyor, JobState, Settings, StoreError
from engine.helpers import running_worker, wait_until

pytest.importorskip("psycopg")

pytestmark = pytest.mark.skipif(
    "postgres" not in SELECTED_STORES, reason="CONVEYOR_TEST_STORES leaves out postgres"
)

RECOVERY = 2.5
"""Seconds after the server is accepting connections again within which service must be
back (the issue asks for ~2 s; the margin is for a loaded 2-core test machine)."""


def _bindir() -> Path | None:
    found = shutil.which("pg_config")
    if found:
        done = subprocess.run([found, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(done.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Cluster:
    """A private PostgreSQL server: its data directory, port and pg_ctl."""

    bindir: Path
    root: Path
    port: int = field(default_factory=_free_port)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *argv: str, timeout: float = 60) -> None:
        command = [str(self.bindir / argv[0]), *argv[1:]]
        if os.geteuid() == 0:  # the server refuses to run as root
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, f"{argv[0]} failed: {done.stdout}{done.stderr}"

    def init(self) -> None:
        self._run("initdb", "-D", str(self.root / "data"), "-A", "trust", "-U", "postgres")

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl",
            *("-D", str(self.root / "data"), "-l", str(self.root / "log"), "-o", options),
            *("-w", "-t", "60", "start"),
        )

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "fast", "-w", "stop")

    def running(self) -> bool:
        return (self.root / "data" / "postmaster.pid").exists()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    bindir = _bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed")
    if os.geteuid() == 0 and (shutil.which("runuser") is None or not _has_user("postgres")):
        pytest.skip("running as root needs runuser and a postgres user to start a server")
    root = Path(tempfile.mkdtemp(prefix="conveyor-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, user="postgres")
    server = Cluster(bindir, root)
    try:
        server.init()
        server.start()
        yield server
    finally:
        if server.running():
            server.stop()
        shutil.rmtree(root, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class Producer:
    """Enqueues a job every 20 ms in a thread, noting when enqueues succeed and fail."""

    def __init__(self, app: Conveyor) -> None:
        self.app = app
        self.ok: list[float] = []
        self.errors: list[tuple[float, BaseException]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="producer", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.app.enqueue("echo", {"n": 1})
            except Exception as exc:
                self.errors.append((time.monotonic(), exc))
            else:
                self.ok.append(time.monotonic())
            self._stop.wait(0.02)

    def __enter__(self) -> Producer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(30)


def _app(cluster: Cluster, connect_timeout: float = 1.0) -> Conveyor:
    settings = Settings(
        lease_seconds=5.0,
        rescue_interval=0.5,
        poll_interval=0.2,
        grace_period=2.0,
        connect_timeout=connect_timeout,
    )
    app = Conveyor(cluster.url, settings=settings)

    @app.task
    def echo(n: int) -> int:
        return n

    return app


def test_producer_and_worker_recover_within_seconds_after_an_outage(cluster):
    app = _app(cluster)
    try:
        with running_worker(app, concurrency=4), Producer(app) as producer:
            # Both work before the outage.
            first = app.enqueue("echo", {"n": 0})
            wait_until(lambda: first.refresh().state is JobState.COMPLETED, 10, what="first job")
            cluster.stop()
            down_at = time.monotonic()
            wait_until(lambda: [t for t, _ in producer.errors if t > down_at], 10, what="a failure")
            time.sleep(3.0)
            cluster.start()  # returns once the server accepts connections
            back_at = time.monotonic()

            wait_until(lambda: [t for t in producer.ok if t > back_at], 10, what="an enqueue after")
            enqueue_back = min(t for t in producer.ok if t > back_at) - back_at
            job = app.enqueue("echo", {"n": 2})
            wait_until(
                lambda: job.refresh().state is JobState.COMPLETED, 10, what="a job run after"
            )
            worker_back = time.monotonic() - back_at
        failures = [exc for t, exc in producer.errors if down_at < t < back_at]
        assert failures and all(isinstance(exc, StoreError) for exc in failures), failures[:3]
        print(f"recovery: enqueue {enqueue_back:.2f} s, worker {worker_back:.2f} s")
        assert enqueue_back < RECOVERY, f"enqueue came back {enqueue_back:.2f} s after the server"
        assert worker_back < RECOVERY + 1.0, (
            f"a job enqueued after the outage completed {worker_back:.2f} s after the server "
            "came back"
        )
    finally:
        app.close()


def test_enqueue_while_the_server_is_down_fails_within_connect_timeout(cluster):
    app = _app(cluster, connect_timeout=1.0)
    try:
        app.enqueue("echo", {"n": 0})  # connected once: its pooled connection now goes stale
        cluster.stop()
        started = time.monotonic()
        with pytest.raises(StoreError) as caught:
            app.enqueue("echo", {"n": 1})
        took = time.monotonic() - started
        message = str(caught.value)
        print(f"enqueue while down failed after {took:.2f} s: {message}")
        assert took < 1.0 + 1.5, f"the enqueue failed only after {took:.2f} s"
        assert f"127.0.0.1:{cluster.port}/postgres" in message, message
        assert "within 1 s (connect_timeout)" in message, message
    finally:
        app.close()
