"""The job record as stores return it, and the parameters of a new job."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from .limits import check_new_job, storable_text
from .states import JobState


@dataclass(frozen=True, slots=True)
class AttemptError:
    """One failed attempt: kept forever with the job, the newest last."""

    attempt: int
    at: float
    error: str
    traceback: str | None = None

    def __post_init__(self) -> None:
        # An exception's text may hold NUL characters or lone surrogates that PostgreSQL (or
        # any JSON encoder) refuses: escaped here, the error is stored on every store.
        object.__setattr__(self, "error", storable_text(self.error))
        if self.traceback is not None:
            object.__setattr__(self, "traceback", storable_text(self.traceback))

    def to_dict(self) -> dict[str, Any]:
        return {
            "attempt": self.attempt,
            "at": self.at,
            "error": self.error,
            "traceback": self.traceback,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> AttemptError:
        return cls(int(raw["attempt"]), float(raw["at"]), str(raw["error"]), raw.get("traceback"))


@dataclass(frozen=True, slots=True)
class NewJob:
    """Everything needed to insert a job; `data` is already encoded JSON."""

    id: str
    task: str
    queue: str
    data: bytes
    priority: int
    run_at: float
    max_attempts: int
    enqueued_at: float
    key: str | None = None
    timeout: float | None = None
    backoff: bytes | None = None
    custom_id: bool = False
    """The caller chose the id (it may name an existing or long-finished job); ids Conveyor
    generates are new by construction, which lets a store skip looking for them."""
    absolute_run_at: bool = False
    """`run_at` is a moment the caller chose (a datetime or timestamp): kept as given.
    Otherwise only `run_at - enqueued_at` counts (the delay, 0 for an immediate job): the job
    is due that long after the store's clock as it inserts, so a producer whose clock is off
    neither holds its jobs back nor runs delayed ones early."""

    def __post_init__(self) -> None:
        check_new_job(self)  # what one store would take and another refuse (limits.py)

    def due(self, now: float) -> tuple[float, JobState]:
        """The stored run_at and state of this job inserted when the store's clock reads
        `now` (which is also its enqueued_at). The SQL and Lua inserts compute the same."""
        run_at = self.run_at if self.absolute_run_at else now + (self.run_at - self.enqueued_at)
        return run_at, JobState.SCHEDULED if run_at > now else JobState.QUEUED


@dataclass(frozen=True, slots=True)
class JobRecord:
    """A job as stored. Times are Unix seconds (float); `data`/`result` are decoded JSON."""

    id: str
    task: str
    queue: str
    state: JobState
    data: dict[str, Any]
    priority: int
    run_at: float
    attempt: int
    max_attempts: int
    enqueued_at: float
    key: str | None = None
    timeout: float | None = None
    backoff: dict[str, Any] | None = None
    progress: Any = None
    result: Any = None
    errors: tuple[AttemptError, ...] = field(default=())
    started_at: float | None = None
    finished_at: float | None = None
    worker_id: str | None = None
    lease_expires_at: float | None = None
    cancel_requested: bool = False
    snoozes: int = 0
    """How often a handler (or a limit) postponed the job without counting an attempt."""

    @classmethod
    def from_new(cls, job: NewJob, now: float) -> JobRecord:
        """The record of a job just inserted at the store's time `now`, built without
        reading it back."""
        run_at, state = job.due(now)
        return cls(
            id=job.id,
            task=job.task,
            queue=job.queue,
            state=state,
            data=orjson.loads(job.data),
            priority=job.priority,
            run_at=run_at,
            attempt=0,
            max_attempts=job.max_attempts,
            enqueued_at=now,
            key=job.key,
            timeout=job.timeout,
            backoff=None if job.backoff is None else orjson.loads(job.backoff),
        )

    @property
    def last_error(self) -> str | None:
        return self.errors[-1].error if self.errors else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, used by the CLI's --json and later by the HTTP API."""
        return {
            "id": self.id,
            "task": self.task,
            "queue": self.queue,
            "state": self.state.value,
            "data": self.data,
            "priority": self.priority,
            "run_at": self.run_at,
            "attempt": self.attempt,
            "max_attempts": self.max_attempts,
            "key": self.key,
            "timeout": self.timeout,
            "progress": self.progress,
            "result": self.result,
            "errors": [e.to_dict() for e in self.errors],
            "enqueued_at": self.enqueued_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "worker_id": self.worker_id,
            "cancel_requested": self.cancel_requested,
            "snoozes": self.snoozes,
        }
