"""Graceful shutdown of an in-process worker: finish within the grace; past it, a started
attempt counts ("released at shutdown", due again at once) and an unstarted one is released."""

from __future__ import annotations

import asyncio
import threading
import time

from conveyor import JobState, Settings, Worker

from .helpers import WorkerThread, wait_until


def test_stop_lets_a_running_job_finish(make_app):
    app = make_app()  # grace period 2 s
    started = threading.Event()

    @app.task
    async def short() -> str:
        started.set()
        await asyncio.sleep(0.3)
        return "finished"

    runner = WorkerThread(Worker(app)).start()
    try:
        job = short.enqueue()
        assert started.wait(5)
        runner.worker.stop()
        runner.join(5)  # run() returns on its own
    finally:
        runner.stop_and_join(5, force=True)
    record = app.get_job(job.id).record
    assert record.state == JobState.COMPLETED
    assert record.result == "finished"
    assert record.attempt == 1


def test_stop_does_not_claim_new_jobs(make_app):
    app = make_app()
    started = threading.Event()

    @app.task
    async def short(n: int) -> int:
        started.set()
        await asyncio.sleep(0.3)
        return n

    runner = WorkerThread(Worker(app, concurrency=1)).start()
    try:
        first = short.enqueue(n=1)
        assert started.wait(5)
        second = short.enqueue(n=2)
        runner.worker.stop()
        runner.join(5)
    finally:
        runner.stop_and_join(5, force=True)
    assert app.get_job(first.id).state == JobState.COMPLETED
    second_record = app.get_job(second.id).record
    assert second_record.state == JobState.QUEUED
    assert second_record.attempt == 0


def test_job_past_the_grace_period_counts_its_attempt_and_is_due_again_at_once(make_app):
    # Before issue 8 the attempt was given back (attempt - 1, no error), so a job longer than
    # the grace ran forever on workers that kept stopping. A started run now always counts.
    app = make_app(
        Settings(lease_seconds=1.0, rescue_interval=0.2, poll_interval=0.2, grace_period=0.3)
    )
    started = threading.Event()

    @app.task
    async def very_long() -> str:
        started.set()
        await asyncio.sleep(5)
        return "never"

    runner = WorkerThread(Worker(app)).start()
    try:
        job = very_long.enqueue()
        assert started.wait(5)
        assert app.get_job(job.id).record.attempt == 1
        stop_at = time.monotonic()
        runner.worker.stop()
        runner.join(3)
        assert time.monotonic() - stop_at < 3
    finally:
        runner.stop_and_join(5, force=True)
    record = app.get_job(job.id).record
    assert record.state == JobState.QUEUED  # a retry due at once
    assert record.attempt == 1
    assert len(record.errors) == 1
    assert record.errors[0].error.startswith("released at shutdown after 0.")
    assert record.worker_id is None
    assert record.lease_expires_at is None


def test_forced_stop_skips_the_grace_period(make_app):
    app = make_app(
        Settings(lease_seconds=1.0, rescue_interval=0.2, poll_interval=0.2, grace_period=30)
    )
    started = threading.Event()

    @app.task
    async def very_long() -> str:
        started.set()
        await asyncio.sleep(30)
        return "never"

    runner = WorkerThread(Worker(app)).start()
    try:
        job = very_long.enqueue()
        assert started.wait(5)
        runner.worker.stop()
        time.sleep(0.2)
        assert runner.alive  # still within its 30 s grace period
        runner.worker.stop(force=True)
        runner.join(3)
    finally:
        runner.stop_and_join(5, force=True)
    record = app.get_job(job.id).record
    assert record.state == JobState.QUEUED
    assert record.attempt == 1
    assert "released at shutdown" in record.errors[0].error


def test_released_job_runs_again_on_the_next_worker(make_app):
    app = make_app(
        Settings(lease_seconds=1.0, rescue_interval=0.2, poll_interval=0.2, grace_period=0.2)
    )
    calls: list[int] = []

    @app.task
    async def work() -> int:
        from conveyor import current_job

        calls.append(current_job().attempt)
        if len(calls) == 1:
            await asyncio.sleep(5)
        return current_job().attempt

    runner = WorkerThread(Worker(app)).start()
    try:
        job = work.enqueue()
        wait_until(lambda: calls, 5)
        runner.worker.stop()
        runner.join(3)
    finally:
        runner.stop_and_join(5, force=True)
    second = WorkerThread(Worker(app, burst=True)).start()
    second.join(5)
    assert calls == [1, 2]  # the interrupted run counted
    assert job.result(timeout=1) == 2


def _finished(app, job_id: str) -> bool:
    return app.get_job(job_id).state in (JobState.COMPLETED, JobState.FAILED)


def test_a_job_longer_than_the_grace_is_bounded_by_max_attempts(make_app):
    """Workers that keep stopping (deploys, recycling) cannot run a job forever."""
    app = make_app(
        Settings(lease_seconds=1.0, rescue_interval=0.2, poll_interval=0.2, grace_period=0.1)
    )
    runs: list[int] = []

    @app.task(max_attempts=2)
    async def longer_than_the_grace() -> None:
        from conveyor import current_job

        runs.append(current_job().attempt)
        await asyncio.sleep(5)

    job = longer_than_the_grace.enqueue()
    for _ in range(3):  # a third stop finds nothing left to run
        if _finished(app, job.id):
            break
        runner = WorkerThread(Worker(app)).start()
        try:
            before = len(runs)
            wait_until(lambda: len(runs) > before, 5, what="the job started")  # noqa: B023
            runner.worker.stop()
            runner.join(3)
        finally:
            runner.stop_and_join(5, force=True)
    record = app.get_job(job.id).record
    assert runs == [1, 2]
    assert record.state == JobState.FAILED and record.attempt == 2
    assert [e.error.split(" after")[0] for e in record.errors] == ["released at shutdown"] * 2
