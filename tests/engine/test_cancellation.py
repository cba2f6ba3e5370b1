"""Cancellation: pending jobs at once, running jobs cooperatively via the heartbeat."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from conveyor import InvalidTransition, JobFailed, JobState, current_job

from .helpers import run_burst, running_worker, wait_until


def test_cancel_a_queued_job_it_never_runs(make_app):
    app = make_app()
    ran: list[int] = []

    @app.task
    def work(n: int) -> None:
        ran.append(n)

    doomed = work.enqueue(n=1)
    kept = work.enqueue(n=2)
    cancelled = doomed.cancel()
    assert cancelled.state == JobState.CANCELLED
    run_burst(app)
    assert ran == [2]
    record = app.get_job(doomed.id).record
    assert record.state == JobState.CANCELLED
    assert record.attempt == 0
    assert record.finished_at is not None
    assert app.get_job(kept.id).state == JobState.COMPLETED
    with pytest.raises(JobFailed, match="cancelled"):
        doomed.result(timeout=1)


def test_cancel_a_finished_job_is_refused(make_app):
    app = make_app()

    @app.task
    def work() -> str:
        return "ok"

    job = work.enqueue()
    run_burst(app)
    with pytest.raises(InvalidTransition):
        job.cancel()
    assert app.get_job(job.id).state == JobState.COMPLETED


def test_cancel_an_active_async_job(make_app):
    app = make_app()  # lease 1 s: a heartbeat every ~0.33 s carries the cancel
    started = threading.Event()
    cleaned_up: list[bool] = []

    @app.task
    async def long_sleep() -> str:
        started.set()
        try:
            await asyncio.sleep(30)
        finally:
            cleaned_up.append(True)
        return "never"

    with running_worker(app):
        job = long_sleep.enqueue()
        assert started.wait(5)
        requested = app.cancel_job(job.id)
        assert requested.state == JobState.ACTIVE
        assert requested.record.cancel_requested
        wait_until(
            lambda: app.get_job(job.id).state == JobState.CANCELLED,
            1.5,
            what="active job cancelled within ~2 heartbeats",
        )
    record = app.get_job(job.id).record
    assert record.finished_at is not None
    assert record.result is None
    assert cleaned_up == [True]


@pytest.mark.parametrize("how", ["check_cancelled", "progress"])
def test_cancel_a_sync_job_that_checks(make_app, how):
    app = make_app()
    started = threading.Event()
    loops: list[int] = []

    @app.task
    def crunch() -> str:
        started.set()
        deadline = time.monotonic() + 10
        i = 0
        while time.monotonic() < deadline:
            i += 1
            loops.append(i)
            if how == "progress":
                current_job().progress(i)
            else:
                current_job().check_cancelled()
            time.sleep(0.02)
        return "finished without noticing the cancel"

    with running_worker(app):
        job = crunch.enqueue()
        assert started.wait(5)
        job.cancel()
        wait_until(
            lambda: app.get_job(job.id).state == JobState.CANCELLED,
            2.0,
            what="sync job cancelled",
        )
        count = len(loops)
        time.sleep(0.1)
        assert len(loops) == count  # the handler stopped looping
    assert app.get_job(job.id).record.result is None
