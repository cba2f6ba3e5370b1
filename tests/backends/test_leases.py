"""Leases: heartbeat, release (claimed jobs given back unstarted) and rescue of expired leases."""

from __future__ import annotations

import time

import pytest

from conveyor.backends.base import RescueResult
from conveyor.model.states import JobState

from .factory import (
    claim,
    claim_one,
    get,
    heartbeat,
    insert,
    insert_one,
    new_job,
    outcome,
    release,
)

WORKER_LOST = "worker lost"


# heartbeat ------------------------------------------------------------------------------
def test_heartbeat_extends_the_lease(backend):
    now = time.time()
    a, b = insert(backend, new_job(now=now), new_job(now=now))
    claim(backend, worker_id="w1", lease=10, now=now)

    assert heartbeat(backend, [a.id, b.id], lease=10, now=now + 8) == {a.id: False, b.id: False}

    for job in (a, b):
        record = get(backend, job.id)
        assert record.lease_expires_at == pytest.approx(now + 18, abs=1e-6)
        assert record.state is JobState.ACTIVE and record.worker_id == "w1"


def test_heartbeat_reports_held_jobs_and_cancel_requests(backend):
    now = time.time()
    a, b = insert(backend, new_job(now=now), new_job(now=now))
    claim(backend, worker_id="w1", now=now)
    backend.job_cancel(b.id, now + 1)

    assert heartbeat(backend, [a.id, b.id], now=now + 2) == {a.id: False, b.id: True}
    assert get(backend, b.id).lease_expires_at == pytest.approx(now + 32, abs=1e-6)


def test_heartbeat_does_not_extend_another_workers_jobs(backend):
    now = time.time()
    job = insert_one(backend, now=now)
    claim(backend, worker_id="w1", lease=10, now=now)
    backend.job_cancel(job.id, now + 1)

    assert heartbeat(backend, [job.id], worker_id="w2", lease=100, now=now + 5) == {}

    record = get(backend, job.id)
    assert record.lease_expires_at == pytest.approx(now + 10, abs=1e-6)
    assert record.worker_id == "w1"


def test_heartbeat_leaves_finished_and_pending_jobs_alone(backend):
    now = time.time()
    done, pending = insert(backend, new_job(now=now), new_job(now=now + 0.001))
    running = claim_one(backend, now=now)
    assert running.id == done.id
    backend.job_complete_many([outcome(running, "completed", finished_at=now + 1)])
    before = (get(backend, done.id), get(backend, pending.id))

    assert heartbeat(backend, [done.id, pending.id, "no-such-job"], now=now + 2) == {}

    assert (get(backend, done.id), get(backend, pending.id)) == before


# release --------------------------------------------------------------------------------
def test_release_of_a_job_whose_handler_never_started_does_not_count_the_attempt(backend):
    """A claimed job given back before its handler started costs nothing, so even a job
    with max_attempts=1 runs later. (A job whose handler had started is not released: the
    engine records that attempt as a counted retry, so max_attempts bounds every run.)"""
    now = time.time()
    job = insert_one(backend, now=now, max_attempts=1)
    running = claim_one(backend, worker_id="w1", now=now)
    assert running.attempt == 1

    release(backend, [job.id], now=now + 5)

    record = get(backend, job.id)
    assert record.state is JobState.QUEUED
    assert record.attempt == 0
    assert record.errors == ()
    assert record.worker_id is None and record.lease_expires_at is None
    assert record.finished_at is None
    again = claim_one(backend, worker_id="w2", now=now + 5)
    assert again.id == job.id and again.attempt == 1


def test_released_job_with_a_cancel_request_ends_cancelled(backend):
    now = time.time()
    job = insert_one(backend, now=now)
    claim_one(backend, now=now)
    backend.job_cancel(job.id, now + 1)

    release(backend, [job.id], now=now + 2)

    record = get(backend, job.id)
    assert record.state is JobState.CANCELLED
    assert record.finished_at == pytest.approx(now + 2, abs=1e-6)
    assert claim(backend, now=now + 3) == []


def test_release_by_another_worker_is_ignored(backend):
    now = time.time()
    job = insert_one(backend, now=now)
    claim_one(backend, worker_id="w1", now=now)
    before = get(backend, job.id)

    assert release(backend, [job.id], worker_id="w2", now=now + 1) == {}

    assert get(backend, job.id) == before


def test_release_of_several_jobs(backend):
    now = time.time()
    jobs = insert(backend, *[new_job(now=now) for _ in range(3)])
    claim(backend, limit=3, now=now)
    changes = release(backend, [j.id for j in jobs], now=now + 1)
    assert set(changes) == {j.id for j in jobs}
    assert all(get(backend, j.id).state is JobState.QUEUED for j in jobs)
    assert len(claim(backend, limit=10, now=now + 1)) == 3


# rescue ---------------------------------------------------------------------------------
def test_expired_lease_is_rescued_with_the_attempt_counted(backend):
    now = time.time()
    job = insert_one(backend, now=now, max_attempts=3)
    claim_one(backend, worker_id="w1", lease=10, now=now)

    assert backend.job_rescue_expired(now + 11) == RescueResult(requeued=1, failed=0, cancelled=0)

    record = get(backend, job.id)
    assert record.state is JobState.QUEUED
    assert record.attempt == 1
    assert record.worker_id is None and record.lease_expires_at is None
    assert record.finished_at is None
    (error,) = record.errors
    assert error.attempt == 1
    assert WORKER_LOST in error.error
    assert error.at == pytest.approx(now + 11, abs=1e-3)  # JSON text keeps ~15 digits
    again = claim_one(backend, worker_id="w2", now=now + 12)
    assert again.id == job.id and again.attempt == 2


def test_unexpired_leases_are_not_rescued(backend):
    now = time.time()
    job = insert_one(backend, now=now)
    claim_one(backend, lease=10, now=now)
    before = get(backend, job.id)

    assert backend.job_rescue_expired(now + 9) == RescueResult(0, 0, 0)

    assert get(backend, job.id) == before


def test_heartbeat_keeps_a_job_from_rescue(backend):
    now = time.time()
    job = insert_one(backend, now=now)
    claim_one(backend, lease=10, now=now)
    heartbeat(backend, [job.id], lease=10, now=now + 8)

    assert backend.job_rescue_expired(now + 12) == RescueResult(0, 0, 0)
    assert get(backend, job.id).state is JobState.ACTIVE


def test_rescue_out_of_attempts_fails_the_job(backend):
    now = time.time()
    job = insert_one(backend, now=now, max_attempts=1)
    claim_one(backend, lease=10, now=now)

    assert backend.job_rescue_expired(now + 11) == RescueResult(requeued=0, failed=1, cancelled=0)

    record = get(backend, job.id)
    assert record.state is JobState.FAILED
    assert record.finished_at == pytest.approx(now + 11, abs=1e-6)
    assert record.attempt == 1
    assert WORKER_LOST in record.last_error
    assert claim(backend, now=now + 12) == []


def test_rescue_of_a_job_with_a_cancel_request_cancels_it(backend):
    now = time.time()
    job = insert_one(backend, now=now, max_attempts=3)
    claim_one(backend, lease=10, now=now)
    backend.job_cancel(job.id, now + 1)

    assert backend.job_rescue_expired(now + 11) == RescueResult(requeued=0, failed=0, cancelled=1)

    record = get(backend, job.id)
    assert record.state is JobState.CANCELLED
    assert record.finished_at == pytest.approx(now + 11, abs=1e-6)
    assert claim(backend, now=now + 12) == []


def test_rescue_counts_each_outcome(backend):
    now = time.time()
    again = [new_job(now=now, max_attempts=3) for _ in range(2)]
    dead = new_job(now=now, max_attempts=1)
    cancel = new_job(now=now, max_attempts=3)
    alive = new_job(now=now, queue="other")
    pending = new_job(now=now, queue="idle")
    insert(backend, *again, dead, cancel, alive, pending)
    claim(backend, limit=10, lease=10, now=now)
    claim(backend, ("other",), lease=100, now=now)
    backend.job_cancel(cancel.id, now + 1)

    result = backend.job_rescue_expired(now + 11)

    assert result == RescueResult(requeued=2, failed=1, cancelled=1)
    assert [get(backend, j.id).state for j in again] == [JobState.QUEUED] * 2
    assert get(backend, dead.id).state is JobState.FAILED
    assert get(backend, cancel.id).state is JobState.CANCELLED
    assert get(backend, alive.id).state is JobState.ACTIVE
    assert get(backend, pending.id).state is JobState.QUEUED
    assert get(backend, pending.id).errors == ()
    assert backend.job_rescue_expired(now + 12) == RescueResult(0, 0, 0)
