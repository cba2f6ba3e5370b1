"""Small builders for the conformance suite: new jobs, claims, outcomes and store-time checks.

Everything goes through the `Backend` protocol only, so the same tests run on every store.
Where determinism needs it, times are explicit (`now=`, `finished_at=`, `run_at=`: the
test-only overrides); elsewhere `now` is left out, so the store's own clock decides, and the
test brackets that clock with `store_window`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from conftest import POSTGRES_URL, REDIS_URL
from conveyor.backends.base import (
    Backend,
    ClaimParams,
    HeartbeatParams,
    JobChange,
    Outcome,
    OutcomeKind,
    ReleaseParams,
)
from conveyor.model.codec import encode
from conveyor.model.ids import new_job_id
from conveyor.model.job import AttemptError, JobRecord, NewJob

T = TypeVar("T")

LEASE = 30.0
"""Default lease of a claim in these tests: long enough that nothing expires by itself."""

STORE_TIME_PRECISION = 1e-3
"""How far a time the store wrote may sit outside the window its clock was read in (Redis
keeps times as decimal text, to a tenth of a millisecond)."""


def new_job(
    task: str = "t",
    queue: str = "default",
    priority: int = 5,
    delay: float = 0.0,
    key: str | None = None,
    max_attempts: int = 3,
    data: dict[str, Any] | None = None,
    job_id: str | None = None,
    *,
    now: float | None = None,
    timeout: float | None = None,
    backoff: dict[str, Any] | None = None,
    absolute: bool | None = None,
) -> NewJob:
    """A job as `Task.prepare` would build it: enqueued at `now`, due `delay` s later.

    Without `now`, the job is due `delay` s after the store's clock as it inserts. With one,
    the due time `now + delay` is explicit (`absolute_run_at`, unless `absolute=False`) and
    `insert` runs the store's clock at `now` (see there), so explicit times stay exact.
    """
    enqueued_at = time.time() if now is None else now
    return NewJob(
        id=job_id or new_job_id(),
        task=task,
        queue=queue,
        data=encode({} if data is None else data, what="data"),
        priority=priority,
        run_at=enqueued_at + delay,
        max_attempts=max_attempts,
        enqueued_at=enqueued_at,
        key=key,
        timeout=timeout,
        backoff=None if backoff is None else encode(backoff, what="backoff"),
        custom_id=job_id is not None,
        absolute_run_at=now is not None if absolute is None else absolute,
    )


def insert(backend: Backend, *jobs: NewJob, now: float | None = None) -> list[JobRecord]:
    """Insert in one batch. Jobs all built at one explicit time (`new_job(now=...)`) are
    inserted with the store's clock reading that time (the test-only `now`), so that their
    enqueued_at and state are as a store would have stored them then."""
    if now is None and all(job.absolute_run_at for job in jobs):
        times = {job.enqueued_at for job in jobs}
        now = times.pop() if len(times) == 1 else None
    return backend.job_insert_many(list(jobs), now=now)


def insert_one(backend: Backend, **kwargs: Any) -> JobRecord:
    (record,) = insert(backend, new_job(**kwargs))
    return record


def claim(
    backend: Backend,
    queues: tuple[str, ...] = ("default",),
    *,
    limit: int = 10,
    worker_id: str = "w1",
    lease: float = LEASE,
    now: float | None = None,
) -> list[JobRecord]:
    """Claim as worker `worker_id`; without `now`, by the store's clock."""
    return backend.job_claim(
        ClaimParams(queues=queues, limit=limit, worker_id=worker_id, lease_seconds=lease, now=now)
    )


def claim_one(backend: Backend, **kwargs: Any) -> JobRecord:
    jobs = claim(backend, limit=1, **kwargs)
    assert len(jobs) == 1, f"expected one claimed job, got {jobs}"
    return jobs[0]


def get(backend: Backend, job_id: str) -> JobRecord:
    record = backend.job_get(job_id)
    assert record is not None, f"job {job_id} is gone"
    return record


def outcome(
    record: JobRecord,
    kind: OutcomeKind,
    *,
    finished_at: float | None = None,
    worker_id: str | None = None,
    attempt: int | None = None,
    result: Any = None,
    error: str | None = None,
    traceback: str | None = None,
    run_at: float | None = None,
    delay: float | None = None,
) -> Outcome:
    """The outcome of the claimed attempt `record` (override fields to make it stale).

    Without `finished_at` the store's clock decides when it ended; an error's own `at` is
    then this host's clock, as a worker's would be.
    """
    if error is None and kind in ("retry", "failed"):
        error = "boom"
    this_attempt = record.attempt if attempt is None else attempt
    error_at = time.time() if finished_at is None else finished_at
    return Outcome(
        job_id=record.id,
        queue=record.queue,
        attempt=this_attempt,
        worker_id=record.worker_id if worker_id is None else worker_id,  # type: ignore[arg-type]
        kind=kind,
        finished_at=finished_at,
        result=None if result is None else encode(result, what="result"),
        error=None if error is None else AttemptError(this_attempt, error_at, error, traceback),
        delay=delay,
        run_at=run_at,
    )


def complete(backend: Backend, *outcomes: Outcome) -> dict[str, JobChange]:
    """Apply outcomes in one batch; the changes the store reports, by job id."""
    changes = backend.job_complete_many(list(outcomes))
    by_id = {change.id: change for change in changes}
    assert len(by_id) == len(changes), f"a job changed twice in one batch: {changes}"
    return by_id


def heartbeat(
    backend: Backend,
    ids: list[str],
    *,
    worker_id: str = "w1",
    lease: float = LEASE,
    now: float | None = None,
) -> dict[str, bool]:
    return backend.job_heartbeat(
        HeartbeatParams(worker_id=worker_id, job_ids=tuple(ids), lease_seconds=lease, now=now)
    )


def release(
    backend: Backend,
    ids: list[str],
    *,
    worker_id: str = "w1",
    queues: tuple[str, ...] = ("default",),
    now: float | None = None,
) -> dict[str, JobChange]:
    """Release claimed jobs whose handler never started; the changes, by job id."""
    changes = backend.job_release_many(
        ReleaseParams(worker_id=worker_id, job_ids=tuple(ids), queues=queues, now=now)
    )
    return {change.id: change for change in changes}


@dataclass(frozen=True, slots=True)
class StoreWindow:
    """The store's clock read just before and just after a call: any store time that call
    used lies within [start, end]."""

    start: float
    end: float

    def holds(self, value: float | None, offset: float = 0.0) -> bool:
        """Whether `value` is (one of) the call's store times plus `offset`."""
        return (
            value is not None
            and self.start + offset - STORE_TIME_PRECISION
            <= value
            <= self.end + offset + STORE_TIME_PRECISION
        )


def store_window(backend: Backend, action: Callable[[], T]) -> tuple[T, StoreWindow]:
    """Run `action` between two readings of the store's clock."""
    start = backend.store_time()
    value = action()
    return value, StoreWindow(start, backend.store_time())


@contextmanager
def skewed_worker_clock(
    backend: Backend, monkeypatch: pytest.MonkeyPatch, offset: float
) -> Iterator[None]:
    """This process's `time.time` runs `offset` s off, as on a worker host with a wrong clock,
    while the store's clock stays right: `now=None` calls must not notice.

    A file store's clock is this host's clock (there is no other host), so it is left alone.
    """
    if backend.capabilities.local_file:
        yield
        return
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + offset)
    try:
        yield
    finally:
        monkeypatch.setattr(time, "time", real)


def server_clock(backend: Backend) -> float:
    """The clock of the store's server read without the store's code: PostgreSQL's
    `clock_timestamp()`, Redis `TIME`, this host's for a file store (the conftest servers)."""
    scheme = backend.url.split(":", 1)[0]
    if scheme == "sqlite":
        return time.time()
    if scheme.startswith("postgres"):
        import psycopg

        with psycopg.connect(POSTGRES_URL, connect_timeout=2) as conn:
            row = conn.execute("SELECT extract(epoch FROM clock_timestamp())::float8").fetchone()
        assert row is not None
        return float(row[0])
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        seconds, micros = client.time()
    finally:
        client.close()
    return seconds + micros / 1e6


def require_capability(backend: Backend, name: str) -> None:
    """Skip a store-specific test on stores that lack the capability it is about."""
    if not getattr(backend.capabilities, name):
        pytest.skip(f"the store at {backend.url} lacks capability {name}")
