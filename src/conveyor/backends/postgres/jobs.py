"""The jobs' hot path: enqueue (blocking and asyncio), claim, outcomes, leases, wake-ups.

Each call is one transaction of as few statements as the change needs; every time in them is
the store's (`{now}` in queries.sql) unless a test passes one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from psycopg.rows import dict_row

from ...model.job import JobRecord, NewJob
from ...model.states import JobState
from ..base import (
    ClaimParams,
    HeartbeatParams,
    JobChange,
    Outcome,
    ReleaseParams,
    RescueResult,
)
from ..rows import error_json, record_from_row
from .core import PostgresCore
from .inserts import InsertBatch

_POSTPONED = ("retry", "snooze")


def changes_from(rows: Iterable[dict[str, Any]]) -> list[JobChange]:
    """JobChanges from the rows of a statement that changed active jobs (see queries.sql)."""
    return [
        JobChange(
            id=r["id"],
            queue=r["queue"],
            task=r["task"],
            from_state=JobState.ACTIVE,
            to_state=JobState(r["state"]),
            attempt=r["attempt"],
            at=r["at"],
            run_at=r["run_at"],
            started_at=r["started_at"],
            finished_at=r["finished_at"],
        )
        for r in rows
    ]


class JobStatements(PostgresCore):
    # enqueue ------------------------------------------------------------------------------
    def job_insert_many(
        self, jobs: Sequence[NewJob], connection: Any = None, *, now: float | None = None
    ) -> list[JobRecord]:
        if not jobs:
            return []
        if connection is not None and not isinstance(connection, psycopg.Connection):
            raise TypeError(
                "connection must be a psycopg (3) Connection in a transaction"
                + (
                    "; for an AsyncConnection use `await app.enqueue_many_async(..., "
                    "connection=conn)` (or enqueue_async)"
                    if isinstance(connection, psycopg.AsyncConnection)
                    else f", not {type(connection).__name__}"
                )
            )
        batch = InsertBatch.of(jobs)
        self._register_queues(batch.queues)
        with self._tx(connection) as cur:
            cur.execute(self._q["job_insert_many"], {"rows": batch.rows, "now": now})
            first = cur.fetchone()
            inserted = (
                batch.ids
                if batch.all_inserted(cur.rowcount)
                else {r["id"] for r in [first, *cur.fetchall()] if r is not None}
            )
            existing: list[dict[str, Any]] = []
            if (args := batch.existing_args(inserted)) is not None:
                cur.execute(self._q["job_existing_many"], args)
                existing = cur.fetchall()
            self._notify(cur, set(batch.queues))
        return batch.records(inserted, first, existing)

    async def job_insert_many_async(
        self, jobs: Sequence[NewJob], connection: Any
    ) -> list[JobRecord]:
        if not isinstance(connection, psycopg.AsyncConnection):
            raise TypeError(
                "connection must be a psycopg (3) AsyncConnection in a transaction"
                + (
                    "; for a Connection use `app.enqueue_many(..., connection=conn)` (or enqueue)"
                    if isinstance(connection, psycopg.Connection)
                    else f", not {type(connection).__name__}"
                )
            )
        if not jobs:
            return []
        batch = InsertBatch.of(jobs)
        if set(batch.queues) - self._known_queues:
            await asyncio.to_thread(self._register_queues, batch.queues)
        async with connection.cursor(row_factory=dict_row) as cur:
            await cur.execute(self._q["job_insert_many"], {"rows": batch.rows, "now": None})
            first = await cur.fetchone()
            inserted = (
                batch.ids
                if batch.all_inserted(cur.rowcount)
                else {r["id"] for r in [first, *await cur.fetchall()] if r is not None}
            )
            existing: list[dict[str, Any]] = []
            if (args := batch.existing_args(inserted)) is not None:
                await cur.execute(self._q["job_existing_many"], args)
                existing = await cur.fetchall()
            await cur.execute(self._q["notify"], {"channel": self.channel, "queues": batch.queues})
        return batch.records(inserted, first, existing)

    def _register_queues(self, queues: Sequence[str]) -> None:
        """In our own short transaction: a new queue's row must not stay locked (blocking
        other enqueues to it) until a caller's transaction commits."""
        new = set(queues) - self._known_queues
        if new:
            with self._tx() as cur:
                cur.execute(self._q["queue_touch_many"], {"queues": sorted(new)})
            self._known_queues |= new  # queue rows are never deleted

    # claim and outcomes -------------------------------------------------------------------
    def job_claim(self, params: ClaimParams) -> list[JobRecord]:
        with self._tx(pool=self._engine) as cur:
            cur.execute(
                self._q["job_claim"],
                {
                    "queues": list(params.queues),
                    "limit": params.limit,
                    "now": params.now,
                    "worker_id": params.worker_id,
                    "lease_seconds": params.lease_seconds,
                },
            )
            rows = cur.fetchall()
        records = [record_from_row(r) for r in rows]
        records.sort(key=lambda r: (r.priority, r.run_at, r.id))
        return records

    def job_complete_many(self, outcomes: Sequence[Outcome]) -> list[JobChange]:
        if not outcomes:
            return []
        postponed = [o for o in outcomes if o.kind in _POSTPONED]
        # (outcome, only if a cancel was requested): a retry or snooze of a job whose cancel
        # arrived meanwhile is not postponed by the first statement and ends cancelled instead.
        moves = [(o, False) for o in outcomes if o.kind not in _POSTPONED]
        moves += [(o, True) for o in postponed]
        changes: list[JobChange] = []
        with self._tx(pool=self._engine) as cur:
            cur.execute(self._q["job_lock"], {"ids": [o.job_id for o in outcomes]})
            if postponed:
                cur.execute(self._q["job_postpone_many"], _postpone_args(postponed))
                changes += changes_from(cur.fetchall())
                queued = {c.queue for c in changes if c.to_state is JobState.QUEUED}
                if queued:
                    self._notify(cur, queued)
            if len(changes) < len(outcomes):
                cur.execute(self._q["job_finish_many"], _finish_args(moves))
                changes += changes_from(cur.fetchall())
        order = {o.job_id: i for i, o in enumerate(outcomes)}
        changes.sort(key=lambda c: order[c.id])
        return changes

    def job_heartbeat(self, params: HeartbeatParams) -> dict[str, bool]:
        if not params.job_ids:
            return {}
        args = {
            "ids": list(params.job_ids),
            "worker_id": params.worker_id,
            "lease_seconds": params.lease_seconds,
            "now": params.now,
        }
        with self._tx(pool=self._lease) as cur:
            cur.execute(self._q["job_lock"], args)
            cur.execute(self._q["job_heartbeat"], args)
            rows = cur.fetchall()
        return {r["id"]: r["cancel_requested"] for r in rows}

    def job_release_many(self, params: ReleaseParams) -> list[JobChange]:
        if not params.job_ids:
            return []
        args = {"ids": list(params.job_ids), "worker_id": params.worker_id, "now": params.now}
        with self._tx(pool=self._engine) as cur:
            cur.execute(self._q["job_lock"], args)
            cur.execute(self._q["job_release_cancelled"], args)
            changes = changes_from(cur.fetchall())
            cur.execute(self._q["job_release"], args)
            released = changes_from(cur.fetchall())
            if released:
                self._notify(cur, {c.queue for c in released})
        return changes + released

    def job_rescue_expired(self, now: float | None = None) -> RescueResult:
        with self._tx(pool=self._engine) as cur:
            cur.execute(self._q["job_lock_expired"], {"now": now})
            locked = cur.fetchall()
            if not locked:
                return RescueResult(requeued=0, failed=0, cancelled=0)
            args = {"now": locked[0]["now"]}  # the time the expired leases were found by
            cur.execute(self._q["job_rescue_finish"], args)
            finished = changes_from(cur.fetchall())
            cur.execute(self._q["job_rescue_requeue"], args)
            requeued = changes_from(cur.fetchall())
            if requeued:
                self._notify(cur, {c.queue for c in requeued})
        states = [c.to_state for c in finished]
        return RescueResult(
            requeued=len(requeued),
            failed=states.count(JobState.FAILED),
            cancelled=states.count(JobState.CANCELLED),
            changes=tuple(finished + requeued),
        )

    def job_set_progress(self, job_id: str, attempt: int, progress: bytes) -> bool:
        with self._tx(pool=self._engine) as cur:
            cur.execute(
                self._q["job_set_progress"],
                {"id": job_id, "attempt": attempt, "progress": progress.decode()},
            )
            return cur.rowcount > 0

    # waiting ------------------------------------------------------------------------------
    def job_next_due_in(self, queues: Sequence[str]) -> float | None:
        with self._tx(pool=self._engine) as cur:
            cur.execute(self._q["job_next_due_in"], {"queues": list(queues), "now": None})
            row = cur.fetchone()
        value = None if row is None else row["due_in"]
        return None if value is None else float(value)

    def jobs_wait(self, queues: Sequence[str], timeout: float) -> bool:
        return self._listener.wait(queues, timeout)


def _postpone_args(outcomes: Sequence[Outcome]) -> dict[str, Any]:
    snoozed = [o.kind == "snooze" for o in outcomes]
    return {
        "ids": [o.job_id for o in outcomes],
        "attempts": [o.attempt for o in outcomes],
        "workers": [o.worker_id for o in outcomes],
        "errors": [
            None if s else error_json(o.error) for o, s in zip(outcomes, snoozed, strict=True)
        ],
        "finished_ats": [o.finished_at for o in outcomes],
        "run_ats": [o.run_at for o in outcomes],
        "delays": [o.delay for o in outcomes],
        "snoozed": snoozed,
        "now": None,
    }


def _finish_args(moves: Sequence[tuple[Outcome, bool]]) -> dict[str, Any]:
    return {
        "ids": [o.job_id for o, _ in moves],
        "attempts": [o.attempt for o, _ in moves],
        "workers": [o.worker_id for o, _ in moves],
        "states": ["cancelled" if only else o.kind for o, only in moves],
        "results": [o.result.decode() if o.result else None for o, _ in moves],
        "errors": [None if o.kind == "snooze" else error_json(o.error) for o, _ in moves],
        "finished_ats": [o.finished_at for o, _ in moves],
        "only_if_cancel": [only for _, only in moves],
        "snoozed": [o.kind == "snooze" for o, _ in moves],
        "run_ats": [o.run_at for o, _ in moves],
        "delays": [o.delay for o, _ in moves],
        "now": None,
    }
