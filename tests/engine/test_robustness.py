"""Robustness: whatever a handler does, its attempt ends recorded (never left `active`), one
bad outcome cannot hold back the others, and a lost lease or a shutdown never records an
abandoned attempt over the job's real state.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from collections.abc import Callable

import pytest

from conveyor import JobCancelled, JobState, Settings, Worker, current_job
from conveyor.backends.base import ClaimParams, Outcome
from conveyor.backends.sqlite.backend import path_from_url
from conveyor.model.job import JobRecord

from .helpers import WorkerThread, running_worker, wait_until

WORKER_LOST = "worker lost"


def record_of(app, job_id: str) -> JobRecord:
    job = app.get_job(job_id)
    assert job is not None, f"job {job_id} is gone"
    return job.record


def wait_for_state(app, job_id: str, state: JobState, timeout: float = 5.0) -> JobRecord:
    """Poll until the job is in `state`; fail (showing the record) if it is not in time."""
    try:
        wait_until(lambda: record_of(app, job_id).state == state, timeout, what=state.value)
    except AssertionError:
        raise AssertionError(f"job not {state.value}: {record_of(app, job_id)}") from None
    return record_of(app, job_id)


def on_store_file(app, *statements: str) -> None:
    """Run SQL on the store's real SQLite file through a plain connection of its own."""
    if not app.backend.capabilities.local_file:
        pytest.skip("needs a store kept in a local SQLite file")
    conn = sqlite3.connect(path_from_url(app.backend.url), isolation_level=None)
    try:
        for statement in statements:
            conn.execute(statement)
    finally:
        conn.close()


def refuse_completion_of(app, task_name: str) -> None:
    """Make the file refuse to mark `task_name` jobs completed, as a store that keeps failing
    one write would (the refusal lives in the file, not in the code under test)."""
    on_store_file(
        app,
        f"""
        CREATE TRIGGER refuse_{task_name} BEFORE UPDATE OF state ON conveyor_jobs
        WHEN NEW.task = '{task_name}' AND NEW.state = 'completed'
        BEGIN SELECT RAISE(ABORT, 'the store refuses this write'); END
        """,
    )


def refuse_heartbeats(app) -> Callable[[bool], None]:
    """Let the file refuse lease renewals while the returned switch is on (it starts on)."""
    on_store_file(
        app,
        "CREATE TABLE test_no_heartbeats (refuse INTEGER NOT NULL)",
        "INSERT INTO test_no_heartbeats VALUES (1)",
        """
        CREATE TRIGGER refuse_heartbeats BEFORE UPDATE OF lease_expires_at ON conveyor_jobs
        WHEN OLD.state = 'active' AND NEW.state = 'active'
            AND (SELECT refuse FROM test_no_heartbeats)
        BEGIN SELECT RAISE(ABORT, 'the store refuses to renew leases'); END
        """,
    )

    def switch(on: bool) -> None:
        on_store_file(app, f"UPDATE test_no_heartbeats SET refuse = {int(on)}")

    return switch


# a handler's own exceptions ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("max_attempts", "final_state"), [(1, JobState.FAILED), (2, JobState.SCHEDULED)]
)
def test_handlers_own_timeout_error_is_an_ordinary_failure(make_app, max_attempts, final_state):
    app = make_app()

    @app.task(max_attempts=max_attempts, backoff=60)
    async def inner_wait() -> None:
        await asyncio.wait_for(asyncio.sleep(10), 0.05)  # its TimeoutError escapes

    with running_worker(app):
        job = inner_wait.enqueue()
        record = wait_for_state(app, job.id, final_state)
    assert record.attempt == 1
    assert len(record.errors) == 1
    assert record.errors[0].error.startswith("TimeoutError")
    assert WORKER_LOST not in record.errors[0].error


def test_inner_timeout_error_before_the_task_deadline_is_not_the_deadline(make_app):
    app = make_app()

    @app.task(timeout=5, max_attempts=1)
    async def inner_wait() -> None:
        await asyncio.wait_for(asyncio.sleep(10), 0.05)

    with running_worker(app):
        job = inner_wait.enqueue()
        record = wait_for_state(app, job.id, JobState.FAILED)
    assert len(record.errors) == 1
    assert record.errors[0].error.startswith("TimeoutError")
    assert "timed out after" not in record.errors[0].error
    assert record.errors[0].traceback and "wait_for" in record.errors[0].traceback


def test_cancelled_error_escaping_a_handler_fails_the_attempt(make_app):
    app = make_app()

    @app.task(max_attempts=1)
    async def own_future_cancelled() -> None:
        fut = asyncio.get_running_loop().create_future()
        fut.cancel()
        await fut

    with running_worker(app) as worker:
        job = own_future_cancelled.enqueue()
        record = wait_for_state(app, job.id, JobState.FAILED)
        wait_until(lambda: worker.active_jobs == (), 2.0, what="no job running")
    assert len(record.errors) == 1
    assert "CancelledError" in record.errors[0].error
    assert WORKER_LOST not in record.errors[0].error


# text the store cannot take as is -----------------------------------------------------------
def test_error_with_a_lone_surrogate_is_recorded_and_does_not_block_later_acks(make_app):
    app = make_app()

    @app.task(max_attempts=1)
    def bad_name() -> None:
        raise ValueError("bad \udcff name")  # e.g. an undecodable file name

    @app.task(max_attempts=1)
    async def fine() -> str:
        await asyncio.sleep(0.2)  # finishes after bad_name's outcome is on its way
        return "ok"

    with running_worker(app):
        bad = bad_name.enqueue()
        good = fine.enqueue()
        bad_record = wait_for_state(app, bad.id, JobState.FAILED)
        good_record = wait_for_state(app, good.id, JobState.COMPLETED)
    assert len(bad_record.errors) == 1
    assert bad_record.errors[0].error.startswith("ValueError: bad")
    assert "name" in bad_record.errors[0].error
    assert good_record.result == "ok"
    assert good_record.attempt == 1 and good_record.errors == ()


def test_result_with_a_lone_surrogate_is_stored(make_app):
    app = make_app()

    @app.task(max_attempts=1)
    async def odd_result() -> str:
        return b"caf\xe9".decode("utf-8", "surrogateescape")

    with running_worker(app):
        job = odd_result.enqueue()
        record = wait_for_state(app, job.id, JobState.COMPLETED)
    assert isinstance(record.result, str)
    assert "caf" in record.result
    assert record.errors == ()


def test_an_outcome_the_store_refuses_does_not_hold_back_the_others(make_app):
    app = make_app()

    @app.task(max_attempts=1)
    async def refused() -> str:
        return "never stored"

    @app.task(max_attempts=1)
    async def fine() -> str:
        await asyncio.sleep(0.2)  # its outcome comes after the refused one
        return "ok"

    refuse_completion_of(app, "refused")
    with running_worker(app, join_timeout=15):
        refused.enqueue()
        good = fine.enqueue()
        good_record = wait_for_state(app, good.id, JobState.COMPLETED, timeout=3.0)
    assert good_record.result == "ok"


# sync handlers past their hard timeout ------------------------------------------------------
def test_sync_handler_past_its_hard_timeout_stops_at_its_next_check(make_app):
    app = make_app()
    exits: list[tuple[str, float]] = []

    @app.task(timeout=0.3, max_attempts=1)
    def checking() -> None:
        started = time.monotonic()
        try:
            while time.monotonic() - started < 3.0:
                current_job().check_cancelled()
                time.sleep(0.05)
        except JobCancelled:
            exits.append(("cancelled", time.monotonic() - started))
            raise
        exits.append(("ran to the end", time.monotonic() - started))

    with running_worker(app, concurrency=1, join_timeout=5):
        job = checking.enqueue()
        record = wait_for_state(app, job.id, JobState.FAILED)
        wait_until(lambda: exits, 2.0, what="the handler thread returned")
    assert "timed out" in record.errors[0].error
    how, after = exits[0]
    assert how == "cancelled"
    assert after < 1.5  # at a check soon after the 0.3 s deadline, not after its 3 s


def test_job_queued_behind_a_timed_out_sync_handler_runs_once_its_thread_frees(make_app):
    app = make_app()
    ran: list[str] = []

    @app.task(timeout=0.2, max_attempts=1)
    def hang() -> None:
        time.sleep(1.0)  # cannot be interrupted: holds the only thread for 1 s

    @app.task(timeout=0.3, max_attempts=1)
    def quick() -> str:
        ran.append("quick")
        return "ran"

    with running_worker(app, concurrency=1, join_timeout=5):
        first = hang.enqueue()
        wait_for_state(app, first.id, JobState.ACTIVE)
        second = quick.enqueue()
        assert "timed out" in wait_for_state(app, first.id, JobState.FAILED).errors[0].error
        record = wait_for_state(app, second.id, JobState.COMPLETED, timeout=2.0)
    # it ran (in the freed thread), rather than timing out while waiting for one
    assert ran == ["quick"]
    assert record.result == "ran"


# lost leases --------------------------------------------------------------------------------
def test_reclaimed_job_keeps_its_new_attempt_when_the_old_one_ends(make_app):
    """Heartbeats fail, the lease runs out and the worker re-claims its own rescued job while
    the old attempt still runs: the old attempt ending must not drop the new one (which would
    then lose its heartbeats and be rescued again), nor be recorded over it."""
    app = make_app()  # FAST: lease 1 s, heartbeat every 1/3 s, rescue every 0.2 s
    starts: list[int] = []
    first_may_end = threading.Event()

    @app.task(max_attempts=5)
    async def work() -> str:
        attempt = current_job().attempt
        starts.append(attempt)
        if attempt == 1:
            while not first_may_end.is_set():
                await asyncio.sleep(0.01)
        else:
            await asyncio.sleep(2.0)  # twice a lease: lives on its heartbeats
        return f"attempt {attempt}"

    heartbeats_refused = refuse_heartbeats(app)
    with running_worker(app):
        job = work.enqueue()
        # lease of attempt 1 runs out (1 s), the worker's own rescue requeues it, it re-claims
        wait_until(lambda: starts == [1, 2], 4.0, what="attempt 2 running beside attempt 1")
        heartbeats_refused(False)
        first_may_end.set()
        record = wait_for_state(app, job.id, JobState.COMPLETED, timeout=4.0)
    assert starts == [1, 2]
    assert record.attempt == 2
    assert record.result == "attempt 2"
    assert len(record.errors) == 1 and WORKER_LOST in record.errors[0].error


def test_attempt_taken_over_by_another_worker_is_abandoned_unrecorded(make_app):
    app = make_app()  # FAST: lease 1 s, heartbeat every 1/3 s
    starts: list[int] = []
    abandoned: list[int] = []

    @app.task(max_attempts=3)
    async def long_job() -> str:
        attempt = current_job().attempt
        starts.append(attempt)
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            abandoned.append(attempt)
            raise
        return "finished here"

    with running_worker(app, concurrency=1) as worker:  # full: cannot re-claim it itself
        job = long_job.enqueue()
        wait_until(lambda: starts == [1], 3.0, what="attempt 1 running")
        later = time.time() + 100  # its lease has run out by then; it is due again then
        assert app.backend.job_rescue_expired(now=later).requeued == 1
        (taken,) = app.backend.job_claim(ClaimParams(("default",), 1, "other-worker", 30, later))
        assert taken.id == job.id and taken.attempt == 2
        # the next heartbeat tells the worker it no longer holds the job
        wait_until(lambda: abandoned == [1], 3.0, what="attempt 1 abandoned")
        wait_until(lambda: worker.active_jobs == (), 2.0, what="no job running")
        record = record_of(app, job.id)
        assert record.state == JobState.ACTIVE
        assert record.worker_id == "other-worker" and record.attempt == 2
        assert len(record.errors) == 1 and WORKER_LOST in record.errors[0].error
        now = time.time()
        app.backend.job_complete_many(
            [
                Outcome(
                    job_id=job.id,
                    queue="default",
                    attempt=2,
                    worker_id="other-worker",
                    kind="completed",
                    finished_at=now,
                    result=b'"there"',
                )
            ]
        )
    record = record_of(app, job.id)
    assert record.state == JobState.COMPLETED and record.result == "there"
    assert record.attempt == 2 and starts == [1]
    assert len(record.errors) == 1 and WORKER_LOST in record.errors[0].error


# graceful shutdown ---------------------------------------------------------------------------
SHORT_GRACE = Settings(lease_seconds=1.0, rescue_interval=0.2, poll_interval=0.2, grace_period=0.3)


def test_graceful_stop_counts_the_attempt_of_a_job_still_running(make_app):
    # Before issue 8 this asserted QUEUED at attempt 0 with no error: a job longer than the
    # grace could run any number of times. Its last attempt now fails, with a clear error.
    app = make_app(SHORT_GRACE)

    @app.task(max_attempts=1)
    async def slow() -> None:
        await asyncio.sleep(5)

    runner = WorkerThread(Worker(app)).start()
    try:
        job = slow.enqueue()
        wait_for_state(app, job.id, JobState.ACTIVE)
        runner.worker.stop()
        runner.join(5)
    finally:
        runner.stop_and_join(5, force=True)
    record = record_of(app, job.id)
    assert record.state == JobState.FAILED
    assert record.attempt == 1
    assert len(record.errors) == 1 and "released at shutdown" in record.errors[0].error


def test_graceful_stop_stops_a_released_sync_handler_at_its_next_check(make_app):
    app = make_app(SHORT_GRACE)
    exits: list[tuple[str, float]] = []

    @app.task(max_attempts=1)
    def checking() -> None:
        started = time.monotonic()
        try:
            while time.monotonic() - started < 3.0:
                current_job().check_cancelled()
                time.sleep(0.05)
        except JobCancelled:
            exits.append(("cancelled", time.monotonic() - started))
            raise
        exits.append(("ran to the end", time.monotonic() - started))

    runner = WorkerThread(Worker(app)).start()
    try:
        job = checking.enqueue()
        wait_for_state(app, job.id, JobState.ACTIVE)
        runner.worker.stop()
        wait_until(lambda: exits, 2.0, what="the handler thread returned")
        runner.join(5)
    finally:
        runner.stop_and_join(5, force=True)
    how, after = exits[0]
    assert how == "cancelled"
    assert after < 1.5  # soon after the 0.3 s grace, not after its 3 s
    record = record_of(app, job.id)
    assert record.state == JobState.FAILED  # it had started: its only attempt counted
    assert record.attempt == 1 and "released at shutdown" in record.errors[0].error


def test_graceful_stop_settles_unfinished_jobs_while_an_outcome_is_refused(make_app):
    """Acks that cannot be written must not keep the unfinished jobs from being settled."""
    app = make_app(SHORT_GRACE)
    ran: list[str] = []

    @app.task(max_attempts=1)
    async def refused() -> None:
        ran.append("refused")

    @app.task(max_attempts=1)
    async def slow() -> None:
        await asyncio.sleep(5)

    refuse_completion_of(app, "refused")
    runner = WorkerThread(Worker(app)).start()
    try:
        bad = refused.enqueue()
        job = slow.enqueue()
        wait_for_state(app, job.id, JobState.ACTIVE)
        wait_until(lambda: ran, 2.0, what="the refused job ran")
        runner.worker.stop()
        # settled once the grace is over (0.3 s), not after the refused outcome is given up
        record = wait_for_state(app, job.id, JobState.FAILED, timeout=1.0)
        runner.join(10)  # gives up the refused outcome after a few tries
    finally:
        runner.stop_and_join(5, force=True)
    assert record.attempt == 1 and "released at shutdown" in record.errors[0].error
    assert record_of(app, bad.id).state != JobState.COMPLETED
