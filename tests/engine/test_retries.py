"""Failures: retries, backoff (stored run_at, Backoff rules), non-retryable, retry-after."""

from __future__ import annotations

import pytest

from conveyor import Backoff, JobFailed, JobState, NonRetryable, RetryAfter, current_job
from conveyor.model.backoff import as_backoff

from .helpers import running_worker, wait_until


def _retry_delays(app) -> list[float]:
    """Each retry's delay as the store applied it: its new due time minus the moment the
    store wrote it (both on the store's clock, so exact however loaded the machine)."""
    delays: list[float] = []

    def hear(changes) -> None:
        for change in changes:
            if change.from_state == JobState.ACTIVE and change.to_state in (
                JobState.SCHEDULED,
                JobState.QUEUED,
            ):
                delays.append(change.run_at - change.at)

    app.changes.subscribe(hear)
    return delays


def _finished(app, job_id):
    return app.get_job(job_id).state in (JobState.COMPLETED, JobState.FAILED, JobState.CANCELLED)


def test_fails_twice_then_succeeds_on_attempt_three(make_app):
    app = make_app()

    @app.task(max_attempts=5, backoff=0.01)
    def flaky() -> str:
        attempt = current_job().attempt
        if attempt < 3:
            raise ValueError(f"boom on attempt {attempt}")
        return "ok"

    with running_worker(app):
        job = flaky.enqueue()
        assert job.result(timeout=5) == "ok"
    record = app.get_job(job.id).record
    assert record.state == JobState.COMPLETED
    assert record.attempt == 3
    assert [e.attempt for e in record.errors] == [1, 2]
    assert [e.error for e in record.errors] == [
        "ValueError: boom on attempt 1",
        "ValueError: boom on attempt 2",
    ]


def test_exhausting_attempts_fails_with_every_error_and_traceback(make_app):
    app = make_app()

    @app.task(max_attempts=3, backoff=0.01)
    def always_broken() -> None:
        raise KeyError(f"missing {current_job().attempt}")

    with running_worker(app):
        job = always_broken.enqueue()
        wait_until(lambda: _finished(app, job.id), 5, what="job finished")
        with pytest.raises(JobFailed) as info:
            job.result(timeout=1)
    assert info.value.state == "failed"
    assert "missing 3" in str(info.value)
    record = app.get_job(job.id).record
    assert record.state == JobState.FAILED
    assert record.attempt == 3
    assert [e.attempt for e in record.errors] == [1, 2, 3]
    for n, error in enumerate(record.errors, start=1):
        assert error.error == f"KeyError: 'missing {n}'"
        assert error.traceback is not None
        assert "Traceback" in error.traceback
        assert "always_broken" in error.traceback
        assert "KeyError" in error.traceback
    assert record.finished_at is not None


def test_non_retryable_fails_at_once(make_app):
    app = make_app()

    @app.task(max_attempts=5, backoff=0.01)
    def refuse() -> None:
        raise NonRetryable("bad input, do not retry")

    with running_worker(app):
        job = refuse.enqueue()
        with pytest.raises(JobFailed, match="bad input"):
            job.result(timeout=5)
    record = app.get_job(job.id).record
    assert record.state == JobState.FAILED
    assert record.attempt == 1
    assert len(record.errors) == 1
    assert "bad input, do not retry" in record.errors[0].error


def test_retry_after_reschedules_by_the_given_delay(make_app):
    app = make_app()

    @app.task(max_attempts=3, backoff=60)  # the task's own backoff would wait a minute
    def rate_limited() -> str:
        if current_job().attempt == 1:
            raise RetryAfter(0.3)
        return "ok"

    delays = _retry_delays(app)
    with running_worker(app):
        job = rate_limited.enqueue()
        assert job.result(timeout=5) == "ok"
    record = app.get_job(job.id).record
    assert record.attempt == 2
    assert len(record.errors) == 1
    assert delays == [pytest.approx(0.3, abs=1e-3)]
    assert record.started_at >= record.run_at


def test_callable_backoff_on_the_task_is_used(make_app):
    app = make_app()
    asked: list[int] = []

    def backoff(attempt: int) -> float:
        asked.append(attempt)
        return 0.05

    @app.task(max_attempts=3, backoff=backoff)
    def once_broken() -> str:
        if current_job().attempt == 1:
            raise ValueError("first time fails")
        return "ok"

    delays = _retry_delays(app)
    with running_worker(app):
        job = once_broken.enqueue()
        assert job.result(timeout=5) == "ok"
    assert asked == [1]
    assert delays == [pytest.approx(0.05, abs=1e-3)]


def test_lambda_backoff_is_used(make_app):
    app = make_app()

    @app.task(max_attempts=2, backoff=lambda attempt: 0.05)
    def broken() -> None:
        raise ValueError("nope")

    delays = _retry_delays(app)
    with running_worker(app):
        job = broken.enqueue()
        with pytest.raises(JobFailed):
            job.result(timeout=5)
    record = app.get_job(job.id).record
    assert record.attempt == 2
    assert delays == [pytest.approx(0.05, abs=1e-3)]


def test_result_raises_job_failed_for_a_failed_job(make_app):
    app = make_app()

    @app.task(max_attempts=1)
    def explode() -> None:
        raise RuntimeError("kaboom")

    with running_worker(app):
        job = explode.enqueue()
        with pytest.raises(JobFailed) as info:
            job.result(timeout=5)
    assert info.value.job_id == job.id
    assert info.value.state == "failed"
    assert info.value.error == "RuntimeError: kaboom"


# Backoff rules (pure) --------------------------------------------------------------------------
def test_exponential_doubles():
    backoff = Backoff("exponential", base=1.5, jitter=0)
    assert [backoff.delay(n) for n in (1, 2, 3, 4, 5)] == [1.5, 3.0, 6.0, 12.0, 24.0]


def test_linear_grows_by_base():
    backoff = Backoff("linear", base=2.0, jitter=0)
    assert [backoff.delay(n) for n in (1, 2, 3, 4)] == [2.0, 4.0, 6.0, 8.0]


def test_fixed_stays_the_same():
    backoff = Backoff("fixed", base=7.0, jitter=0)
    assert [backoff.delay(n) for n in (1, 2, 10)] == [7.0, 7.0, 7.0]
    number = as_backoff(3)
    assert isinstance(number, Backoff)
    assert [number.delay(n) for n in (1, 5)] == [3.0, 3.0]


def test_cap_limits_the_delay():
    backoff = Backoff("exponential", base=1.0, cap=10.0, jitter=0)
    assert backoff.delay(4) == 8.0
    assert backoff.delay(5) == 10.0
    assert backoff.delay(200) == 10.0
    assert Backoff("linear", base=4.0, cap=10.0, jitter=0).delay(3) == 10.0


def test_jitter_stays_within_bounds():
    backoff = Backoff("fixed", base=10.0, jitter=0.25)
    delays = [backoff.delay(1) for _ in range(500)]
    assert all(7.5 <= d <= 12.5 for d in delays)
    assert len(set(delays)) > 1  # jitter actually spreads the retries
    assert min(delays) < 9.5 and max(delays) > 10.5
    capped = Backoff("exponential", base=1.0, cap=4.0, jitter=0.5)
    assert all(2.0 <= capped.delay(10) <= 6.0 for _ in range(200))


def test_default_backoff_is_exponential_with_jitter():
    backoff = Backoff()
    assert backoff.kind == "exponential"
    assert all(1.5 <= backoff.delay(1) <= 2.5 for _ in range(100))
    assert all(6.0 <= backoff.delay(3) <= 10.0 for _ in range(100))


def test_bad_backoff_is_refused():
    with pytest.raises(ValueError, match="unknown backoff"):
        Backoff("quadratic")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Backoff(jitter=2)
    with pytest.raises(TypeError):
        as_backoff(True)
