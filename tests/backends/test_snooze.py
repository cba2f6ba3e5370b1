"""Snooze outcomes: the job is postponed without costing an attempt.

The attempt goes back down by one and `snoozes` up by one, no error is recorded, the lease
is let go, and the job is due again `delay` s after the finish (or at `run_at`, test-only).
"""

from __future__ import annotations

import time

import pytest

from conveyor.backends.base import JobListParams
from conveyor.model.states import JobState

from .factory import claim, claim_one, complete, get, insert_one, outcome, store_window


def test_snooze_postpones_the_job_without_counting_the_attempt(backend):
    now = time.time()
    job = insert_one(backend, now=now, max_attempts=1)
    running = claim_one(backend, now=now)
    assert running.attempt == 1

    complete(backend, outcome(running, "snooze", finished_at=now + 1, delay=30))

    record = get(backend, job.id)
    assert record.state is JobState.SCHEDULED
    assert record.run_at == pytest.approx(now + 31, abs=1e-6)
    assert record.attempt == 0
    assert record.snoozes == 1
    assert record.errors == ()
    assert record.worker_id is None
    assert record.lease_expires_at is None
    assert record.started_at is None
    assert record.finished_at is None
    assert record.cancel_requested is False

    assert backend.job_list(JobListParams()) == [record]  # every read carries `snoozes`

    assert claim(backend, now=now + 30.5) == []
    again = claim_one(backend, now=now + 31)
    assert again.id == job.id and again.attempt == 1 and again.snoozes == 1


def test_snooze_without_delay_is_queued_and_due_at_once(backend):
    now = time.time()
    job = insert_one(backend, now=now)
    running = claim_one(backend, now=now)

    complete(backend, outcome(running, "snooze", finished_at=now + 1, delay=0))

    record = get(backend, job.id)
    assert record.state is JobState.QUEUED
    assert record.run_at == pytest.approx(now + 1, abs=1e-6)
    assert record.attempt == 0 and record.snoozes == 1
    assert claim_one(backend, now=now + 1).id == job.id


def test_snooze_run_at_overrides_the_delay(backend):
    now = time.time()
    job = insert_one(backend, now=now)
    running = claim_one(backend, now=now)

    complete(backend, outcome(running, "snooze", finished_at=now + 1, delay=30, run_at=now + 5))

    record = get(backend, job.id)
    assert record.state is JobState.SCHEDULED
    assert record.run_at == pytest.approx(now + 5, abs=1e-6)


def test_snooze_without_a_finish_time_counts_the_delay_from_the_stores_now(backend):
    job = insert_one(backend)
    running = claim_one(backend)

    _, window = store_window(
        backend, lambda: complete(backend, outcome(running, "snooze", delay=60))
    )

    record = get(backend, job.id)
    assert record.state is JobState.SCHEDULED
    assert window.holds(record.run_at, offset=60)


def test_snoozes_accumulate_and_keep_earlier_errors(backend):
    now = time.time()
    job = insert_one(backend, now=now, max_attempts=3)
    first = claim_one(backend, now=now)
    complete(backend, outcome(first, "retry", finished_at=now + 1, error="first try"))
    for n in (1, 2, 3):
        running = claim_one(backend, now=now + 10 * n)
        assert running.attempt == 2
        complete(backend, outcome(running, "snooze", finished_at=now + 10 * n, delay=0))

    record = get(backend, job.id)
    assert record.state is JobState.QUEUED
    assert record.attempt == 1
    assert record.snoozes == 3
    assert [(e.attempt, e.error) for e in record.errors] == [(1, "first try")]
    assert claim_one(backend, now=now + 40).attempt == 2


def test_snooze_of_a_job_with_a_cancel_request_ends_cancelled(backend):
    now = time.time()
    job = insert_one(backend, now=now)
    running = claim_one(backend, now=now)
    backend.job_cancel(job.id, now + 1)

    complete(backend, outcome(running, "snooze", finished_at=now + 2, delay=30))

    record = get(backend, job.id)
    assert record.state is JobState.CANCELLED
    assert record.finished_at == pytest.approx(now + 2, abs=1e-6)
    assert record.attempt == 0
    assert record.errors == ()
    assert record.worker_id is None and record.lease_expires_at is None
    assert claim(backend, now=now + 1000) == []


@pytest.mark.parametrize("stale", ["attempt", "worker"])
def test_a_stale_snooze_is_skipped(backend, stale):
    now = time.time()
    job = insert_one(backend, now=now)
    running = claim_one(backend, worker_id="w1", now=now)
    before = get(backend, job.id)
    wrong = {"attempt": {"attempt": running.attempt + 1}, "worker": {"worker_id": "w2"}}[stale]

    changes = complete(backend, outcome(running, "snooze", finished_at=now + 1, delay=30, **wrong))

    assert changes == {}
    assert get(backend, job.id) == before
