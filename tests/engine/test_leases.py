"""Leases: a dead worker's claimed jobs are rescued ("worker lost") and run again."""

from __future__ import annotations

import asyncio
import time

import pytest

from conveyor import JobFailed, JobState, current_job
from conveyor.backends.base import ClaimParams

from .helpers import running_worker, wait_until


def _claim_as_dead_worker(app, lease_seconds=0.5, limit=10):
    """Claim like a worker that then dies: the jobs are never finished nor heartbeated."""
    return app.backend.job_claim(
        ClaimParams(
            queues=("default",),
            limit=limit,
            worker_id="dead-worker",
            lease_seconds=lease_seconds,
            now=time.time(),
        )
    )


def test_expired_lease_is_rescued_and_the_job_completes_on_attempt_two(make_app):
    app = make_app()  # FAST: rescue every 0.2 s

    @app.task
    def work() -> int:
        return current_job().attempt

    job = work.enqueue()
    claimed = _claim_as_dead_worker(app)
    assert [r.id for r in claimed] == [job.id]
    assert claimed[0].attempt == 1
    with running_worker(app):
        assert job.result(timeout=5) == 2
    record = app.get_job(job.id).record
    assert record.state == JobState.COMPLETED
    assert record.attempt == 2
    assert len(record.errors) == 1
    assert record.errors[0].attempt == 1
    assert "worker lost" in record.errors[0].error
    assert record.worker_id != "dead-worker"
    # not before the lease ran out
    assert record.errors[0].at >= claimed[0].lease_expires_at


def test_out_of_attempts_a_lost_job_fails_with_worker_lost(make_app):
    app = make_app()
    ran: list[str] = []

    @app.task(max_attempts=1)
    def work() -> None:
        ran.append("ran")

    job = work.enqueue()
    _claim_as_dead_worker(app)
    with running_worker(app), pytest.raises(JobFailed, match="worker lost"):
        job.result(timeout=5)
    record = app.get_job(job.id).record
    assert record.state == JobState.FAILED
    assert record.attempt == 1
    assert [e.attempt for e in record.errors] == [1]
    assert "worker lost" in record.errors[0].error
    assert ran == []


def test_a_live_worker_keeps_its_lease_on_a_long_job(make_app):
    app = make_app()  # lease 1 s, renewed every ~0.33 s

    @app.task
    async def longer_than_a_lease() -> int:
        await asyncio.sleep(2.0)
        return current_job().attempt

    with running_worker(app):
        job = longer_than_a_lease.enqueue()
        wait_until(lambda: app.get_job(job.id).state == JobState.ACTIVE, 5)
        first_lease = app.get_job(job.id).record.lease_expires_at
        wait_until(
            lambda: (app.get_job(job.id).record.lease_expires_at or 0) > first_lease,
            2,
            what="lease renewed by heartbeat",
        )
        assert job.result(timeout=5) == 1
    record = app.get_job(job.id).record
    assert record.attempt == 1
    assert record.errors == ()


def test_a_lost_job_with_a_cancel_request_ends_cancelled_not_rerun(make_app):
    app = make_app()
    ran: list[str] = []

    @app.task
    def work() -> None:
        ran.append("ran")

    job = work.enqueue()
    _claim_as_dead_worker(app, lease_seconds=0.3)
    assert app.cancel_job(job.id).record.cancel_requested
    with running_worker(app):
        wait_until(lambda: app.get_job(job.id).state == JobState.CANCELLED, 5)
    record = app.get_job(job.id).record
    assert record.attempt == 1
    assert "worker lost" in record.errors[0].error
    assert ran == []
