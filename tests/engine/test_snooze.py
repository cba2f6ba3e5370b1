"""Snooze: a handler postpones its job without counting an attempt, up to `max_snoozes`."""

from __future__ import annotations

import pytest

from conveyor import JobFailed, JobState, RetryAfter, Snooze, current_job

from .helpers import running_worker, wait_until


def test_snooze_reschedules_without_counting_an_attempt(make_app):
    app = make_app()
    seen: list[tuple[int, int]] = []

    @app.task(max_attempts=1)
    def waits_for_something() -> str:
        job = current_job()
        seen.append((job.attempt, job.record.snoozes))
        if job.record.snoozes < 3:
            raise Snooze(0.05)
        return "ready"

    with running_worker(app):
        job = waits_for_something.enqueue()
        assert job.result(timeout=5) == "ready"
    record = app.get_job(job.id).record
    # max_attempts=1 and it ran four times: only the run that returned counted
    assert seen == [(1, 0), (1, 1), (1, 2), (1, 3)]
    assert record.state == JobState.COMPLETED
    assert record.attempt == 1 and record.snoozes == 3
    assert record.errors == ()


def test_a_snoozed_job_waits_until_it_is_due(make_app):
    app = make_app()

    @app.task
    async def later() -> None:
        if current_job().record.snoozes == 0:
            raise Snooze(60)

    with running_worker(app):
        job = later.enqueue()
        wait_until(lambda: app.get_job(job.id).record.snoozes == 1, 5, what="the job snoozed once")
        record = app.get_job(job.id).record
    assert record.state == JobState.SCHEDULED
    assert record.attempt == 0 and record.errors == ()
    assert record.worker_id is None and record.lease_expires_at is None
    assert record.run_at >= record.enqueued_at + 55


def test_past_max_snoozes_the_job_fails_with_a_clear_error(make_app):
    app = make_app()
    runs: list[int] = []

    @app.task(max_attempts=5, max_snoozes=2)
    def never_ready() -> None:
        runs.append(current_job().record.snoozes)
        raise Snooze(0)

    with running_worker(app):
        job = never_ready.enqueue()
        with pytest.raises(JobFailed, match="max_snoozes"):
            job.result(timeout=5)
    record = app.get_job(job.id).record
    assert runs == [0, 1, 2]
    assert record.state == JobState.FAILED
    assert record.attempt == 1 and record.snoozes == 2
    assert len(record.errors) == 1
    assert "snoozed 2 times" in record.errors[0].error


def test_retry_after_still_counts_an_attempt(make_app):
    app = make_app()

    @app.task(max_attempts=2)
    def rate_limited() -> int:
        if current_job().attempt == 1:
            raise RetryAfter(0.05)
        return current_job().attempt

    with running_worker(app):
        job = rate_limited.enqueue()
        assert job.result(timeout=5) == 2
    record = app.get_job(job.id).record
    assert record.attempt == 2 and record.snoozes == 0
    assert len(record.errors) == 1


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_max_snoozes_must_be_a_whole_number_from_zero(make_app, bad):
    app = make_app()
    with pytest.raises(ValueError, match="max_snoozes must be an integer >= 0"):

        @app.task(max_snoozes=bad)
        def t() -> None: ...
