"""Operator actions: cancel, manual retry and pruning of finished jobs."""

from __future__ import annotations

import time

import pytest

from conveyor.backends.base import JobListParams, PruneParams
from conveyor.model.errors import InvalidTransition, JobNotFound
from conveyor.model.states import JobState

from .factory import claim, claim_one, get, insert, insert_one, new_job, outcome


def finished_job(backend, kind, *, now, max_attempts=3, key=None):
    """A job that ran once and ended `kind` (completed, failed or cancelled) at `now`."""
    job = insert_one(
        backend, now=now - 10, max_attempts=max_attempts, key=key, queue=f"q-{kind}-{now}"
    )
    running = claim_one(backend, queues=(job.queue,), now=now - 5)
    if kind == "cancelled":
        backend.job_cancel(job.id, now - 1)
    backend.job_complete_many([outcome(running, kind, finished_at=now, result="r", error="boom")])
    record = get(backend, job.id)
    assert record.state == kind
    return record


# cancel ---------------------------------------------------------------------------------
@pytest.mark.parametrize("delay", [0, 3600], ids=["queued", "scheduled"])
def test_cancel_of_a_pending_job_is_immediate(backend, delay):
    now = time.time()
    job = insert_one(backend, now=now, delay=delay)

    returned = backend.job_cancel(job.id, now + 1).record

    for record in (returned, get(backend, job.id)):
        assert record is not None
        assert record.id == job.id
        assert record.state is JobState.CANCELLED
        assert record.finished_at == pytest.approx(now + 1, abs=1e-6)
    assert claim(backend, now=now + 7200) == []


def test_cancel_of_an_active_job_requests_it(backend):
    now = time.time()
    job = insert_one(backend, now=now)
    running = claim_one(backend, now=now)

    returned = backend.job_cancel(job.id, now + 1).record

    for record in (returned, get(backend, job.id)):
        assert record is not None
        assert record.state is JobState.ACTIVE
        assert record.cancel_requested is True
        assert record.worker_id == running.worker_id
        assert record.attempt == 1
        assert record.finished_at is None
    # Asking twice is harmless.
    again = backend.job_cancel(job.id, now + 2).record
    assert again is not None and again.cancel_requested is True


@pytest.mark.parametrize("kind", ["completed", "failed", "cancelled"])
def test_cancel_of_a_finished_job_is_refused(backend, kind):
    now = time.time()
    job = finished_job(backend, kind, now=now)

    with pytest.raises(InvalidTransition, match=kind):
        backend.job_cancel(job.id, now + 1)

    assert get(backend, job.id) == job


def test_cancel_of_an_unknown_job_raises_not_found(backend):
    with pytest.raises(JobNotFound, match="no-such-job"):
        backend.job_cancel("no-such-job")


# manual retry ---------------------------------------------------------------------------
def test_retry_of_a_failed_job_allows_one_more_attempt(backend):
    now = time.time()
    job = finished_job(backend, "failed", now=now, max_attempts=1)
    assert job.attempt == 1

    returned = backend.job_retry(job.id, now + 1).record

    for record in (returned, get(backend, job.id)):
        assert record is not None
        assert record.state is JobState.QUEUED
        assert record.max_attempts >= record.attempt + 1
        assert record.finished_at is None
        assert record.result is None
        assert record.worker_id is None
        assert record.errors == job.errors  # the history stays
    again = claim_one(backend, queues=(job.queue,), now=now + 1)
    assert again.id == job.id
    assert again.attempt == 2
    assert again.attempt <= again.max_attempts


def test_retry_of_a_cancelled_pending_job(backend):
    now = time.time()
    job = insert_one(backend, now=now, max_attempts=3)
    backend.job_cancel(job.id, now)

    returned = backend.job_retry(job.id, now + 1).record

    assert returned is not None
    assert returned.state is JobState.QUEUED
    assert returned.max_attempts == 3
    assert returned.finished_at is None
    assert claim_one(backend, now=now + 1).attempt == 1


def test_retry_of_a_job_cancelled_while_running_clears_the_request(backend):
    now = time.time()
    job = finished_job(backend, "cancelled", now=now, max_attempts=1)
    assert job.cancel_requested

    returned = backend.job_retry(job.id, now + 1).record

    assert returned is not None
    assert returned.state is JobState.QUEUED
    assert returned.cancel_requested is False
    again = claim_one(backend, queues=(job.queue,), now=now + 2)
    assert again.cancel_requested is False
    assert again.attempt == 2 and again.attempt <= again.max_attempts


@pytest.mark.parametrize("state", ["queued", "scheduled", "active", "completed"])
def test_retry_of_a_job_that_did_not_fail_is_refused(backend, state):
    now = time.time()
    if state == "completed":
        job = finished_job(backend, "completed", now=now)
    else:
        job = insert_one(backend, now=now, delay=3600 if state == "scheduled" else 0)
        if state == "active":
            claim_one(backend, now=now)
        job = get(backend, job.id)
    assert job.state == state

    with pytest.raises(InvalidTransition, match=state):
        backend.job_retry(job.id, now + 1)

    assert get(backend, job.id) == job


def test_retry_of_an_unknown_job_raises_not_found(backend):
    with pytest.raises(JobNotFound, match="no-such-job"):
        backend.job_retry("no-such-job")


def test_retry_refused_while_another_job_holds_the_key(backend):
    now = time.time()
    failed = finished_job(backend, "failed", now=now, key="k")
    newer = insert_one(backend, queue=failed.queue, key="k", now=now + 1)
    assert newer.id != failed.id

    with pytest.raises(InvalidTransition):
        backend.job_retry(failed.id, now + 2)

    assert get(backend, failed.id) == failed
    assert get(backend, newer.id).state is JobState.QUEUED


# prune ----------------------------------------------------------------------------------
def prune(backend, *, keep_completed, keep_failed, limit=1000, now=None) -> int:
    return backend.job_prune(
        PruneParams(keep_completed=keep_completed, keep_failed=keep_failed, limit=limit, now=now)
    )


def test_prune_removes_finished_jobs_older_than_their_retention(backend):
    now = time.time()
    old_completed = finished_job(backend, "completed", now=now - 1000)
    new_completed = finished_job(backend, "completed", now=now - 10)
    old_failed = finished_job(backend, "failed", now=now - 5000)
    mid_failed = finished_job(backend, "failed", now=now - 1000)
    old_cancelled = finished_job(backend, "cancelled", now=now - 5000)
    mid_cancelled = finished_job(backend, "cancelled", now=now - 1000)
    old_queued = insert_one(backend, now=now - 9000)
    scheduled = insert_one(backend, now=now - 9000, delay=99999)
    active = insert_one(backend, now=now - 9000, queue="busy")
    claim_one(backend, queues=("busy",), now=now - 8000)

    removed = prune(backend, keep_completed=100, keep_failed=2000, now=now)

    assert removed == 3
    gone = {old_completed.id, old_failed.id, old_cancelled.id}
    kept = {
        new_completed.id,
        mid_failed.id,
        mid_cancelled.id,
        old_queued.id,
        scheduled.id,
        active.id,
    }
    assert all(backend.job_get(i) is None for i in gone)
    assert all(backend.job_get(i) is not None for i in kept)
    assert {r.id for r in backend.job_list(JobListParams(limit=100))} == kept
    assert prune(backend, keep_completed=100, keep_failed=2000, now=now) == 0


def test_prune_deletes_at_most_its_limit_per_call(backend):
    now = time.time()
    prunable = {
        finished_job(backend, kind, now=now - 1000 - n).id
        for n, kind in enumerate(["completed", "failed", "cancelled", "completed", "failed"])
    }
    recent = {finished_job(backend, kind, now=now - 10).id for kind in ("completed", "failed")}
    unfinished = {
        insert_one(backend, now=now - 9000).id,
        insert_one(backend, now=now - 9000, delay=99999).id,
    }

    removed = [prune(backend, keep_completed=100, keep_failed=100, limit=2, now=now)]
    while removed[-1]:
        assert len(removed) < 10, f"prune keeps deleting: {removed}"
        removed.append(prune(backend, keep_completed=100, keep_failed=100, limit=2, now=now))

    assert removed == [2, 2, 1, 0]
    assert all(backend.job_get(i) is None for i in prunable)
    assert {r.id for r in backend.job_list(JobListParams(limit=100))} == recent | unfinished


def test_prune_without_now_judges_retention_by_the_stores_clock(backend):
    now = time.time()
    old = finished_job(backend, "completed", now=now - 1000)
    job = insert_one(backend, queue="fresh")
    running = claim_one(backend, queues=("fresh",))
    backend.job_complete_many([outcome(running, "completed")])  # finished by the store's clock

    assert prune(backend, keep_completed=100, keep_failed=100) == 1

    assert backend.job_get(old.id) is None
    assert get(backend, job.id).state is JobState.COMPLETED


def test_prune_never_removes_pending_or_active_jobs(backend):
    now = time.time()
    jobs = insert(
        backend,
        new_job(now=now - 10**6),
        new_job(now=now - 10**6, delay=10**7),
        new_job(now=now - 10**6, queue="busy"),
    )
    claim_one(backend, queues=("busy",), now=now - 10**5)

    assert prune(backend, keep_completed=0, keep_failed=0, now=now + 10**6) == 0

    assert all(backend.job_get(j.id) is not None for j in jobs)
