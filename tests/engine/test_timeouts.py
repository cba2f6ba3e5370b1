"""Hard timeouts stop an attempt; soft timeouts only warn."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from conveyor import JobFailed, JobState, current_job

from .helpers import running_worker


def test_async_handler_past_its_timeout_is_cancelled(make_app):
    app = make_app()
    finished: list[bool] = []

    @app.task(timeout=0.2, max_attempts=1)
    async def too_slow() -> str:
        await asyncio.sleep(5)
        finished.append(True)
        return "never"

    with running_worker(app):
        job = too_slow.enqueue()
        with pytest.raises(JobFailed, match="timed out"):
            job.result(timeout=5)
    record = app.get_job(job.id).record
    assert record.state == JobState.FAILED
    assert len(record.errors) == 1
    assert "timed out" in record.errors[0].error
    assert record.finished_at - record.started_at < 2.0
    assert finished == []  # the coroutine was cancelled, not left to run


def test_timed_out_attempt_is_retried(make_app):
    app = make_app()

    @app.task(timeout=0.2, max_attempts=2, backoff=0.01)
    async def slow_once() -> str:
        from conveyor import current_job

        if current_job().attempt == 1:
            await asyncio.sleep(5)
        return "second time lucky"

    with running_worker(app):
        job = slow_once.enqueue()
        assert job.result(timeout=5) == "second time lucky"
    record = app.get_job(job.id).record
    assert record.attempt == 2
    assert "timed out" in record.errors[0].error


def test_per_job_timeout_option_overrides_the_task(make_app):
    app = make_app()

    @app.task(max_attempts=1)
    async def sleeper() -> str:
        await asyncio.sleep(5)
        return "never"

    with running_worker(app):
        job = sleeper.options(timeout=0.2).enqueue()
        with pytest.raises(JobFailed, match="timed out"):
            job.result(timeout=5)


def test_soft_timeout_logs_a_warning_but_the_job_completes(make_app, caplog):
    caplog.set_level(logging.WARNING, logger="conveyor.job")
    app = make_app()

    @app.task(soft_timeout=0.1)
    async def lingering() -> str:
        await asyncio.sleep(0.4)
        return "done anyway"

    with running_worker(app):
        job = lingering.enqueue()
        assert job.result(timeout=5) == "done anyway"
    warnings = [
        r for r in caplog.records if r.name == "conveyor.job" and r.levelno == logging.WARNING
    ]
    assert warnings, "no soft-timeout warning was logged"
    message = warnings[0].getMessage()
    assert job.id in message
    assert "soft timeout" in message
    assert app.get_job(job.id).record.errors == ()


def test_soft_timeout_defaults_to_80_percent_of_the_timeout(make_app, caplog):
    caplog.set_level(logging.WARNING, logger="conveyor.job")
    app = make_app()

    @app.task(timeout=1.0)
    async def close_call() -> str:
        await asyncio.sleep(0.9)  # past 0.8 s (soft), before 1.0 s (hard)
        return "made it"

    with running_worker(app):
        job = close_call.enqueue()
        assert job.result(timeout=5) == "made it"
    messages = [r.getMessage() for r in caplog.records if r.name == "conveyor.job"]
    assert any("soft timeout of 0.8 s" in m for m in messages), messages


def test_soft_timeout_does_not_warn_for_a_fast_job(make_app, caplog):
    caplog.set_level(logging.WARNING, logger="conveyor.job")
    app = make_app()

    @app.task(soft_timeout=1.0)
    async def quick() -> str:
        return "fast"

    with running_worker(app):
        assert quick.enqueue().result(timeout=5) == "fast"
    assert not [r for r in caplog.records if r.name == "conveyor.job"]


def test_sync_handler_past_its_timeout_fails_the_attempt_once_its_thread_returns(make_app):
    # Before issue 8 the failure was recorded at the deadline while the thread ran on, so a
    # retry could run beside it. The attempt now ends when the thread does (it cannot be
    # stopped), still recorded as a timeout.
    app = make_app()

    @app.task(timeout=0.2, max_attempts=1)
    def blocking() -> str:
        time.sleep(0.8)  # a thread cannot be stopped; keep it short so it ends by itself
        return "too late"

    with running_worker(app):
        job = blocking.enqueue()
        with pytest.raises(JobFailed, match="timed out"):
            job.result(timeout=5)
    record = app.get_job(job.id).record
    assert record.state == JobState.FAILED
    assert record.errors[0].error == "timed out after 0.2 s"
    assert record.finished_at - record.started_at >= 0.75
    assert record.result is None


def test_the_next_attempt_never_runs_beside_a_timed_out_sync_handler(make_app):
    app = make_app()  # lease 1 s: the stuck attempt outlives it on renewed leases
    runs: list[tuple[int, float, float]] = []

    @app.task(timeout=0.2, max_attempts=2, backoff=0)
    def stuck_once() -> str:
        attempt, began = current_job().attempt, time.monotonic()
        if attempt == 1:
            time.sleep(1.5)  # cannot be interrupted
        runs.append((attempt, began, time.monotonic()))
        return "second"

    with running_worker(app, concurrency=4):
        job = stuck_once.enqueue()
        assert job.result(timeout=6) == "second"
    (first, _, ended1), (second, began2, _) = sorted(runs)
    assert (first, second) == (1, 2)
    assert began2 >= ended1  # no overlap
    record = app.get_job(job.id).record
    assert record.attempt == 2 and record.errors[0].error == "timed out after 0.2 s"
