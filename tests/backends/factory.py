"""Small builders for the conformance suite: new jobs, claims and outcomes.

Everything goes through the `Backend` protocol only, so the same tests run on every store.
Times are explicit (`now=`) wherever the store takes them, which keeps due times, leases and
cut-offs deterministic.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from conveyor.backends.base import Backend, ClaimParams, Outcome, OutcomeKind
from conveyor.model.codec import encode
from conveyor.model.ids import new_job_id
from conveyor.model.job import AttemptError, JobRecord, NewJob

LEASE = 30.0
"""Default lease of a claim in these tests: long enough that nothing expires by itself."""


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
) -> NewJob:
    """A job as `Task.prepare` would build it: enqueued at `now`, due `delay` s later."""
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
    )


def insert(backend: Backend, *jobs: NewJob) -> list[JobRecord]:
    return backend.job_insert_many(list(jobs))


def insert_one(backend: Backend, **kwargs: Any) -> JobRecord:
    (record,) = backend.job_insert_many([new_job(**kwargs)])
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
    return backend.job_claim(
        ClaimParams(
            queues=queues,
            limit=limit,
            worker_id=worker_id,
            lease_seconds=lease,
            now=time.time() if now is None else now,
        )
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
) -> Outcome:
    """The outcome of the claimed attempt `record` (override fields to make it stale)."""
    at = time.time() if finished_at is None else finished_at
    if error is None and kind in ("retry", "failed"):
        error = "boom"
    this_attempt = record.attempt if attempt is None else attempt
    return Outcome(
        job_id=record.id,
        queue=record.queue,
        attempt=this_attempt,
        worker_id=record.worker_id if worker_id is None else worker_id,  # type: ignore[arg-type]
        kind=kind,
        finished_at=at,
        result=None if result is None else encode(result, what="result"),
        error=None if error is None else AttemptError(this_attempt, at, error, traceback),
        run_at=run_at,
    )


def require_capability(backend: Backend, name: str) -> None:
    """Skip a store-specific test on stores that lack the capability it is about."""
    if not getattr(backend.capabilities, name):
        pytest.skip(f"the store at {backend.url} lacks capability {name}")
