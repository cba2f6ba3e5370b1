"""Model-based test of the job lifecycle: hypothesis drives a real store and a reference model
(`lifecycle_model.py`) with the same calls and compares them after every step.

Every example gets a fresh, empty store (a new SQLite file, PostgreSQL schema or Redis prefix,
made as conftest makes one per test). Time is a virtual clock passed as `now=` everywhere (the
protocol's test-only override), advanced by a rule, so every lease, due time and retention is
exact. Runs are derandomized, so `make test` is reproducible; `CONVEYOR_MODEL_EXAMPLES=500`
searches deeper locally.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, ClassVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from conftest import (
    SELECTED_STORES,
    _drop_schema,
    _postgres_url,
    _redis_url,
    _store_url,
    delete_redis_keys,
    require_server,
)
from conveyor.backends import open_backend
from conveyor.backends.base import (
    Backend,
    ClaimParams,
    HeartbeatParams,
    JobChange,
    JobListParams,
    Outcome,
    OutcomeKind,
    PruneParams,
    ReleaseParams,
)
from conveyor.model.codec import encode
from conveyor.model.errors import InvalidTransition, JobNotFound
from conveyor.model.job import AttemptError, JobRecord, NewJob
from conveyor.model.states import UNIQUE_STATES, JobState

from .factory import new_job
from .lifecycle_model import WORKER_LOST, Expected, LifecycleModel, ModelJob

T0 = 1_700_000_000.0
"""Where the virtual clock starts; it moves in steps of whole or half seconds that line up
with the leases and delays below, so boundaries (due exactly now, lease ending exactly now)
come up often."""
QUEUES = ("mail", "media")
TASKS = ("send", "resize")
KEYS = (None, None, "k1", "k2")
WORKERS = ("w1", "w2")
LEASES = (5.0, 30.0)
KINDS: tuple[OutcomeKind, ...] = ("completed", "retry", "failed", "cancelled", "snooze")
UNKNOWN = "0" * 26
"""An id that no job has."""

SETTINGS = settings(
    max_examples=int(os.environ.get("CONVEYOR_MODEL_EXAMPLES", "100")),
    stateful_step_count=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)

NEW_JOB = st.fixed_dictionaries(
    {
        "task": st.sampled_from(TASKS),
        "queue": st.sampled_from(QUEUES),
        "priority": st.integers(0, 2),
        "delay": st.sampled_from([0.0, 2.0, -3.0, 10.0, 60.0]),
        "key": st.sampled_from(KEYS),
        "max_attempts": st.integers(1, 3),
    }
)
CLAIM = st.fixed_dictionaries(
    {
        "queues": st.lists(st.sampled_from(QUEUES), min_size=1, max_size=2, unique=True).map(tuple),
        "limit": st.integers(1, 4),
        "worker_id": st.sampled_from(WORKERS),
        "lease_seconds": st.sampled_from(LEASES),
    }
)
"""A claim's parameters in one argument: hypothesis picks rules with fewer arguments more
often, and claims must be frequent for outcomes, leases and rescue to get exercised."""
OUTCOME = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(KINDS),
        "delay": st.sampled_from([0.0, 1.0, 20.0]),
        "absolute": st.booleans(),
        "wrong_worker": st.sampled_from([False, False, False, True]),
    }
)
Attempt = tuple[str, str, int, str]
"""(job id, queue, attempt, worker) of one claimed attempt."""


class FreshStores:
    """A new empty store per example, isolated the way conftest isolates one per test: its
    own SQLite file, PostgreSQL schema or Redis key prefix. `remove` deletes them all at the
    end of the test (per example, a Redis SCAN over a busy server would cost more than the
    example itself)."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind = kind
        self.tmp_path = tmp_path
        self.stem = f"t_{uuid.uuid4().hex[:16]}e"
        self.made = 0

    def open(self) -> Backend:
        self.made += 1
        name = f"{self.stem}{self.made}"
        if self.kind == "sqlite":
            directory = self.tmp_path / name
            directory.mkdir()
            url = _store_url("sqlite", directory)
        elif self.kind == "postgres":
            url = _postgres_url(name)
        else:
            url = _redis_url(name)
        backend = open_backend(url)
        backend.open()
        return backend

    def remove(self) -> None:
        if self.kind == "postgres":
            for n in range(1, self.made + 1):
                _drop_schema(f"{self.stem}{n}")
        elif self.kind == "redis":
            delete_redis_keys(f"{self.stem}*")  # a glob: every example's prefix at once
        # SQLite files live in tmp_path, which pytest removes


class LifecycleMachine(RuleBasedStateMachine):
    """One store and the model, driven alike; a subclass per store sets `stores`."""

    stores: ClassVar[FreshStores]

    def __init__(self) -> None:
        super().__init__()
        self.backend = self.stores.open()
        self.model = LifecycleModel()
        self.now = T0
        self.known: list[str] = []
        """Every job id the store ever returned (pruned ones too), oldest first."""
        self.attempts: list[Attempt] = []
        """Every attempt ever claimed: the targets of stale outcomes."""
        self.errors_made = 0

    def teardown(self) -> None:
        self.backend.close()

    # helpers ------------------------------------------------------------------------------
    def _any_id(self, likely: list[str]) -> st.SearchStrategy[str]:
        """Usually one of `likely`, else any id ever seen or one never seen."""
        anything = st.sampled_from([*self.known, UNKNOWN])
        return st.one_of(st.sampled_from(likely), anything) if likely else anything

    def check_record(self, record: JobRecord) -> None:
        job = self.model.jobs[record.id]
        seen = job.states_seen_at(self.now)
        assert record.state in seen, f"job {record.id}: state {record.state}, model {job.state}"
        assert view_record(record) == view_model(job), f"job {record.id} differs from the model"

    def check_changes(self, actual: list[JobChange], expected: list[Expected]) -> None:
        got = sorted(actual, key=lambda change: change.id)
        want = sorted(expected, key=lambda e: e.change.id)
        assert [c.id for c in got] == [e.change.id for e in want], "other jobs changed"
        for change, e in zip(got, want, strict=True):
            assert change.from_state in e.from_states, f"{change} from {e.from_states}"
            same_from = replace(change, from_state=e.change.from_state, record=None)
            assert view_change(same_from) == view_change(e.change)
            if change.record is not None:
                self.check_record(change.record)

    def _insert(self, jobs: list[NewJob]) -> None:
        records = self.backend.job_insert_many(jobs, now=self.now)
        expected = self.model.insert(jobs, self.now)
        assert [r.id for r in records] == expected, "not the new or existing jobs expected"
        for record in records:
            self.check_record(record)
        self.known += [job_id for job_id in dict.fromkeys(expected) if job_id not in self.known]

    # rules --------------------------------------------------------------------------------
    @rule(seconds=st.sampled_from([5.0, 2.0, 0.5, 30.0, 100.0]))
    def tick(self, seconds: float) -> None:
        self.now += seconds

    @initialize(specs=st.lists(NEW_JOB, min_size=1, max_size=6))
    def start_with_jobs(self, specs: list[dict[str, Any]]) -> None:
        """Jobs from the first step on, so claims and outcomes get going early."""
        self.enqueue(specs)

    @rule(specs=st.lists(NEW_JOB, min_size=1, max_size=3))
    def enqueue(self, specs: list[dict[str, Any]]) -> None:
        self._insert([new_job(**spec, now=self.now, absolute=False) for spec in specs])

    @precondition(lambda self: self.known)
    @rule(data=st.data(), spec=NEW_JOB)
    def enqueue_with_a_known_id(self, data: st.DataObject, spec: dict[str, Any]) -> None:
        """The existing job comes back; a pruned job's id makes a new job."""
        job_id = data.draw(st.sampled_from(self.known), label="id")
        self._insert([new_job(**spec, job_id=job_id, now=self.now)])

    @precondition(lambda self: any(job.is_due(self.now) for job in self.model.jobs.values()))
    @rule(how=CLAIM)
    def claim(self, how: dict[str, Any]) -> None:
        """When some job is due (in any queue, paused or not): a claim with nothing to take
        would crowd out other steps; jobs not yet due are usually there as well."""
        params = ClaimParams(**how, now=self.now)
        records = self.backend.job_claim(params)
        expected = self.model.claim(
            params.queues, params.limit, params.worker_id, params.lease_seconds, self.now
        )
        assert [r.id for r in records] == expected, "claimed other jobs or in another order"
        for record in records:
            self.check_record(record)
            self.attempts.append((record.id, record.queue, record.attempt, params.worker_id))

    @precondition(lambda self: self.attempts)
    @rule(data=st.data())
    def finish(self, data: st.DataObject) -> None:
        """A batch of outcomes: live attempts and stale ones (old attempt, other worker).

        One outcome per job in a batch, as the engine sends them (an attempt ends once).
        """
        live = [(j.id, j.queue, j.attempt, j.worker or "") for j in self.model.active()]
        past = st.sampled_from(self.attempts)
        target = st.one_of(st.sampled_from(live), past) if live else past
        picks: list[tuple[Attempt, dict[str, Any]]] = data.draw(
            st.lists(
                st.tuples(target, OUTCOME), min_size=1, max_size=3, unique_by=lambda p: p[0][0]
            )
        )
        outcomes = [self._outcome(attempt, **how) for attempt, how in picks]
        changes = self.backend.job_complete_many(outcomes)
        expected = [e for o in outcomes if (e := self.model.apply(o)) is not None]
        self.check_changes(changes, expected)

    def _outcome(
        self, attempt: Attempt, kind: OutcomeKind, delay: float, absolute: bool, wrong_worker: bool
    ) -> Outcome:
        job_id, queue, number, worker = attempt
        if wrong_worker:
            worker = next(w for w in WORKERS if w != worker)
        error = None
        if kind in ("retry", "failed"):
            self.errors_made += 1
            error = AttemptError(number, self.now, f"error {self.errors_made}")
        later = kind in ("retry", "snooze")
        return Outcome(
            job_id=job_id,
            queue=queue,
            attempt=number,
            worker_id=worker,
            kind=kind,
            finished_at=self.now,
            result=encode({"ok": job_id}, what="result") if kind == "completed" else None,
            error=error,
            delay=delay if later and not absolute else None,
            run_at=self.now + delay if later and absolute else None,
        )

    @precondition(lambda self: self.known)
    @rule(data=st.data(), worker=st.sampled_from(WORKERS), lease=st.sampled_from(LEASES))
    def heartbeat(self, data: st.DataObject, worker: str, lease: float) -> None:
        ids = data.draw(
            st.lists(self._any_id([j.id for j in self.model.active()]), max_size=4, unique=True)
        )
        held = self.backend.job_heartbeat(HeartbeatParams(worker, tuple(ids), lease, self.now))
        assert held == self.model.heartbeat(worker, ids, lease, self.now)

    @precondition(lambda self: self.model.active())
    @rule(data=st.data(), worker=st.sampled_from(WORKERS))
    def release(self, data: st.DataObject, worker: str) -> None:
        """Release active jobs, some of them another worker's (those stay)."""
        active = [j.id for j in self.model.active()]
        ids = data.draw(st.lists(st.sampled_from(active), min_size=1, max_size=3, unique=True))
        queues = tuple(sorted({self.model.jobs[i].queue for i in ids}))
        params = ReleaseParams(worker, tuple(ids), queues, now=self.now)
        changes = self.backend.job_release_many(params)
        self.check_changes(changes, self.model.release(worker, ids, self.now))

    @precondition(lambda self: self.model.expired(self.now, boundary=True))
    @rule()
    def rescue(self) -> None:
        """Only once a lease ran out or ends exactly now (which must stay): a rescue with
        nothing to do would crowd out other steps."""
        result = self.backend.job_rescue_expired(now=self.now)
        expected = self.model.rescue(self.now)
        self.check_changes(list(result.changes), expected)
        counts = {
            state: sum(e.change.to_state is state for e in expected)
            for state in (JobState.QUEUED, JobState.FAILED, JobState.CANCELLED)
        }
        assert (result.requeued, result.failed, result.cancelled) == tuple(counts.values())

    @precondition(lambda self: self.known)
    @rule(data=st.data(), retry=st.booleans())
    def cancel_or_retry(self, data: st.DataObject, retry: bool) -> None:
        """An operator's cancel (of any job), or manual retry (usually of a finished one)."""
        call: Callable[[str, float], JobChange] = self.backend.job_cancel
        model: Callable[[str, float], Expected] = self.model.cancel
        likely: list[str] = []
        if retry:
            call, model = self.backend.job_retry, self.model.retry
            likely = [j.id for j in self.model.finished() if j.state is not JobState.COMPLETED]
        job_id = data.draw(self._any_id(likely), label="id")
        try:
            expected = model(job_id, self.now)
        except (JobNotFound, InvalidTransition) as refused:
            with pytest.raises(type(refused)):
                call(job_id, self.now)
            return
        change = call(job_id, self.now)
        assert change.record is not None, "a single-job admin call returns the job"
        self.check_changes([change], [expected])

    @precondition(lambda self: self.model.finished())
    @rule(
        keep_completed=st.sampled_from([0.0, 5.0, 60.0]),
        keep_failed=st.sampled_from([0.0, 5.0, 60.0]),
        limit=st.integers(1, 3),
    )
    def prune(self, keep_completed: float, keep_failed: float, limit: int) -> None:
        expected = self.model.prune(keep_completed, keep_failed, limit, self.now)
        deleted = self.backend.job_prune(PruneParams(keep_completed, keep_failed, limit, self.now))
        assert deleted == expected.count
        gone = {job_id for job_id in expected.eligible if self.backend.job_get(job_id) is None}
        assert len(gone) == deleted, f"reported {deleted} deleted, {len(gone)} are gone"
        self.model.forget(gone)

    @rule(queue=st.sampled_from(QUEUES), pause=st.booleans())
    def pause_or_resume(self, queue: str, pause: bool) -> None:
        if pause:
            self.backend.queue_pause(queue)
            self.model.paused.add(queue)
        else:
            self.backend.queue_resume(queue)
            self.model.paused.discard(queue)

    # invariants ---------------------------------------------------------------------------
    @invariant()
    def every_job_matches_the_model(self) -> None:
        """The store holds exactly the model's jobs, each as the model has it (so no job is
        active for two workers). One listing: a read per job would make round trips the bulk
        of the test on a server store."""
        records = self.backend.job_list(JobListParams(limit=10_000))
        assert sorted(r.id for r in records) == sorted(self.model.jobs), "other jobs stored"
        holders: list[tuple[str, str]] = []
        for record in records:
            self.check_record(record)
            if record.key is not None and record.state in UNIQUE_STATES:
                holders.append((record.queue, record.key))
        assert len(holders) == len(set(holders)), f"a unique key held twice: {holders}"


def view_record(record: JobRecord) -> dict[str, Any]:
    """The fields the model knows, times rounded; a due time only while pending and a start
    only while active (what stores keep there otherwise is their own business)."""
    errors = [
        (e.attempt, WORKER_LOST if e.error.startswith(WORKER_LOST) else e.error)
        for e in record.errors
    ]
    return _view(
        record.state,
        {
            "task": record.task,
            "queue": record.queue,
            "priority": record.priority,
            "key": record.key,
            "attempt": record.attempt,
            "max_attempts": record.max_attempts,
            "snoozes": record.snoozes,
            "errors": errors,
            "worker": record.worker_id,
            "cancel_requested": record.cancel_requested,
            "result": record.result,
        },
        record.run_at,
        record.started_at,
        record.lease_expires_at,
        record.finished_at,
    )


def view_model(job: ModelJob) -> dict[str, Any]:
    return _view(
        job.state,
        {
            "task": job.task,
            "queue": job.queue,
            "priority": job.priority,
            "key": job.key,
            "attempt": job.attempt,
            "max_attempts": job.max_attempts,
            "snoozes": job.snoozes,
            "errors": list(job.errors),
            "worker": job.worker,
            "cancel_requested": job.cancel_requested,
            "result": {"ok": job.id} if job.state is JobState.COMPLETED else None,
        },
        job.run_at,
        job.started_at,
        job.lease_expires_at,
        job.finished_at,
    )


def _view(
    state: JobState,
    fields: dict[str, Any],
    run_at: float | None,
    started_at: float | None,
    lease_expires_at: float | None,
    finished_at: float | None,
) -> dict[str, Any]:
    fields["lease_expires_at"] = _round(lease_expires_at)
    fields["finished_at"] = _round(finished_at)
    if state in (JobState.SCHEDULED, JobState.QUEUED):
        fields["run_at"] = _round(run_at)
    elif state is JobState.ACTIVE:
        fields["started_at"] = _round(started_at)
    return fields


def view_change(change: JobChange) -> dict[str, Any]:
    fields = asdict(change)
    for name in ("at", "run_at", "started_at", "finished_at"):
        fields[name] = _round(fields[name])
    return fields


def _round(value: float | None) -> float | None:
    """Times are whole or half seconds: rounding hides only a store's float formatting."""
    return None if value is None else round(value, 3)


@pytest.mark.timeout(600)  # a failure is shrunk to its smallest example: leave it the time
@pytest.mark.parametrize("store", SELECTED_STORES)
def test_every_store_follows_the_lifecycle_model(store: str, tmp_path: Path) -> None:
    if store != "sqlite":
        require_server(store)
    stores = FreshStores(store, tmp_path)
    machine = type(f"Lifecycle{store.title()}", (LifecycleMachine,), {"stores": stores})
    try:
        run_state_machine_as_test(machine, settings=SETTINGS)
    finally:
        stores.remove()
