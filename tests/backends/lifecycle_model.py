"""A pure reference model of the job lifecycle that every store must follow.

`test_lifecycle_model.py` drives a real store and this model with the same calls and
compares them after every step. The rules are those of `conveyor.backends.base` (its
docstrings) and of the issue-8 store spec; where those are silent, the model follows the
SQLite store. Time is always explicit (the test's virtual clock), so the model is exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from conveyor.backends.base import JobChange, Outcome
from conveyor.model.errors import InvalidTransition, JobNotFound
from conveyor.model.job import NewJob
from conveyor.model.states import FINISHED_STATES, UNIQUE_STATES, JobState

WORKER_LOST = "worker lost"
"""How the error a rescue records begins."""

ACTIVE = JobState.ACTIVE
PENDING = (JobState.SCHEDULED, JobState.QUEUED)


@dataclass
class ModelJob:
    """What the model knows of one job: the fields every store must agree on."""

    id: str
    task: str
    queue: str
    priority: int
    key: str | None
    max_attempts: int
    state: JobState
    run_at: float
    attempt: int = 0
    snoozes: int = 0
    errors: list[tuple[int, str]] = field(default_factory=list)
    """(attempt, message) per recorded error, oldest first."""
    worker: str | None = None
    started_at: float | None = None
    """The start of the attempt that runs now (checked only while active)."""
    lease_expires_at: float | None = None
    finished_at: float | None = None
    cancel_requested: bool = False

    def states_seen_at(self, now: float) -> frozenset[JobState]:
        """The states a store may show: a `scheduled` job whose time has come may show as
        `queued` (Redis promotes due jobs when it next claims from the queue)."""
        if self.state is JobState.SCHEDULED and self.run_at <= now:
            return frozenset({JobState.SCHEDULED, JobState.QUEUED})
        return frozenset({self.state})

    def is_due(self, now: float) -> bool:
        return self.state in PENDING and self.run_at <= now


@dataclass(frozen=True)
class Expected:
    """A change the store must report: `change.from_state` may also be any of `from_states`."""

    change: JobChange
    from_states: frozenset[JobState]


@dataclass(frozen=True)
class PruneExpectation:
    eligible: frozenset[str]
    """Every finished job past its retention."""
    count: int
    """How many of them one call deletes: all, up to the limit."""


class LifecycleModel:
    """Jobs by id in creation order, paused queues, and the rules that change them."""

    def __init__(self) -> None:
        self.jobs: dict[str, ModelJob] = {}
        self.paused: set[str] = set()

    # what there is ------------------------------------------------------------------------
    def active(self) -> list[ModelJob]:
        return [job for job in self.jobs.values() if job.state is ACTIVE]

    def finished(self) -> list[ModelJob]:
        return [job for job in self.jobs.values() if job.state in FINISHED_STATES]

    def expired(self, now: float, boundary: bool = False) -> list[ModelJob]:
        """Active jobs whose lease ran out before now: what a rescue takes (with `boundary`,
        also those whose lease ends exactly now, which it must leave)."""
        return [
            job
            for job in self.jobs.values()
            if job.state is ACTIVE
            and job.lease_expires_at is not None
            and (job.lease_expires_at < now or (boundary and job.lease_expires_at == now))
        ]

    # enqueue ------------------------------------------------------------------------------
    def holder(self, queue: str, key: str) -> ModelJob | None:
        """The pending or active job that holds a unique key."""
        for job in self.jobs.values():
            if job.queue == queue and job.key == key and job.state in UNIQUE_STATES:
                return job
        return None

    def insert(self, jobs: list[NewJob], now: float) -> list[str]:
        """The ids the store returns: the new job's, or the existing job's in its place
        (due its delay after the store's clock, `now`)."""
        out = []
        for new in jobs:
            held = None if new.key is None else self.holder(new.queue, new.key)
            if new.id in self.jobs:
                out.append(new.id)
            elif held is not None:
                out.append(held.id)
            else:
                run_at, state = new.due(now)
                self.jobs[new.id] = ModelJob(
                    id=new.id,
                    task=new.task,
                    queue=new.queue,
                    priority=new.priority,
                    key=new.key,
                    max_attempts=new.max_attempts,
                    state=state,
                    run_at=run_at,
                )
                out.append(new.id)
        return out

    # claim and leases ---------------------------------------------------------------------
    def claim(
        self, queues: tuple[str, ...], limit: int, worker: str, lease: float, now: float
    ) -> list[str]:
        """Due jobs of the unpaused queues, best first: priority, due time, id."""
        due = [
            job
            for job in self.jobs.values()
            if job.queue in queues and job.queue not in self.paused and job.is_due(now)
        ]
        due.sort(key=lambda job: (job.priority, job.run_at, job.id))
        for job in due[:limit]:
            job.state = ACTIVE
            job.attempt += 1
            job.worker = worker
            job.started_at = now
            job.lease_expires_at = now + lease
        return [job.id for job in due[:limit]]

    def heartbeat(self, worker: str, ids: list[str], lease: float, now: float) -> dict[str, bool]:
        """The worker's active jobs among `ids` (an expired lease not yet rescued included)."""
        held = {}
        for job_id in ids:
            job = self.jobs.get(job_id)
            if job is not None and job.state is ACTIVE and job.worker == worker:
                job.lease_expires_at = now + lease
                held[job_id] = job.cancel_requested
        return held

    def release(self, worker: str, ids: list[str], now: float) -> list[Expected]:
        """Unstarted claims back to `queued` at now, the attempt not counted (so the change
        names no `started_at`: no attempt ran; the spec is silent, this is SQLite's)."""
        changes = []
        for job_id in ids:
            job = self.jobs.get(job_id)
            if job is None or job.state is not ACTIVE or job.worker != worker:
                continue
            job.attempt -= 1
            job.worker = job.lease_expires_at = job.started_at = None
            job.run_at = now
            if job.cancel_requested:
                changes.append(self._end(job, JobState.CANCELLED, now, None))
            else:
                job.state = JobState.QUEUED
                changes.append(self._change(job, ACTIVE, now, run_at=now))
        return changes

    def rescue(self, now: float) -> list[Expected]:
        """Leases that ran out before now: the attempt counted, a "worker lost" error."""
        changes = []
        for job in self.expired(now):
            started = job.started_at
            job.errors.append((job.attempt, WORKER_LOST))
            job.worker = job.lease_expires_at = None
            job.run_at = now
            if job.cancel_requested:
                changes.append(self._end(job, JobState.CANCELLED, now, started))
            elif job.attempt >= job.max_attempts:
                changes.append(self._end(job, JobState.FAILED, now, started))
            else:
                job.state = JobState.QUEUED
                changes.append(self._change(job, ACTIVE, now, started=started, run_at=now))
        return changes

    # outcomes -----------------------------------------------------------------------------
    def apply(self, outcome: Outcome) -> Expected | None:
        """One outcome at its `finished_at`; None when it is stale (not this attempt)."""
        job = self.jobs.get(outcome.job_id)
        if (
            job is None
            or job.state is not ACTIVE
            or job.worker != outcome.worker_id
            or job.attempt != outcome.attempt
        ):
            return None
        assert outcome.finished_at is not None, "the model needs explicit times"
        t = outcome.finished_at
        started = job.started_at
        kind = outcome.kind
        if kind in ("failed", "retry"):
            assert outcome.error is not None, f"a {kind} outcome carries its error"
            job.errors.append((outcome.attempt, outcome.error.error))
        if kind in ("completed", "failed", "cancelled"):
            job.lease_expires_at = None  # the worker stays recorded: who ran it last
            return self._end(job, JobState(kind), t, started)
        # retry or snooze: due again later, on no worker
        run_at = outcome.run_at if outcome.run_at is not None else t + (outcome.delay or 0)
        if kind == "snooze":
            job.attempt -= 1
            job.snoozes += 1
            job.started_at = None
        job.worker = job.lease_expires_at = None
        job.run_at = run_at
        if job.cancel_requested:
            return self._end(job, JobState.CANCELLED, t, started)
        job.state = JobState.SCHEDULED if run_at > t else JobState.QUEUED
        return self._change(job, ACTIVE, t, started=started, run_at=run_at)

    # admin --------------------------------------------------------------------------------
    def cancel(self, job_id: str, now: float) -> Expected:
        """Pending: cancelled now. Active: a cancel request. Raises as the store must."""
        job = self._get(job_id)
        if job.state in FINISHED_STATES:
            raise InvalidTransition(job.state.value)
        if job.state is ACTIVE:
            job.cancel_requested = True
            return self._change(job, ACTIVE, now)
        before = job.states_seen_at(now)
        expected = self._end(job, JobState.CANCELLED, now, None)
        return Expected(expected.change, before)

    def retry(self, job_id: str, now: float) -> Expected:
        """A failed or cancelled job queued again now, one more attempt allowed if needed."""
        job = self._get(job_id)
        if job.state not in (JobState.FAILED, JobState.CANCELLED):
            raise InvalidTransition(job.state.value)
        if job.key is not None and self.holder(job.queue, job.key) is not None:
            raise InvalidTransition("another pending job holds its key")
        old = job.state
        job.state = JobState.QUEUED
        job.run_at = now
        job.finished_at = job.worker = None
        job.cancel_requested = False
        job.max_attempts = max(job.max_attempts, job.attempt + 1)
        return self._change(job, old, now, run_at=now)

    def prune(
        self, keep_completed: float, keep_failed: float, limit: int, now: float
    ) -> PruneExpectation:
        """Which jobs one prune call may delete, and how many it must."""
        eligible = frozenset(
            job.id
            for job in self.jobs.values()
            if job.finished_at is not None
            and (
                (job.state is JobState.COMPLETED and job.finished_at < now - keep_completed)
                or (
                    job.state in (JobState.FAILED, JobState.CANCELLED)
                    and job.finished_at < now - keep_failed
                )
            )
        )
        return PruneExpectation(eligible, min(limit, len(eligible)))

    def forget(self, ids: set[str]) -> None:
        for job_id in ids:
            del self.jobs[job_id]

    # helpers ------------------------------------------------------------------------------
    def _get(self, job_id: str) -> ModelJob:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobNotFound(job_id)
        return job

    def _end(self, job: ModelJob, state: JobState, at: float, started: float | None) -> Expected:
        old = job.state
        job.state = state
        job.finished_at = at
        job.lease_expires_at = None
        return self._change(job, old, at, started=started, finished_at=at)

    @staticmethod
    def _change(
        job: ModelJob,
        from_state: JobState,
        at: float,
        *,
        started: float | None = None,
        run_at: float | None = None,
        finished_at: float | None = None,
    ) -> Expected:
        change = JobChange(
            id=job.id,
            queue=job.queue,
            task=job.task,
            from_state=from_state,
            to_state=job.state,
            attempt=job.attempt,
            at=at,
            run_at=run_at,
            started_at=started,
            finished_at=finished_at,
        )
        return Expected(change, frozenset({from_state}))
