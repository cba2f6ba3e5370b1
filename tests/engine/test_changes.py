"""The one boundary above the store: every state change a worker applies (outcomes, rescue,
release) reaches `app.changes` listeners, as the store applied it."""

from __future__ import annotations

import asyncio
import threading
import time

from conveyor import JobState, Settings, Snooze, Worker, current_job
from conveyor.backends.base import ClaimParams, JobChange

from .helpers import WorkerThread, running_worker, wait_until

ACTIVE, QUEUED, SCHEDULED = JobState.ACTIVE, JobState.QUEUED, JobState.SCHEDULED


def _listen(app) -> list[JobChange]:
    heard: list[JobChange] = []
    lock = threading.Lock()

    def listener(changes) -> None:
        with lock:
            heard.extend(changes)

    app.changes.subscribe(listener)
    return heard


def _of(heard: list[JobChange], job_id: str) -> list[tuple[JobState, JobState, int]]:
    return [(c.from_state, c.to_state, c.attempt) for c in list(heard) if c.id == job_id]


def test_a_listener_hears_every_change_a_worker_applies(make_app):
    app = make_app()
    heard = _listen(app)

    @app.task(max_attempts=2, backoff=0)
    def flaky() -> str:
        if current_job().attempt == 1:
            raise ValueError("once")
        return "ok"

    @app.task(max_attempts=1)
    def broken() -> None:
        raise ValueError("always")

    @app.task
    def sleepy() -> None:
        if current_job().record.snoozes == 0:
            raise Snooze(0)

    lost = app.enqueue("flaky", {})  # claimed by a worker that dies
    [claimed] = app.backend.job_claim(
        ClaimParams(("default",), 1, "dead-worker", lease_seconds=0.2, now=time.time())
    )
    assert claimed.id == lost.id
    with running_worker(app):
        retried, failed, snoozed = flaky.enqueue(), broken.enqueue(), sleepy.enqueue()
        for job in (retried, snoozed, lost):
            wait_until(lambda j=job: app.get_job(j.id).state == JobState.COMPLETED, 5)
        wait_until(lambda: app.get_job(failed.id).state == JobState.FAILED, 5)
        expected = {
            retried.id: [(ACTIVE, QUEUED, 1), (ACTIVE, JobState.COMPLETED, 2)],
            failed.id: [(ACTIVE, JobState.FAILED, 1)],
            snoozed.id: [(ACTIVE, QUEUED, 0), (ACTIVE, JobState.COMPLETED, 1)],
            # rescued from the dead worker (attempt 1 counted), then completed here
            lost.id: [(ACTIVE, QUEUED, 1), (ACTIVE, JobState.COMPLETED, 2)],
        }
        # published on the writer's thread just after the store call returned
        wait_until(
            lambda: {job_id: _of(heard, job_id) for job_id in expected} == expected,
            2,
            what=f"every change heard: {heard}",
        )
    change = next(c for c in heard if c.id == retried.id and c.to_state == JobState.COMPLETED)
    assert change.task == "flaky" and change.queue == "default"
    assert change.started_at is not None and change.finished_at is not None


def test_a_listener_hears_a_shutdown_settle_its_jobs(make_app):
    app = make_app(
        Settings(lease_seconds=1.0, rescue_interval=0.2, poll_interval=0.2, grace_period=0.2)
    )
    heard = _listen(app)
    started = threading.Event()

    @app.task(max_attempts=3)
    async def endless() -> None:
        started.set()
        await asyncio.sleep(30)

    runner = WorkerThread(Worker(app)).start()
    try:
        job = endless.enqueue()
        assert started.wait(5)
        runner.worker.stop()
        runner.join(5)
    finally:
        runner.stop_and_join(5, force=True)
    # its handler had started: a counted attempt, due again at once
    assert _of(heard, job.id) == [(ACTIVE, QUEUED, 1)]
