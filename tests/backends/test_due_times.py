"""Due times are the store's: a new job is enqueued at the store's now and due its delay after
it, whatever the producer's clock read when it built the job; only a run_at the caller chose
(`absolute_run_at`) is kept as given. The records `job_insert_many` returns are what it stored.
"""

from __future__ import annotations

import pytest

from conveyor.model.states import JobState

from .factory import claim, get, new_job, store_window

SKEWS = [3600.0, -3600.0]
"""A producer clock an hour ahead (its jobs would wait an hour) and an hour behind (its delayed
jobs would run at once)."""


def skewed_job(backend, skew: float, delay: float = 0.0, **kwargs):
    """A job built by a producer whose clock reads the store's plus `skew`."""
    return new_job(now=backend.store_time() + skew, delay=delay, absolute=False, **kwargs)


@pytest.mark.parametrize("skew", SKEWS)
def test_an_immediate_job_from_a_skewed_producer_is_due_at_the_stores_now(backend, skew):
    job = skewed_job(backend, skew)
    (returned,), window = store_window(backend, lambda: backend.job_insert_many([job]))

    stored = get(backend, job.id)
    assert returned == stored
    assert stored.state is JobState.QUEUED
    assert window.holds(stored.enqueued_at)
    assert stored.run_at == stored.enqueued_at
    assert [r.id for r in claim(backend)] == [job.id]


@pytest.mark.parametrize("skew", SKEWS)
def test_a_delayed_job_from_a_skewed_producer_is_due_its_delay_after_the_stores_now(backend, skew):
    job = skewed_job(backend, skew, delay=90.0)
    (returned,), window = store_window(backend, lambda: backend.job_insert_many([job]))

    stored = get(backend, job.id)
    assert returned == stored
    assert stored.state is JobState.SCHEDULED
    assert window.holds(stored.enqueued_at)
    assert stored.run_at == pytest.approx(stored.enqueued_at + 90.0, abs=1e-6)
    assert claim(backend) == []
    due_in = backend.job_next_due_in(["default"])
    assert due_in is not None and 85.0 < due_in <= 90.0


@pytest.mark.parametrize("ahead", [True, False])
def test_an_absolute_run_at_is_kept_as_given(backend, ahead):
    now = backend.store_time()
    run_at = now + 600.0 if ahead else now - 600.0
    job = new_job(now=run_at, absolute=True)  # a moment the caller chose, by any clock
    (returned,), window = store_window(backend, lambda: backend.job_insert_many([job]))

    stored = get(backend, job.id)
    assert returned == stored
    assert stored.run_at == run_at
    assert window.holds(stored.enqueued_at)
    assert stored.state is (JobState.SCHEDULED if ahead else JobState.QUEUED)


def test_a_batch_of_mixed_jobs_returns_what_was_stored(backend):
    now = backend.store_time()
    jobs = [
        new_job(now=now + 3600.0, absolute=False),
        new_job(now=now - 3600.0, delay=5.0, absolute=False),
        new_job(now=now + 120.0, absolute=True),
        new_job(now=now - 3600.0, delay=0.25, absolute=False, queue="other"),
    ]
    returned, window = store_window(backend, lambda: backend.job_insert_many(jobs))

    stored = [get(backend, job.id) for job in jobs]
    assert returned == stored
    (at,) = {record.enqueued_at for record in stored}  # one store time for the whole batch
    assert window.holds(at)
    assert [r.run_at - at for r in stored] == pytest.approx([0.0, 5.0, now + 120.0 - at, 0.25])
    assert [r.state for r in stored] == [JobState.QUEUED] + [JobState.SCHEDULED] * 3


def test_a_job_already_there_is_returned_as_stored_and_a_new_one_at_the_stores_now(backend):
    first = skewed_job(backend, 3600.0, key="k")
    (existing,) = backend.job_insert_many([first])
    again = skewed_job(backend, -3600.0, key="k", delay=10.0)
    fresh = skewed_job(backend, -3600.0, delay=10.0)
    returned, window = store_window(backend, lambda: backend.job_insert_many([again, fresh]))

    assert returned[0] == existing == get(backend, first.id)
    assert returned[1] == get(backend, fresh.id)
    assert window.holds(returned[1].enqueued_at)
    assert returned[1].run_at == pytest.approx(returned[1].enqueued_at + 10.0, abs=1e-6)


def test_a_test_given_now_is_the_stores_clock(backend):
    job = new_job(now=12345.0, delay=10.0, absolute=False)
    (returned,) = backend.job_insert_many([job], now=1_000_000.0)

    assert returned == get(backend, job.id)
    assert returned.enqueued_at == 1_000_000.0
    assert returned.run_at == 1_000_010.0
    assert returned.state is JobState.SCHEDULED
