"""job_complete_many and job_set_progress: how an attempt ends, and only the current one."""

from __future__ import annotations

import time

import pytest

from conveyor.model.codec import encode
from conveyor.model.job import AttemptError
from conveyor.model.states import JobState

from .factory import (
    claim,
    claim_one,
    complete,
    get,
    insert,
    insert_one,
    new_job,
    outcome,
    store_window,
)


def test_completed_stores_result_and_finish_time(backend):
    job = insert_one(backend)
    running = claim_one(backend)
    done_at = time.time() + 1

    backend.job_complete_many(
        [outcome(running, "completed", finished_at=done_at, result={"sent": True, "n": [1, 2]})]
    )

    record = get(backend, job.id)
    assert record.state is JobState.COMPLETED
    assert record.result == {"sent": True, "n": [1, 2]}
    assert record.finished_at == pytest.approx(done_at, abs=1e-6)
    assert record.attempt == 1
    assert record.errors == ()
    assert record.lease_expires_at is None
    assert claim(backend) == []


def test_completed_without_result_stores_none(backend):
    job = insert_one(backend)
    backend.job_complete_many([outcome(claim_one(backend), "completed")])
    record = get(backend, job.id)
    assert record.state is JobState.COMPLETED
    assert record.result is None


def test_retry_later_appends_the_error_and_schedules_the_next_attempt(backend):
    now = time.time()
    job = insert_one(backend, now=now)
    running = claim_one(backend, now=now)

    backend.job_complete_many(
        [
            outcome(
                running,
                "retry",
                finished_at=now + 1,
                run_at=now + 31,
                error="ValueError: bad",
                traceback="Traceback ...",
            )
        ]
    )

    record = get(backend, job.id)
    assert record.state is JobState.SCHEDULED
    assert record.run_at == pytest.approx(now + 31, abs=1e-6)
    assert record.errors == (AttemptError(1, now + 1, "ValueError: bad", "Traceback ..."),)
    assert record.last_error == "ValueError: bad"
    assert record.attempt == 1
    assert record.finished_at is None
    assert record.worker_id is None and record.lease_expires_at is None

    assert claim(backend, now=now + 30) == []
    again = claim_one(backend, now=now + 31)
    assert again.id == job.id and again.attempt == 2


@pytest.mark.parametrize("run_at", ["none", "now", "past"])
def test_retry_due_now_goes_back_to_queued(backend, run_at):
    now = time.time()
    job = insert_one(backend, now=now)
    running = claim_one(backend, now=now)
    when = {"none": None, "now": now + 1, "past": now - 5}[run_at]

    backend.job_complete_many([outcome(running, "retry", finished_at=now + 1, run_at=when)])

    record = get(backend, job.id)
    assert record.state is JobState.QUEUED
    assert len(record.errors) == 1
    assert claim_one(backend, now=now + 1).id == job.id


def test_retry_delay_counts_from_the_finish_time(backend):
    now = time.time()
    job = insert_one(backend, now=now)
    running = claim_one(backend, now=now)

    backend.job_complete_many([outcome(running, "retry", finished_at=now + 1, delay=30)])

    record = get(backend, job.id)
    assert record.state is JobState.SCHEDULED
    assert record.run_at == pytest.approx(now + 31, abs=1e-6)
    assert claim(backend, now=now + 30.5) == []
    assert claim_one(backend, now=now + 31).id == job.id


def test_retry_run_at_overrides_the_delay(backend):
    now = time.time()
    job = insert_one(backend, now=now)
    running = claim_one(backend, now=now)

    backend.job_complete_many(
        [outcome(running, "retry", finished_at=now + 1, delay=30, run_at=now + 5)]
    )

    assert get(backend, job.id).run_at == pytest.approx(now + 5, abs=1e-6)


def test_retry_delay_without_a_finish_time_counts_from_the_stores_now(backend):
    job = insert_one(backend)
    running = claim_one(backend)

    _, window = store_window(
        backend, lambda: backend.job_complete_many([outcome(running, "retry", delay=60)])
    )

    record = get(backend, job.id)
    assert record.state is JobState.SCHEDULED
    assert window.holds(record.run_at, offset=60)


def test_errors_accumulate_one_per_attempt_in_order(backend):
    now = time.time()
    job = insert_one(backend, max_attempts=3, now=now)
    for n in (1, 2):
        running = claim_one(backend, now=now + n)
        backend.job_complete_many(
            [outcome(running, "retry", finished_at=now + n, error=f"error {n}")]
        )
    running = claim_one(backend, now=now + 3)
    backend.job_complete_many(
        [outcome(running, "failed", finished_at=now + 3, error="error 3", traceback="tb 3")]
    )

    record = get(backend, job.id)
    assert record.state is JobState.FAILED
    assert [(e.attempt, e.error) for e in record.errors] == [
        (1, "error 1"),
        (2, "error 2"),
        (3, "error 3"),
    ]
    assert record.errors[-1] == AttemptError(3, now + 3, "error 3", "tb 3")


def test_failed_appends_the_error_and_finishes(backend):
    now = time.time()
    job = insert_one(backend, max_attempts=5, now=now)
    running = claim_one(backend, now=now)

    backend.job_complete_many(
        [
            outcome(
                running,
                "failed",
                finished_at=now + 2,
                error="NonRetryable: no such user",
                traceback="tb",
            )
        ]
    )

    record = get(backend, job.id)
    assert record.state is JobState.FAILED
    assert record.finished_at == pytest.approx(now + 2, abs=1e-6)
    assert record.errors == (AttemptError(1, now + 2, "NonRetryable: no such user", "tb"),)
    assert record.lease_expires_at is None
    assert claim(backend, now=now + 1000) == []


def test_cancelled_outcome_finishes_the_job(backend):
    now = time.time()
    job = insert_one(backend, now=now)
    running = claim_one(backend, now=now)
    backend.job_cancel(job.id, now + 1)

    backend.job_complete_many([outcome(running, "cancelled", finished_at=now + 2)])

    record = get(backend, job.id)
    assert record.state is JobState.CANCELLED
    assert record.finished_at == pytest.approx(now + 2, abs=1e-6)
    assert record.lease_expires_at is None
    assert claim(backend, now=now + 1000) == []


def test_retry_of_a_job_with_a_cancel_request_ends_cancelled(backend):
    now = time.time()
    job = insert_one(backend, now=now)
    running = claim_one(backend, now=now)
    backend.job_cancel(job.id, now + 1)

    backend.job_complete_many([outcome(running, "retry", finished_at=now + 2, run_at=now + 2)])

    record = get(backend, job.id)
    assert record.state is JobState.CANCELLED
    assert record.finished_at == pytest.approx(now + 2, abs=1e-6)
    assert claim(backend, now=now + 1000) == []


def rescued_and_reclaimed(backend, now):
    """A job whose first attempt (worker w1) was lost and which w2 now runs as attempt 2."""
    job = insert_one(backend, now=now)
    first = claim_one(backend, worker_id="w1", lease=10, now=now)
    backend.job_rescue_expired(now + 11)
    second = claim_one(backend, worker_id="w2", lease=10, now=now + 12)
    assert second.id == job.id and second.attempt == 2
    return first, second


ALL_KINDS = ["completed", "retry", "failed", "cancelled", "snooze"]


def delay_for(kind: str) -> float | None:
    """A delay for the outcomes that take one."""
    return 5.0 if kind in ("retry", "snooze") else None


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_outcome_of_a_stale_attempt_is_ignored(backend, kind):
    now = time.time()
    first, second = rescued_and_reclaimed(backend, now)
    before = get(backend, second.id)

    changes = backend.job_complete_many(
        [outcome(first, kind, finished_at=now + 13, result="late", delay=delay_for(kind))]
    )

    assert changes == []
    assert get(backend, second.id) == before


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_outcome_from_another_worker_is_ignored(backend, kind):
    now = time.time()
    _, second = rescued_and_reclaimed(backend, now)
    before = get(backend, second.id)

    # Right attempt number, wrong worker.
    changes = backend.job_complete_many(
        [
            outcome(
                second,
                kind,
                worker_id="w1",
                finished_at=now + 13,
                result="forged",
                delay=delay_for(kind),
            )
        ]
    )

    assert changes == []
    assert get(backend, second.id) == before


def test_outcome_for_a_finished_job_is_ignored(backend):
    job = insert_one(backend)
    running = claim_one(backend)
    backend.job_complete_many([outcome(running, "completed", finished_at=100.0, result=1)])
    before = get(backend, job.id)

    changes = backend.job_complete_many(
        [
            outcome(running, "failed", finished_at=200.0),
            outcome(running, "completed", finished_at=300.0, result=2),
            outcome(running, "snooze", finished_at=400.0, delay=5),
        ]
    )

    assert changes == []
    assert get(backend, job.id) == before


def test_a_batch_of_mixed_outcomes(backend):
    now = time.time()
    jobs = insert(backend, *[new_job(now=now + i * 0.001) for i in range(6)])
    running = {j.id: j for j in claim(backend, limit=6, worker_id="w1", now=now + 1)}
    a, b, c, d, e, f = (running[j.id] for j in jobs)

    changes = complete(
        backend,
        outcome(a, "completed", finished_at=now + 2, result="A"),
        outcome(b, "retry", finished_at=now + 2, run_at=now + 60, error="later"),
        outcome(c, "failed", finished_at=now + 2, error="dead"),
        outcome(d, "cancelled", finished_at=now + 2),
        outcome(e, "completed", finished_at=now + 2, attempt=7),  # stale: ignored
        outcome(f, "snooze", finished_at=now + 2, delay=30),
    )

    assert {i: c.to_state for i, c in changes.items()} == {
        a.id: JobState.COMPLETED,
        b.id: JobState.SCHEDULED,
        c.id: JobState.FAILED,
        d.id: JobState.CANCELLED,
        f.id: JobState.SCHEDULED,
    }
    states = {j.id: get(backend, j.id) for j in jobs}
    assert states[a.id].state is JobState.COMPLETED and states[a.id].result == "A"
    assert states[b.id].state is JobState.SCHEDULED and states[b.id].last_error == "later"
    assert states[c.id].state is JobState.FAILED and states[c.id].last_error == "dead"
    assert states[d.id].state is JobState.CANCELLED
    assert states[e.id].state is JobState.ACTIVE and states[e.id].worker_id == "w1"
    assert states[f.id].state is JobState.SCHEDULED and states[f.id].snoozes == 1
    assert states[f.id].attempt == 0 and states[f.id].errors == ()


def test_empty_outcome_batch_is_a_no_op(backend):
    job = insert_one(backend)
    assert backend.job_complete_many([]) == []
    assert get(backend, job.id) == job


def test_progress_is_recorded_for_the_running_attempt(backend):
    job = insert_one(backend)
    running = claim_one(backend)

    assert backend.job_set_progress(job.id, running.attempt, encode(40, what="progress"))
    assert get(backend, job.id).progress == 40
    assert backend.job_set_progress(
        job.id, running.attempt, encode({"done": 3, "of": 4}, what="progress")
    )
    assert get(backend, job.id).progress == {"done": 3, "of": 4}


def test_progress_of_a_stale_attempt_is_refused(backend):
    now = time.time()
    first, second = rescued_and_reclaimed(backend, now)
    assert backend.job_set_progress(second.id, second.attempt, b"10")

    assert backend.job_set_progress(first.id, first.attempt, b"99") is False
    assert get(backend, second.id).progress == 10


def test_progress_of_a_job_that_is_not_running_is_refused(backend):
    pending = insert_one(backend)
    assert backend.job_set_progress(pending.id, 0, b"5") is False
    assert backend.job_set_progress(pending.id, 1, b"5") is False
    running = claim_one(backend)
    backend.job_complete_many([outcome(running, "completed")])
    assert backend.job_set_progress(pending.id, 1, b"5") is False
    assert get(backend, pending.id).progress is None
    assert backend.job_set_progress("no-such-job", 1, b"5") is False
