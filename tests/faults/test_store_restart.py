"""PostgreSQL restarts under load: worker processes reconnect and finish every job.

Two real worker processes work through 2,000 short jobs; a quarter of the way in, the
PostgreSQL server is restarted (fast shutdown: every connection is cut, uncommitted work is
rolled back), or stopped for longer than a lease and started again. Afterwards every job
must end `completed`, and both workers must still be running (they reconnected rather than
crashed) and exit cleanly on SIGTERM.

This restarts the shared local server, so it runs only against a local cluster managed with
`pg_ctlcluster`, and always leaves the server running. CONVEYOR_TEST_NO_STORE_RESTART=1 (or
CONVEYOR_TEST_STORES without postgres) skips it; if PostgreSQL is unreachable it is skipped,
except under CI=true, where it fails.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import POSTGRES_URL, SELECTED_STORES, require_store
from conveyor import Conveyor, JobState
from conveyor.backends.base import JobListParams

from .helpers import (
    OUTAGE_APP_MODULE,
    Fixture,
    default_queue_counts,
    fresh_counts,
    kill_all,
    wait_for_exit,
)

psycopg = pytest.importorskip("psycopg")
from psycopg import sql  # noqa: E402 -- after the importorskip above

_WHERE = urlsplit(POSTGRES_URL)
HOST, PORT = _WHERE.hostname or "127.0.0.1", _WHERE.port or 5432

pytestmark = pytest.mark.skipif(
    os.environ.get("CONVEYOR_TEST_NO_STORE_RESTART") == "1"
    or "postgres" not in SELECTED_STORES
    or HOST not in ("127.0.0.1", "localhost", "::1")
    or shutil.which("pg_ctlcluster") is None
    or not Path("/etc/postgresql").is_dir(),
    reason="restarts a local PostgreSQL cluster: needs pg_ctlcluster and a local server "
    "(disabled by CONVEYOR_TEST_NO_STORE_RESTART=1 or CONVEYOR_TEST_STORES)",
)

TOTAL = 2000


def _pg_ctlcluster(action: str) -> subprocess.CompletedProcess[str]:
    versions = sorted(os.listdir("/etc/postgresql"))
    assert len(versions) == 1, f"expected one PostgreSQL version in /etc/postgresql: {versions}"
    return subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[0], "main", action],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _ready() -> bool:
    try:
        done = subprocess.run(
            ["pg_isready", "-h", HOST, "-p", str(PORT)], capture_output=True, timeout=10
        )
    except subprocess.TimeoutExpired:
        return False
    return done.returncode == 0


def _wait_ready(timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not _ready():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def _ensure_running() -> None:
    """Leave the shared server up, whatever happened in the test."""
    if _wait_ready(10):
        return
    started = _pg_ctlcluster("start")
    assert _wait_ready(60), f"PostgreSQL did not come back: {started.stdout}{started.stderr}"


@pytest.fixture
def pg_url() -> Iterator[str]:
    require_store("postgres")
    schema = f"t_restart_{uuid.uuid4().hex}"
    try:
        yield f"{POSTGRES_URL}{'&' if '?' in POSTGRES_URL else '?'}schema={schema}"
    finally:
        _ensure_running()
        with psycopg.connect(POSTGRES_URL, connect_timeout=5, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '10s'")
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _fresh_counts(url: str) -> dict[str, int] | None:
    return fresh_counts(url, (psycopg.Error,))


def _restart() -> None:
    done = _pg_ctlcluster("restart")
    assert done.returncode == 0, f"restart failed: {done.stdout}{done.stderr}"


def _down_for_a_while() -> None:
    """Longer than a lease: heartbeats fail, outcomes give up, leases expire and are rescued."""
    done = _pg_ctlcluster("stop")
    assert done.returncode == 0, f"stop failed: {done.stdout}{done.stderr}"
    time.sleep(3.0)
    done = _pg_ctlcluster("start")
    assert done.returncode == 0, f"start failed: {done.stdout}{done.stderr}"


@pytest.mark.parametrize("outage", [_restart, _down_for_a_while], ids=["restart", "down-3s"])
def test_workers_survive_a_database_outage_and_finish_every_job(tmp_path, pg_url, outage):
    fx = Fixture(tmp_path, pg_url, grace=5.0)
    fx.write_app()
    (tmp_path / "app_mod.py").write_text(
        OUTAGE_APP_MODULE.format(url=pg_url, lease=2.0, rescue=0.5)
    )

    workers: list[subprocess.Popen] = []
    names = ("worker-a", "worker-b")
    app = Conveyor(pg_url)
    try:
        app.backend  # noqa: B018 -- create the schema before the workers race to
        workers = [fx.start(name, concurrency=20) for name in names]

        def check_alive() -> None:
            for name, proc in zip(names, workers, strict=True):
                assert proc.poll() is None, f"{name} exited early:\n{fx.output(name)}"

        # Both workers run before the jobs arrive: the outage must hit running workers.
        deadline = time.monotonic() + 30
        while not all(" started: queues " in fx.output(name) for name in names):
            check_alive()
            assert time.monotonic() < deadline, "the workers did not start within 30 s"
            time.sleep(0.05)
        jobs = app.enqueue_many([app.prepare("work", {"n": i}) for i in range(TOTAL)])
        ids = {job.id for job in jobs}
        assert len(ids) == TOTAL

        # Wait for a quarter of the jobs (bounded), watching that the workers keep running.
        deadline = time.monotonic() + 30
        while (done := default_queue_counts(app)["completed"]) < TOTAL // 4:
            check_alive()
            assert time.monotonic() < deadline, f"only {done} jobs completed in 30 s"
            time.sleep(0.005)
        app.close()
        assert done < TOTAL, "every job finished before the restart: nothing was tested"

        outage()
        assert _wait_ready(60), "PostgreSQL not ready within 60 s of the restart"

        deadline = time.monotonic() + 120
        counts = _fresh_counts(pg_url)
        while counts is None or counts["completed"] < TOTAL:
            alive = [proc.poll() is None for proc in workers]
            if not all(alive) or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
            counts = _fresh_counts(pg_url)

        alive = {name: proc.poll() for name, proc in zip(names, workers, strict=True)}
        logs = "\n".join(f"--- {name}:\n{fx.output(name)[-4000:]}" for name in names)
        assert all(code is None for code in alive.values()), f"a worker died: {alive}\n{logs}"
        assert counts is not None, f"the store is not readable after the restart\n{logs}"
        assert counts["completed"] == TOTAL, f"jobs not all completed: {counts}\n{logs}"
        assert counts["active"] == counts["queued"] == counts["scheduled"] == 0, counts

        check = Conveyor(pg_url, migrate=False)
        try:
            records = check.backend.job_list(JobListParams(limit=TOTAL + 10))
        finally:
            check.close()
        assert {r.id for r in records} == ids
        assert {r.state for r in records} == {JobState.COMPLETED}
        assert all(r.result == r.data["n"] for r in records)
        # The workers went on claiming from the restarted server (on new connections).
        with psycopg.connect(POSTGRES_URL, connect_timeout=5) as conn:
            (back_at,) = conn.execute(
                "SELECT extract(epoch FROM pg_postmaster_start_time())::float8"
            ).fetchone()
        claimed_after = sum(r.started_at > back_at for r in records)
        assert claimed_after > 0, "no job was claimed after the restart: nothing was tested"

        runs = fx.executions()
        assert set(runs) == ids, f"{len(ids - set(runs))} jobs never ran"
        # A job that ran again was handed out anew: its result is that of its last attempt.
        last_attempt = {r.id: r.attempt for r in records}
        assert all(max(a for a, _ in runs[i]) == last_attempt[i] for i in ids)

        for proc in workers:
            proc.send_signal(signal.SIGTERM)
        for name, proc in zip(names, workers, strict=True):
            assert wait_for_exit(proc, 20) == 0, fx.output(name)[-4000:]
    finally:
        app.close()
        kill_all(*workers)
        _ensure_running()
