"""Redis restarts, crashes and lost script caches: the store reconnects and carries on.

Every test here runs its own `redis-server` (never the shared one the other tests use) in
its tmp_path, on a free localhost port, with an append-only file fsynced on every write: a
clean stop (SIGTERM: SHUTDOWN, which writes the AOF) and a crash (SIGKILL) both lose nothing
the server acknowledged, so what a test sees after a restart is what the store wrote.

- Two real worker processes work through 2,000 short jobs; a quarter of the way in the
  server is restarted, or killed and kept down for longer than a lease. Every job must end
  `completed`, and both workers must still be running afterwards and exit cleanly.
- The server forgets its Lua scripts on SCRIPT FLUSH and on every restart: an open store
  must load them again, not fail with NOSCRIPT.
- A server that may evict keys (and with them jobs) is reported when the store opens.
- Recovery is quick and failure is prompt: after a restart, enqueue and an idle worker work
  again within a few seconds; while the server is down, enqueue fails within connect_timeout
  with a StoreError naming the store, and the wake-up subscription says once that it was
  lost and once that it is back.

Needs `redis-server` on PATH: without it the tests are skipped loudly, or fail under CI=true.
CONVEYOR_TEST_STORES without `redis` skips them.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import SELECTED_STORES
from conveyor import Conveyor, JobState, Settings, StoreError
from conveyor.backends.base import JobListParams
from conveyor.backends.redis.connection import public_url
from conveyor.backends.redis.keys import StoreKeys, split_url
from engine.helpers import run_burst, running_worker

from .helpers import (
    OUTAGE_APP_MODULE,
    Fixture,
    default_queue_counts,
    fresh_counts,
    kill_all,
    wait_for_exit,
)
from .private_redis import PrivateRedis, require_redis_server

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError:  # reported by the `server` fixture: a loud skip, or a failure under CI
    redis = None  # type: ignore[assignment]


pytestmark = pytest.mark.skipif(
    "redis" not in SELECTED_STORES,
    reason="CONVEYOR_TEST_STORES does not include redis",
)

TOTAL = 2000


@pytest.fixture
def server(tmp_path: Path) -> Iterator[PrivateRedis]:
    """A fresh private redis-server, always killed at the end."""
    private = PrivateRedis(require_redis_server(), tmp_path)
    try:
        private.start()
        yield private
    finally:
        private.kill()


def _fresh_counts(url: str) -> dict[str, int] | None:
    return fresh_counts(url, (redis.RedisError,))


def _completed_in_store(server: PrivateRedis, url: str) -> int | None:
    """The completed jobs of queue `default`, read with a plain client (None while the server
    is down). No Conveyor is opened, so no script is loaded on the workers' behalf: after
    the outage they must load their own."""
    completed = StoreKeys(split_url(url)[1]).queue("default").keys[3]
    assert completed.endswith(":completed"), completed
    client = server.client(retry=Retry(NoBackoff(), 0))
    try:
        return int(client.zcard(completed))
    except redis.RedisError:
        return None
    finally:
        client.close()


def _restart(server: PrivateRedis) -> None:
    """Clean SHUTDOWN, started again at once: every connection is cut."""
    server.stop()
    server.start()


def _down_for_a_while(server: PrivateRedis) -> None:
    """A crash, down for longer than a lease: heartbeats and outcomes fail, leases expire."""
    server.stop(crash=True)
    time.sleep(3.0)
    server.start()


@pytest.mark.parametrize("outage", [_restart, _down_for_a_while], ids=["restart", "down-3s"])
def test_workers_survive_a_redis_outage_and_finish_every_job(
    tmp_path: Path, server: PrivateRedis, outage: Callable[[PrivateRedis], None]
) -> None:
    url = server.url()
    fx = Fixture(tmp_path, url, grace=5.0)
    fx.write_app()
    (tmp_path / "app_mod.py").write_text(OUTAGE_APP_MODULE.format(url=url, lease=1.0, rescue=0.3))

    workers: list[subprocess.Popen[bytes]] = []
    names = ("worker-a", "worker-b")
    app = Conveyor(url)
    try:
        app.backend  # noqa: B018 -- set the store up before the workers race to
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
        assert done < TOTAL, "every job finished before the outage: nothing was tested"

        outage(server)
        back_at = server.launched_at

        deadline = time.monotonic() + 60
        while (finished := _completed_in_store(server, url)) != TOTAL:
            if not all(proc.poll() is None for proc in workers) or time.monotonic() >= deadline:
                break
            time.sleep(0.2)
        counts = _fresh_counts(url)

        alive = {name: proc.poll() for name, proc in zip(names, workers, strict=True)}
        logs = "\n".join(f"--- {name}:\n{fx.output(name)[-4000:]}" for name in names)
        assert all(code is None for code in alive.values()), f"a worker died: {alive}\n{logs}"
        assert finished == TOTAL, f"{finished}/{TOTAL} jobs completed 60 s after the outage\n{logs}"
        assert counts is not None, f"the store is not readable after the outage\n{logs}"
        assert counts["completed"] == TOTAL, f"jobs not all completed: {counts}\n{logs}"
        assert counts["active"] == counts["queued"] == counts["scheduled"] == 0, counts
        assert counts["failed"] == counts["cancelled"] == 0, counts

        check = Conveyor(url, migrate=False)
        try:
            records = check.backend.job_list(JobListParams(limit=TOTAL + 10))
        finally:
            check.close()
        assert {r.id for r in records} == ids
        assert {r.state for r in records} == {JobState.COMPLETED}
        assert all(r.result == r.data["n"] for r in records)
        # The workers went on claiming from the restarted server (on new connections).
        claimed_after = sum(r.started_at is not None and r.started_at > back_at for r in records)
        assert claimed_after > 0, "no job was claimed after the outage: nothing was tested"

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


# In-process apps: a worker thread on the test's own Conveyor ------------------------------
FAST = Settings(lease_seconds=1.0, rescue_interval=0.2, poll_interval=0.2, grace_period=2.0)


def _app(url: str) -> Conveyor:
    app = Conveyor(url, settings=FAST)

    @app.task
    def double(n: int) -> int:
        return 2 * n

    return app


def _completed_result(app: Conveyor, job_id: str) -> Any:
    job = app.get_job(job_id)
    assert job is not None, f"job {job_id} not found"
    assert job.state is JobState.COMPLETED, f"job {job_id} is {job.state.value}"
    return job.record.result


def _script_loads(server: PrivateRedis) -> int:
    """How many SCRIPT LOAD calls the server has answered since it started."""
    client = server.client()
    try:
        stats = client.info("commandstats").get("cmdstat_script|load", {"calls": 0})
        return int(stats["calls"])
    finally:
        client.close()


def _script_flush(server: PrivateRedis) -> None:
    client = server.client()
    try:
        assert client.script_flush() is True
    finally:
        client.close()


def test_scripts_are_loaded_again_after_script_flush(server: PrivateRedis) -> None:
    app = _app(server.url())
    try:
        # Two queues: the claim then also peeks at both in one pipeline, whose scripts the
        # pipeline itself must load again.
        with running_worker(app, ["default", "other"], concurrency=2):
            first = app.enqueue("double", {"n": 1})
            assert first.result(timeout=10) == 2
            loads = _script_loads(server)

            _script_flush(server)
            # Enqueue, claim and acknowledge all run scripts the server no longer has.
            second = app.enqueue("double", {"n": 21})
            assert second.result(timeout=10) == 42
        assert _script_loads(server) > loads, "nothing was loaded again: nothing was tested"
    finally:
        app.close()


def test_an_open_app_works_on_after_a_server_restart(server: PrivateRedis) -> None:
    app = _app(server.url())
    try:
        with running_worker(app, concurrency=2):
            first = app.enqueue("double", {"n": 1})
            assert first.result(timeout=10) == 2

            server.stop()
            server.start()  # a new process: every connection is gone, and so are the scripts

            # The same app, not reopened: its client reconnects and loads the scripts again,
            # and its worker claims from the restarted server.
            second = app.enqueue("double", {"n": 21})
            assert second.result(timeout=15) == 42
            assert second.record.started_at is not None
            assert second.record.started_at > server.launched_at
        # What was written before the restart is still there (the AOF).
        assert _completed_result(app, first.id) == 2
        assert default_queue_counts(app)["completed"] == 2
    finally:
        app.close()


def test_a_worker_started_after_a_server_restart_runs_jobs(server: PrivateRedis) -> None:
    app = _app(server.url())
    try:
        first = app.enqueue("double", {"n": 1})
        run_burst(app, concurrency=2)  # subscribes the app's store to wake-ups
        assert _completed_result(app, first.id) == 2

        server.stop()
        server.start()

        second = app.enqueue("double", {"n": 21})
        worker = run_burst(app, concurrency=2)
        assert worker.jobs_done == 1
        assert _completed_result(app, second.id) == 42
    finally:
        app.close()


@pytest.mark.parametrize("policy", ["allkeys-lru", "volatile-ttl", "noeviction"])
def test_opening_warns_when_the_server_may_evict_jobs(
    server: PrivateRedis, policy: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = server.client()
    try:
        client.config_set("maxmemory-policy", policy)
    finally:
        client.close()

    caplog.set_level(logging.WARNING, logger="conveyor.store")
    app = Conveyor(server.url())
    try:
        app.backend  # noqa: B018 -- open the store: the check runs then
        app.enqueue("anything")  # the store works all the same
    finally:
        app.close()

    warnings = [
        r for r in caplog.records if r.name == "conveyor.store" and r.levelno >= logging.WARNING
    ]
    if policy == "noeviction":
        assert warnings == [], [r.getMessage() for r in warnings]
        return
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert warnings[0].levelno == logging.WARNING
    message = warnings[0].getMessage()
    assert f"maxmemory-policy {policy}" in message, message
    assert "noeviction" in message, message
    assert f"127.0.0.1:{server.port}" in message, message


# Recovery and prompt failure (issue 8, point 13) -------------------------------------------
RECOVERY = 5.0
"""Seconds within which enqueue and an idle worker must work again after a restart (the
store retries every 0.5 s at most; the idle worker polls every 0.2 s while unsubscribed)."""
QUICK = Settings(
    lease_seconds=1.0,
    rescue_interval=0.2,
    poll_interval=0.2,
    grace_period=2.0,
    connect_timeout=1.0,
)


def test_enqueue_and_a_worker_recover_within_seconds_after_a_restart(
    server: PrivateRedis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="conveyor.store")
    app = Conveyor(server.url(), settings=QUICK)

    @app.task
    def double(n: int) -> int:
        return 2 * n

    try:
        with running_worker(app, concurrency=2):
            assert app.enqueue("double", {"n": 1}).result(timeout=10) == 2
            server.stop()
            time.sleep(1.0)  # the idle worker's subscription notices it is gone
            server.start()
            back = time.monotonic()

            job = app.enqueue("double", {"n": 21})
            enqueued_in = time.monotonic() - back
            assert job.result(timeout=RECOVERY) == 42
            done_in = time.monotonic() - back
        assert enqueued_in < RECOVERY, f"enqueue took {enqueued_in:.1f} s after the restart"
        assert done_in < RECOVERY, f"the job completed {done_in:.1f} s after the restart"
    finally:
        app.close()

    said = [r.getMessage() for r in caplog.records if r.name == "conveyor.store"]
    lost = [m for m in said if m.startswith("lost the wake-up subscription")]
    restored = [m for m in said if m.startswith("wake-up subscription") and "restored" in m]
    assert len(lost) == 1, said
    assert len(restored) == 1, said
    assert f"127.0.0.1:{server.port}" in lost[0]


def test_enqueue_while_the_server_is_down_fails_within_connect_timeout(
    server: PrivateRedis,
) -> None:
    app = Conveyor(server.url(), settings=QUICK)
    try:
        app.enqueue("anything")  # opened and connected while the server is up
        server.stop()
        for _ in range(2):  # a pooled connection that broke, then no connection at all
            started = time.monotonic()
            with pytest.raises(StoreError) as raised:
                app.enqueue("anything")
            took = time.monotonic() - started
            assert took < QUICK.connect_timeout + 1.0, f"gave up after {took:.1f} s"
            message = str(raised.value)
            assert f"127.0.0.1:{server.port}" in message, message
            assert "within 1 s (connect_timeout)" in message, message
        server.start()
        assert app.enqueue("anything").id  # and works again at once
    finally:
        app.close()


def test_the_store_url_is_shown_without_its_password() -> None:
    shown = public_url("redis://user:sekrit@cache.internal:6380/2?prefix=shop")
    assert shown == "redis://user:***@cache.internal:6380/2?prefix=shop"
    assert public_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
