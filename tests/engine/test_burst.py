"""Burst mode: rescue, drain what is due, return."""

from __future__ import annotations

import time

from conveyor import JobState, current_job
from conveyor.backends.base import ClaimParams

from .helpers import run_burst


def test_burst_drains_all_due_jobs_and_returns(make_app):
    app = make_app()
    ran: list[int] = []

    @app.task
    def work(n: int) -> int:
        ran.append(n)
        return n

    jobs = [work.enqueue(n=i) for i in range(25)]
    worker = run_burst(app, concurrency=4, timeout=10)
    assert sorted(ran) == list(range(25))
    assert {app.get_job(j.id).state for j in jobs} == {JobState.COMPLETED}
    assert worker.active_jobs == ()


def test_burst_with_nothing_to_do_returns(make_app):
    app = make_app()

    @app.task
    def work() -> None:
        return None

    run_burst(app, timeout=5)


def test_burst_does_not_wait_for_a_delayed_job(make_app):
    app = make_app()

    @app.task
    def work() -> str:
        return "ok"

    now_job = work.enqueue()
    later_job = work.options(delay=60).enqueue()
    started = time.monotonic()
    run_burst(app, timeout=10)
    assert time.monotonic() - started < 10
    assert app.get_job(now_job.id).state == JobState.COMPLETED
    later = app.get_job(later_job.id).record
    assert later.state == JobState.SCHEDULED
    assert later.attempt == 0


def test_burst_runs_retries_that_are_due_at_once(make_app):
    app = make_app()

    @app.task(max_attempts=3, backoff=0)
    def flaky() -> int:
        if current_job().attempt < 3:
            raise ValueError("again")
        return current_job().attempt

    job = flaky.enqueue()
    run_burst(app, timeout=10)
    assert job.result(timeout=1) == 3


def test_burst_rescues_expired_leases_first(make_app):
    app = make_app()

    @app.task
    def work() -> int:
        return current_job().attempt

    job = work.enqueue()
    claimed = app.backend.job_claim(
        ClaimParams(
            queues=("default",), limit=1, worker_id="dead", lease_seconds=0.05, now=time.time()
        )
    )
    assert [r.id for r in claimed] == [job.id]
    time.sleep(0.1)  # the dead worker's lease runs out
    run_burst(app, timeout=10)
    record = app.get_job(job.id).record
    assert record.state == JobState.COMPLETED
    assert record.result == 2
    assert "worker lost" in record.errors[0].error
