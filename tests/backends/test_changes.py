"""What state-changing calls return: one `JobChange` per job changed (from which state to
which, the attempt after it, its times), the one boundary events and statistics are fed from.

Outcomes, release and rescue report only the jobs they changed; cancel and manual retry
report their one job with the job itself as `record`.
"""

from __future__ import annotations

import time

import pytest

from conveyor.backends.base import JobChange
from conveyor.model.states import JobState

from .factory import (
    claim_one,
    complete,
    get,
    insert,
    insert_one,
    new_job,
    outcome,
    release,
    store_window,
)

ACTIVE = JobState.ACTIVE
QUEUED = JobState.QUEUED
SCHEDULED = JobState.SCHEDULED
COMPLETED = JobState.COMPLETED
FAILED = JobState.FAILED
CANCELLED = JobState.CANCELLED


def expected(job, from_state, to_state, attempt, at, **times) -> JobChange:
    """The change of `job` (a record of it), with `times` (run_at, started_at, finished_at)."""
    return JobChange(
        id=job.id,
        queue=job.queue,
        task=job.task,
        from_state=from_state,
        to_state=to_state,
        attempt=attempt,
        at=at,
        **times,
    )


def assert_change(change: JobChange | None, want: JobChange, *, unchecked: str = "") -> None:
    """`change` is `want`, its times to a microsecond, except the time named `unchecked`
    (`started_at` where no attempt ends, which the protocol leaves open)."""
    assert change is not None, f"no change reported, expected {want}"
    for name in ("id", "queue", "task", "from_state", "to_state", "attempt"):
        assert getattr(change, name) == getattr(want, name), f"{name}: {change} != {want}"
    for name in ("at", "run_at", "started_at", "finished_at"):
        if name == unchecked:
            continue
        got, wanted = getattr(change, name), getattr(want, name)
        if wanted is None:
            assert got is None, f"{name} should be None: {change}"
        else:
            assert got == pytest.approx(wanted, abs=1e-6), f"{name}: {change} != {want}"


@pytest.fixture
def running(backend):
    """A job (task "send", queue "mail") claimed at T as attempt 1, with T."""
    now = time.time()
    insert_one(backend, task="send", queue="mail", now=now - 10)
    return claim_one(backend, queues=("mail",), now=now), now


# outcomes -------------------------------------------------------------------------------
def test_completed_reports_the_finish(backend, running):
    job, now = running
    changes = complete(backend, outcome(job, "completed", finished_at=now + 2, result=1))
    assert list(changes) == [job.id]
    want = expected(job, ACTIVE, COMPLETED, 1, now + 2, started_at=now, finished_at=now + 2)
    assert_change(changes[job.id], want)
    assert changes[job.id].record is None


def test_failed_reports_the_finish(backend, running):
    job, now = running
    changes = complete(backend, outcome(job, "failed", finished_at=now + 2))
    assert_change(
        changes[job.id],
        expected(job, ACTIVE, FAILED, 1, now + 2, started_at=now, finished_at=now + 2),
    )


def test_cancelled_reports_the_finish(backend, running):
    job, now = running
    backend.job_cancel(job.id, now + 1)
    changes = complete(backend, outcome(job, "cancelled", finished_at=now + 2))
    assert_change(
        changes[job.id],
        expected(job, ACTIVE, CANCELLED, 1, now + 2, started_at=now, finished_at=now + 2),
    )


@pytest.mark.parametrize(("delay", "to_state"), [(30, SCHEDULED), (0, QUEUED)])
def test_retry_reports_the_next_due_time(backend, running, delay, to_state):
    job, now = running
    changes = complete(backend, outcome(job, "retry", finished_at=now + 2, delay=delay))
    assert_change(
        changes[job.id],
        expected(job, ACTIVE, to_state, 1, now + 2, run_at=now + 2 + delay, started_at=now),
    )


@pytest.mark.parametrize(("delay", "to_state"), [(30, SCHEDULED), (0, QUEUED)])
def test_snooze_reports_the_attempt_given_back(backend, running, delay, to_state):
    job, now = running
    changes = complete(backend, outcome(job, "snooze", finished_at=now + 2, delay=delay))
    assert_change(
        changes[job.id],
        expected(job, ACTIVE, to_state, 0, now + 2, run_at=now + 2 + delay, started_at=now),
    )


@pytest.mark.parametrize("kind", ["retry", "snooze"])
def test_a_postponement_of_a_job_with_a_cancel_request_reports_the_cancel(backend, running, kind):
    job, now = running
    backend.job_cancel(job.id, now + 1)
    changes = complete(backend, outcome(job, kind, finished_at=now + 2, delay=30))
    attempt = 0 if kind == "snooze" else 1
    assert_change(
        changes[job.id],
        expected(job, ACTIVE, CANCELLED, attempt, now + 2, started_at=now, finished_at=now + 2),
    )


def test_an_outcome_without_a_finish_time_reports_the_stores_time(backend, running):
    job, _ = running
    changes, window = store_window(backend, lambda: complete(backend, outcome(job, "completed")))
    change = changes[job.id]
    assert window.holds(change.at)
    assert change.finished_at == change.at
    assert get(backend, job.id).finished_at == pytest.approx(change.at, abs=1e-6)


def test_a_batch_reports_only_the_outcomes_applied(backend):
    now = time.time()
    jobs = insert(backend, *[new_job(now=now + i * 0.001) for i in range(3)])
    claimed = {j.id: j for j in [claim_one(backend, now=now + 1) for _ in jobs]}
    a, b, c = (claimed[j.id] for j in jobs)

    changes = complete(
        backend,
        outcome(a, "completed", finished_at=now + 2),
        outcome(b, "snooze", finished_at=now + 2, delay=5, worker_id="someone-else"),
        outcome(c, "retry", finished_at=now + 2, attempt=c.attempt + 1),
    )

    assert set(changes) == {a.id}
    assert complete(backend, outcome(a, "completed", finished_at=now + 3)) == {}


# release and rescue ---------------------------------------------------------------------
def test_release_reports_the_job_queued_again(backend, running):
    job, now = running
    changes = release(backend, [job.id], queues=("mail",), now=now + 5)
    assert list(changes) == [job.id]
    assert_change(
        changes[job.id],
        expected(job, ACTIVE, QUEUED, 0, now + 5, run_at=now + 5),
        unchecked="started_at",
    )


def test_release_of_a_job_with_a_cancel_request_reports_the_cancel(backend, running):
    job, now = running
    backend.job_cancel(job.id, now + 1)
    changes = release(backend, [job.id], queues=("mail",), now=now + 5)
    assert_change(
        changes[job.id],
        expected(job, ACTIVE, CANCELLED, 0, now + 5, finished_at=now + 5),
        unchecked="started_at",
    )


def test_rescue_reports_each_job_it_moved(backend):
    now = time.time()
    again, dead, cancel, alive = (
        new_job(queue="q", now=now - 1, max_attempts=3),
        new_job(queue="q", now=now - 1 + 0.001, max_attempts=1),
        new_job(queue="q", now=now - 1 + 0.002, max_attempts=3),
        new_job(queue="alive", now=now - 1),
    )
    insert(backend, again, dead, cancel, alive)
    claimed = [claim_one(backend, queues=("q",), lease=10, now=now) for _ in range(3)]
    claim_one(backend, queues=("alive",), lease=100, now=now)
    backend.job_cancel(cancel.id, now + 1)

    result = backend.job_rescue_expired(now + 11)

    changes = {change.id: change for change in result.changes}
    assert set(changes) == {again.id, dead.id, cancel.id}
    by_id = {job.id: job for job in claimed}
    t = now + 11
    assert_change(
        changes[again.id],
        expected(by_id[again.id], ACTIVE, QUEUED, 1, t, run_at=t, started_at=now),
    )
    assert_change(
        changes[dead.id],
        expected(by_id[dead.id], ACTIVE, FAILED, 1, t, started_at=now, finished_at=t),
    )
    assert_change(
        changes[cancel.id],
        expected(by_id[cancel.id], ACTIVE, CANCELLED, 1, t, started_at=now, finished_at=t),
    )
    assert backend.job_rescue_expired(now + 12).changes == ()


# cancel and manual retry ----------------------------------------------------------------
@pytest.mark.parametrize(("delay", "from_state"), [(0, QUEUED), (3600, SCHEDULED)])
def test_cancel_of_a_pending_job_reports_the_cancel_with_the_job(backend, delay, from_state):
    now = time.time()
    job = insert_one(backend, task="send", queue="mail", now=now, delay=delay)

    change = backend.job_cancel(job.id, now + 1)

    assert_change(change, expected(job, from_state, CANCELLED, 0, now + 1, finished_at=now + 1))
    assert change.record == get(backend, job.id)
    assert change.record.state is CANCELLED


def test_cancel_of_an_active_job_reports_the_request_with_the_job(backend, running):
    job, now = running

    change = backend.job_cancel(job.id, now + 1)

    assert_change(change, expected(job, ACTIVE, ACTIVE, 1, now + 1), unchecked="started_at")
    assert change.record == get(backend, job.id)
    assert change.record.cancel_requested is True


def test_cancel_without_now_reports_the_stores_time(backend):
    job = insert_one(backend)
    change, window = store_window(backend, lambda: backend.job_cancel(job.id))
    assert window.holds(change.at)
    assert change.finished_at == change.at


@pytest.mark.parametrize("kind", ["failed", "cancelled"])
def test_manual_retry_reports_the_job_queued_again(backend, running, kind):
    job, now = running
    if kind == "cancelled":
        backend.job_cancel(job.id, now + 1)
    complete(backend, outcome(job, kind, finished_at=now + 2))

    change = backend.job_retry(job.id, now + 3)

    from_state = FAILED if kind == "failed" else CANCELLED
    assert_change(
        change,
        expected(job, from_state, QUEUED, 1, now + 3, run_at=now + 3),
        unchecked="started_at",
    )
    assert change.record == get(backend, job.id)
    assert change.record.state is QUEUED
