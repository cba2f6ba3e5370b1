"""Graceful shutdown of an in-process worker: finish within the grace, else release unrun."""

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


def test_job_past_the_grace_period_is_released_without_counting_the_attempt(make_app):
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
    assert record.state == JobState.QUEUED
    assert record.attempt == 0
    assert record.errors == ()
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
    assert record.attempt == 0
    assert record.errors == ()


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
    assert calls == [1, 1]
    assert job.result(timeout=1) == 1
