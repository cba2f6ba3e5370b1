"""The store protocol: every state transition of a job is one atomic method here.

The engine and the surfaces are written against `Backend` only; each store (SQLite today,
PostgreSQL and Redis next) implements it and proves it with `tests/backends/`. Methods are
named noun-first (`job_claim`, `queue_pause`) and take small frozen parameter records, so
that a new option is a new field, not a new signature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..model.job import AttemptError, JobRecord, NewJob
from ..model.states import JobState


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What a store can do beyond the protocol's common ground."""

    wakes_other_processes: bool
    """Idle workers in other processes are woken by enqueue, not by polling."""
    transactional_enqueue: bool
    """Enqueue can join the caller's own database transaction."""
    local_file: bool
    """The store is a file on this machine (several processes, one host)."""


@dataclass(frozen=True, slots=True)
class ClaimParams:
    queues: tuple[str, ...]
    limit: int
    worker_id: str
    lease_seconds: float
    now: float


OutcomeKind = Literal["completed", "retry", "failed", "cancelled"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended. Applied only if the job is still this worker's attempt."""

    job_id: str
    queue: str
    attempt: int
    worker_id: str
    kind: OutcomeKind
    finished_at: float
    result: bytes | None = None
    error: AttemptError | None = None
    run_at: float | None = None
    """For `retry`: when the next attempt is due."""


@dataclass(frozen=True, slots=True)
class HeartbeatParams:
    worker_id: str
    job_ids: tuple[str, ...]
    lease_seconds: float
    now: float


@dataclass(frozen=True, slots=True)
class ReleaseParams:
    """Give claimed jobs back unrun (graceful shutdown): the attempt does not count."""

    worker_id: str
    job_ids: tuple[str, ...]
    queues: tuple[str, ...]
    """The queues of those jobs, whose idle workers are woken."""
    now: float


@dataclass(frozen=True, slots=True)
class RescueResult:
    requeued: int
    failed: int
    cancelled: int


@dataclass(frozen=True, slots=True)
class PruneParams:
    completed_before: float
    failed_before: float
    """Also applies to cancelled jobs."""


@dataclass(frozen=True, slots=True)
class JobListParams:
    queue: str | None = None
    state: JobState | None = None
    task: str | None = None
    limit: int = 50
    before_id: str | None = None
    """Cursor: only jobs with a smaller id (newest first paging)."""


@dataclass(frozen=True, slots=True)
class QueueStats:
    name: str
    paused: bool
    counts: dict[str, int] = field(default_factory=dict)
    """Jobs per state; a `scheduled` job whose time has come counts as `queued`."""
    oldest_queued_at: float | None = None
    completed_last_minute: int = 0
    failed_last_minute: int = 0
    avg_wait_seconds: float | None = None
    """Mean due time to start, over jobs finished in the last hour."""
    avg_run_seconds: float | None = None
    """Mean start to finish over jobs finished in the last hour."""

    @property
    def error_rate(self) -> float | None:
        done = self.counts.get("completed", 0) + self.counts.get("failed", 0)
        return None if done == 0 else self.counts.get("failed", 0) / done


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """One worker process as it last reported itself (the registry)."""

    id: str
    """The worker id (`Worker.worker_id`)."""
    kind: str
    """"supervisor" or "worker"."""
    hostname: str
    pid: int
    queues: tuple[str, ...]
    concurrency: int
    started_at: float
    heartbeat_at: float
    jobs_done: int = 0
    current_jobs: tuple[str, ...] = ()
    """Ids of the jobs it runs now."""
    rss_mb: float | None = None
    parent_id: str | None = None
    """A supervisor's child names its supervisor."""
    stats: dict[str, Any] = field(default_factory=dict)
    """Free-form JSON, e.g. autoscaling decisions."""


class Backend(Protocol):
    """One store. Methods are synchronous and thread-safe; the engine calls them off-loop."""

    url: str
    capabilities: Capabilities

    def open(self, migrate: bool = True) -> None:
        """Connect and check this is a Conveyor store; with `migrate`, create or upgrade its
        schema, else refuse a schema older than the code."""

    def schema_version(self) -> int: ...

    def close(self) -> None: ...

    # jobs -----------------------------------------------------------------------------
    def job_insert_many(self, jobs: Sequence[NewJob], connection: Any = None) -> list[JobRecord]:
        """Insert all jobs in one transaction and wake idle workers.

        `connection` (only with `capabilities.transactional_enqueue`): the caller's database
        connection; the jobs join its open transaction and wake workers when it commits.

        A job whose id exists, or whose (queue, key) is held by a pending or active job,
        is not inserted: the existing job is returned in its place.
        """

    def job_get(self, job_id: str) -> JobRecord | None: ...

    def job_list(self, params: JobListParams) -> list[JobRecord]:
        """Newest first."""

    def job_claim(self, params: ClaimParams) -> list[JobRecord]:
        """Take up to `limit` due jobs from unpaused queues: active, attempt + 1, leased."""

    def job_complete_many(self, outcomes: Sequence[Outcome]) -> None:
        """Apply a batch of attempt outcomes in one transaction."""

    def job_heartbeat(self, params: HeartbeatParams) -> dict[str, bool]:
        """Extend the leases of this worker's jobs.

        Returns the given jobs this worker still holds, each mapped to whether a cancel was
        requested. A job missing from the answer was lost (rescued after its lease ran out).
        """

    def job_release_many(self, params: ReleaseParams) -> None: ...

    def job_rescue_expired(self, now: float) -> RescueResult:
        """Jobs whose lease ran out (their worker died) go back to `queued`, the lost
        attempt counted; out of attempts they fail with "worker lost"."""

    def job_cancel(self, job_id: str, now: float) -> JobRecord:
        """Pending: cancelled at once. Active: a cancel request the worker acts on.
        Raises JobNotFound or InvalidTransition (already finished)."""

    def job_retry(self, job_id: str, now: float) -> JobRecord:
        """Re-queue a failed or cancelled job with one more attempt allowed."""

    def job_set_progress(self, job_id: str, attempt: int, progress: bytes) -> bool:
        """Record progress of a running attempt; False if the attempt is no longer active."""

    def job_prune(self, params: PruneParams) -> int: ...

    def store_compact(self) -> None:
        """Reclaim the space of finished work in the hot structures, so claims stay fast
        (PostgreSQL: VACUUM the jobs table). Cheap, idempotent, safe from many workers."""

    def job_next_due_at(self, queues: Sequence[str]) -> float | None:
        """When the earliest pending job of these queues is due (sleep until then)."""

    def jobs_wait(self, queues: Sequence[str], timeout: float) -> bool:
        """Block until work may have arrived for these queues, or `timeout` passes."""

    # queues ---------------------------------------------------------------------------
    def queue_pause(self, name: str) -> None: ...

    def queue_resume(self, name: str) -> None: ...

    def queue_stats(self, now: float, name: str | None = None) -> list[QueueStats]:
        """Every known queue (or one), sorted by name."""

    # workers --------------------------------------------------------------------------
    def worker_beat(self, info: WorkerInfo, ttl: float) -> None:
        """Insert or replace this worker's entry; it counts as live until
        `info.heartbeat_at + ttl`."""

    def worker_list(self, now: float) -> list[WorkerInfo]:
        """Live entries (expiry after `now`), sorted by (hostname, started_at, id)."""

    def worker_forget(self, worker_id: str) -> None:
        """Remove an entry (a clean exit); an unknown id is a no-op."""

    def worker_prune(self, now: float) -> int:
        """Delete the entries that expired by `now`; return how many."""
