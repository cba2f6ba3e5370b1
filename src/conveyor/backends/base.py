"""The store protocol: every state transition of a job is one atomic method here.

The engine and the surfaces are written against `Backend` only; each store (SQLite today,
PostgreSQL and Redis next) implements it and proves it with `tests/backends/`. Methods are
named noun-first (`job_claim`, `queue_pause`) and take small frozen parameter records, so
that a new option is a new field, not a new signature.

Time is the store's: every `now` below defaults to None, which means "the store's own clock"
(PostgreSQL `clock_timestamp()`, Redis `TIME`, SQLite the host's, its only host). Passing a
`now` is for tests only: a worker's clock must never decide whether another worker's lease ran
out. State-changing calls return `JobChange` records (what changed, from which state to which),
the one boundary that events, statistics and flows are fed from.
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


@dataclass(slots=True)
class JobChange:
    """One job's state change, as the store applied it (times are the store's).

    Read-only by convention, not frozen: one is built per acknowledged job on the hot path,
    and a frozen dataclass costs four times as much to build.
    """

    id: str
    queue: str
    task: str
    from_state: JobState
    to_state: JobState
    attempt: int
    """The job's attempt counter after the change."""
    at: float
    """When the store applied the change."""
    run_at: float | None = None
    """When the job is (next) due, for a change back to `scheduled`/`queued`."""
    started_at: float | None = None
    """When the attempt that ended here started (None if none ran)."""
    finished_at: float | None = None
    """Set for a change into `completed`/`failed`/`cancelled`."""
    record: JobRecord | None = None
    """The job after the change, for single-job admin calls (cancel, manual retry)."""

    @classmethod
    def of_admin_call(cls, record: JobRecord, from_state: JobState, at: float) -> JobChange:
        """The change of a single-job admin call (cancel, manual retry), from the job after it."""
        return cls(
            id=record.id,
            queue=record.queue,
            task=record.task,
            from_state=from_state,
            to_state=record.state,
            attempt=record.attempt,
            at=at,
            run_at=record.run_at if record.state is JobState.QUEUED else None,
            finished_at=record.finished_at if record.state is JobState.CANCELLED else None,
            record=record,
        )


@dataclass(frozen=True, slots=True)
class ClaimParams:
    queues: tuple[str, ...]
    limit: int
    worker_id: str
    lease_seconds: float
    now: float | None = None
    """Tests only; None: the store's clock."""


OutcomeKind = Literal["completed", "retry", "failed", "cancelled", "snooze"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one attempt ended. Applied only if the job is still this worker's attempt.

    `snooze` puts the job back `scheduled` (or `queued` when `delay` is 0) without counting
    the attempt: `attempt` goes back down by one and the job's `snoozes` goes up by one.
    """

    job_id: str
    queue: str
    attempt: int
    worker_id: str
    kind: OutcomeKind
    finished_at: float | None = None
    """Tests only; None: the store's clock."""
    result: bytes | None = None
    error: AttemptError | None = None
    """For `retry` and `failed`. Its `at` is the worker's clock (informative only)."""
    delay: float | None = None
    """For `retry` and `snooze`: seconds after the store's now when the job is due again."""
    run_at: float | None = None
    """Tests only: an absolute due time that overrides `delay`."""


@dataclass(frozen=True, slots=True)
class HeartbeatParams:
    worker_id: str
    job_ids: tuple[str, ...]
    lease_seconds: float
    now: float | None = None
    """Tests only; None: the store's clock."""


@dataclass(frozen=True, slots=True)
class ReleaseParams:
    """Give claimed jobs back whose handler never started: the attempt does not count.

    (A job whose handler had started is not released: the engine records its attempt as a
    retry, "released at shutdown after N s", so `max_attempts` bounds every job's runs.)
    """

    worker_id: str
    job_ids: tuple[str, ...]
    queues: tuple[str, ...]
    """The queues of those jobs, whose idle workers are woken."""
    now: float | None = None
    """Tests only; None: the store's clock."""


@dataclass(frozen=True, slots=True)
class RescueResult:
    requeued: int
    failed: int
    cancelled: int
    changes: tuple[JobChange, ...] = field(default=(), compare=False)


@dataclass(frozen=True, slots=True)
class PruneParams:
    """Delete finished jobs older than their retention, at most `limit` of them per call
    (the caller repeats while a call deletes `limit`), so no statement runs long."""

    keep_completed: float
    """Seconds a completed job is kept after it finished."""
    keep_failed: float
    """Seconds a failed or cancelled job is kept."""
    limit: int = 1000
    now: float | None = None
    """Tests only; None: the store's clock."""


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


MAINTENANCE_LEADER = "maintenance"
"""The leader lease whose holder runs the periodic services (rescue, pruning, compaction)."""


class Backend(Protocol):
    """One store. Methods are synchronous and thread-safe; the engine calls them off-loop.

    Fork-safe: a child process made by `fork()` never reuses its parent's connections (each
    store resets them in the child with `os.register_at_fork`).
    """

    url: str
    capabilities: Capabilities

    def open(self, migrate: bool = True) -> None:
        """Connect and check this is a Conveyor store; with `migrate`, create or upgrade its
        schema, else refuse a schema older than the code."""

    def schema_version(self) -> int: ...

    def close(self) -> None: ...

    def store_time(self) -> float:
        """The store's clock, in Unix seconds: the one every lease and due time is judged by."""

    # jobs -----------------------------------------------------------------------------
    def job_insert_many(
        self, jobs: Sequence[NewJob], connection: Any = None, *, now: float | None = None
    ) -> list[JobRecord]:
        """Insert all jobs in one transaction and wake idle workers.

        Due times are the store's: each new job is enqueued at the store's now `t` and due
        at its `run_at` if `absolute_run_at`, else `t` plus its delay (`run_at -
        enqueued_at`); `scheduled` if that is after `t`, else `queued`. The records returned
        carry the stored times. `now`: tests only (None: the store's clock).

        `connection` (only with `capabilities.transactional_enqueue`): the caller's database
        connection; the jobs join its open transaction and wake workers when it commits.

        A job whose id exists, or whose (queue, key) is held by a pending or active job,
        is not inserted: the existing job is returned in its place.
        """

    async def job_insert_many_async(
        self, jobs: Sequence[NewJob], connection: Any
    ) -> list[JobRecord]:
        """`job_insert_many` inside the caller's open transaction on an async connection
        (psycopg `AsyncConnection`); only with `capabilities.transactional_enqueue`, other
        stores raise StoreError."""

    def job_get(self, job_id: str) -> JobRecord | None: ...

    def job_list(self, params: JobListParams) -> list[JobRecord]:
        """Newest first."""

    def job_claim(self, params: ClaimParams) -> list[JobRecord]:
        """Take up to `limit` due jobs from unpaused queues: active, attempt + 1, leased
        until the store's now + `lease_seconds`."""

    def job_complete_many(self, outcomes: Sequence[Outcome]) -> list[JobChange]:
        """Apply a batch of attempt outcomes in one transaction; return the changes applied
        (an outcome of an attempt that is no longer this worker's is skipped). A batch holds
        at most one outcome per job: which of two would win is not defined."""

    def job_heartbeat(self, params: HeartbeatParams) -> dict[str, bool]:
        """Extend the leases of this worker's jobs.

        Returns the given jobs this worker still holds, each mapped to whether a cancel was
        requested. A job missing from the answer was lost (rescued after its lease ran out).
        """

    def job_release_many(self, params: ReleaseParams) -> list[JobChange]:
        """Unstarted claimed jobs back to `queued` (attempt - 1), or `cancelled` when a
        cancel was requested."""

    def job_rescue_expired(self, now: float | None = None) -> RescueResult:
        """Jobs whose lease ran out by the store's clock (their worker died) go back to
        `queued`, the lost attempt counted; out of attempts they fail with "worker lost"."""

    def job_cancel(self, job_id: str, now: float | None = None) -> JobChange:
        """Pending: cancelled at once. Active: a cancel request the worker acts on (the
        change is then active -> active). `record` is the job after the call.
        Raises JobNotFound or InvalidTransition (already finished)."""

    def job_retry(self, job_id: str, now: float | None = None) -> JobChange:
        """Re-queue a failed or cancelled job with one more attempt allowed; `record` is the
        job after the call."""

    def job_set_progress(self, job_id: str, attempt: int, progress: bytes) -> bool:
        """Record progress of a running attempt; False if the attempt is no longer active."""

    def job_prune(self, params: PruneParams) -> int:
        """Delete up to `params.limit` finished jobs past retention; return how many."""

    def store_compact(self) -> None:
        """Reclaim the space of finished work in the hot structures, so claims stay fast
        (PostgreSQL: VACUUM the jobs table). Cheap, idempotent, safe from many workers."""

    def job_next_due_in(self, queues: Sequence[str]) -> float | None:
        """Seconds from the store's now until the earliest pending job of these unpaused
        queues is due (<= 0: due already), None when none is pending."""

    def jobs_wait(self, queues: Sequence[str], timeout: float) -> bool:
        """Block until work may have arrived for these queues, or `timeout` passes."""

    # queues ---------------------------------------------------------------------------
    def queue_pause(self, name: str) -> None: ...

    def queue_resume(self, name: str) -> None: ...

    def queue_stats(self, now: float | None = None, name: str | None = None) -> list[QueueStats]:
        """Every known queue (or one), sorted by name."""

    # workers --------------------------------------------------------------------------
    def worker_beat(self, info: WorkerInfo, ttl: float) -> None:
        """Insert or replace this worker's entry, its `heartbeat_at` set to the store's now;
        it counts as live for `ttl` seconds of the store's clock."""

    def worker_list(self, now: float | None = None) -> list[WorkerInfo]:
        """Live entries (expiry after now), sorted by (hostname, started_at, id)."""

    def worker_forget(self, worker_id: str) -> None:
        """Remove an entry (a clean exit); an unknown id is a no-op."""

    def worker_prune(self, now: float | None = None) -> int:
        """Delete the entries that expired by now; return how many."""

    # leadership -----------------------------------------------------------------------
    def leader_elect(self, name: str, holder: str, ttl: float) -> bool:
        """Take the lease `name` if it is free or expired, or renew it if `holder` has it,
        for `ttl` seconds of the store's clock. True when `holder` leads after the call.
        (SQLite/PostgreSQL: a row; Redis: `SET NX PX`, renewed only by its holder.)"""

    def leader_resign(self, name: str, holder: str) -> None:
        """Give the lease up at once if `holder` has it (a clean exit); else a no-op."""

    def leader_get(self, name: str) -> str | None:
        """Who holds the unexpired lease `name`, or None."""
