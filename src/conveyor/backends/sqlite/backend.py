"""The embedded SQLite store: one file, WAL mode, every change one BEGIN IMMEDIATE.

Several worker processes on one machine can share the file: SQLite serialises writers,
claims are single UPDATE ... RETURNING statements, and idle workers are woken through
`WakeChannel` rather than by polling. This module holds the job lifecycle (the hot path:
insert, claim, outcomes, heartbeats); admin, registry and leadership live in `admin.py`.
"""

from __future__ import annotations

import heapq
import sqlite3
import time
import urllib.parse
from collections.abc import Sequence
from typing import Any

import orjson

from ...model.codec import decode
from ...model.errors import StoreError
from ...model.job import JobRecord, NewJob
from ...model.states import JobState
from ..base import (
    Capabilities,
    ClaimParams,
    HeartbeatParams,
    JobChange,
    JobListParams,
    Outcome,
    ReleaseParams,
    RescueResult,
)
from ..fork import forget_connections_in_children
from ..rows import Row, error_json, record_from_row
from .admin import SQLiteAdmin
from .database import QUERIES as _Q
from .database import SCHEMA_VERSION, Database, clock, keep_inherited
from .wake import WakeChannel

__all__ = ["SCHEMA_VERSION", "SQLiteBackend", "path_from_url"]

_BACK_TO_PENDING = (JobState.QUEUED, JobState.SCHEDULED)
_STATES = {state.value: state for state in JobState}
"""A state by its stored name, without the Enum call's cost on the acknowledgement path."""


def path_from_url(url: str) -> str:
    """`sqlite:///rel.db` is relative to the working directory, `sqlite:////abs.db` absolute."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "sqlite" or parsed.netloc or not parsed.path or parsed.path == "/":
        raise StoreError(
            f"bad SQLite URL {url!r}; write sqlite:///relative/file.db or sqlite:////abs/file.db"
        )
    return urllib.parse.unquote(parsed.path[1:])


class SQLiteBackend(SQLiteAdmin):
    capabilities = Capabilities(
        wakes_other_processes=True, transactional_enqueue=False, local_file=True
    )

    def __init__(self, url: str, *, connect_timeout: float) -> None:
        """`connect_timeout` only ever lengthens SQLite's busy timeout (see BUSY_TIMEOUT):
        opening a local file does not wait, waiting for the write lock does."""
        self.url = url
        self.path = path_from_url(url)
        self._db = Database(url, self.path, connect_timeout)
        self._wake = WakeChannel(self.path)
        self._opened = False
        forget_connections_in_children(self)

    # connection handling ----------------------------------------------------------------
    def open(self, migrate: bool = True) -> None:
        """An embedded file always migrates itself: `migrate` is accepted and ignored."""
        del migrate
        if not self._opened:
            self._db.open()
            self._opened = True

    def schema_version(self) -> int:
        return self._db.schema_version()

    def close(self) -> None:
        self._db.close()
        self._wake.close()
        self._opened = False

    def _forget_after_fork(self) -> None:
        """A forked child reopens its own connections and wake sockets on first use."""
        self._db.forget_after_fork()
        keep_inherited(*self._wake.forget_after_fork())

    def store_time(self) -> float:
        """The host's clock: every process sharing an SQLite file runs on this one host."""
        return time.time()

    # jobs ---------------------------------------------------------------------------------
    def job_insert_many(
        self, jobs: Sequence[NewJob], connection: Any = None, *, now: float | None = None
    ) -> list[JobRecord]:
        if connection is not None:
            raise _no_transactional_enqueue(self.url)
        if not jobs:
            return []
        queues = [(queue,) for queue in {job.queue for job in jobs}]
        with self._db.write() as conn:
            t = clock(now)  # read under the write lock: the jobs' enqueued_at
            params = [_insert_params(job, t) for job in jobs]
            conn.executemany(_Q["queue_touch"], queues)
            before = conn.total_changes
            conn.executemany(_Q["job_insert"], params)
            all_new = conn.total_changes - before == len(jobs)
            if not all_new:
                # Some id or key was taken: redo the batch row by row to learn which.
                conn.execute("ROLLBACK")
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany(_Q["queue_touch"], queues)
                records = [
                    self._insert_one(conn, job, p, t) for job, p in zip(jobs, params, strict=True)
                ]
        if all_new:
            records = [JobRecord.from_new(job, t) for job in jobs]
        self._wake.notify({job.queue for job in jobs})
        return records

    async def job_insert_many_async(
        self, jobs: Sequence[NewJob], connection: Any
    ) -> list[JobRecord]:
        raise _no_transactional_enqueue(self.url)

    def _insert_one(
        self, conn: sqlite3.Connection, job: NewJob, params: dict[str, Any], now: float
    ) -> JobRecord:
        if conn.execute(_Q["job_insert"], params).rowcount == 1:
            return JobRecord.from_new(job, now)
        # The id or the key is taken: hand back the existing job.
        row = conn.execute(_Q["job_get"], (job.id,)).fetchone()
        if row is None and job.key is not None:
            row = conn.execute(_Q["job_get_by_key"], (job.queue, job.key)).fetchone()
        if row is None:
            raise StoreError(f"job {job.id} was neither inserted nor found")
        return record_from_row(row, decode)

    def job_get(self, job_id: str) -> JobRecord | None:
        row = self._db.conn().execute(_Q["job_get"], (job_id,)).fetchone()
        return None if row is None else record_from_row(row, decode)

    def job_list(self, params: JobListParams) -> list[JobRecord]:
        rows = (
            self._db.conn()
            .execute(
                _Q["job_list"],
                {
                    "queue": params.queue,
                    "state": params.state.value if params.state else None,
                    "task": params.task,
                    "before_id": params.before_id,
                    "limit": params.limit,
                },
            )
            .fetchall()
        )
        return [record_from_row(r, decode) for r in rows]

    def job_claim(self, params: ClaimParams) -> list[JobRecord]:
        """Priority holds across all the given queues: each queue offers its best `limit`
        due jobs (an index walk), the best `limit` of those are taken in one UPDATE."""
        conn = self._db.conn()
        with self._db.write(conn):
            now = clock(params.now)
            paused = {r[0] for r in conn.execute(_Q["queues_paused"])}
            offers: list[tuple[int, float, str]] = []
            for queue in params.queues:
                if queue not in paused:
                    offers.extend(
                        tuple(row)
                        for row in conn.execute(
                            _Q["job_claim_candidates"],
                            {"queue": queue, "limit": params.limit, "now": now},
                        )
                    )
            if not offers:
                return []
            chosen = [job_id for _, _, job_id in heapq.nsmallest(params.limit, offers)]
            rows = conn.execute(
                _Q["job_claim"],
                {
                    "ids": orjson.dumps(chosen).decode(),
                    "now": now,
                    "worker_id": params.worker_id,
                    "lease_expires_at": now + params.lease_seconds,
                },
            ).fetchall()
        records = [record_from_row(r, decode) for r in rows]
        records.sort(key=lambda r: (r.priority, r.run_at, r.id))
        return records

    def job_complete_many(self, outcomes: Sequence[Outcome]) -> list[JobChange]:
        """One UPDATE for the whole batch (see `job_complete_many` in queries.sql)."""
        if not outcomes:
            return []
        batch = orjson.dumps([_outcome_json(o) for o in outcomes]).decode()
        snoozed = [o.job_id for o in outcomes if o.kind == "snooze"]
        started: dict[str, float | None] = {}
        with self._db.write() as conn:
            now = time.time()
            if snoozed:
                ids = orjson.dumps(snoozed).decode()
                started = dict(conn.execute(_Q["job_started_at"], {"ids": ids}).fetchall())
            params = {"outcomes": batch, "now": now}
            rows = conn.execute(_Q["job_complete_many"], params).fetchall()
        given = {o.job_id: o.finished_at for o in outcomes if o.finished_at is not None}
        changes = [
            _change(r, given.get(r["id"], now), started.get(r["id"], r["started_at"])) for r in rows
        ]
        woken = {c.queue for c in changes if c.to_state in _BACK_TO_PENDING}
        if woken:
            self._wake.notify(woken)  # idle workers re-read the next due time
        return changes

    def job_heartbeat(self, params: HeartbeatParams) -> dict[str, bool]:
        if not params.job_ids:
            return {}
        with self._db.write() as conn:
            rows = conn.execute(
                _Q["job_heartbeat"],
                {
                    "ids": orjson.dumps(params.job_ids).decode(),
                    "worker_id": params.worker_id,
                    "lease_expires_at": clock(params.now) + params.lease_seconds,
                },
            ).fetchall()
        return {r["id"]: bool(r["cancel_requested"]) for r in rows}

    def job_release_many(self, params: ReleaseParams) -> list[JobChange]:
        if not params.job_ids:
            return []
        with self._db.write() as conn:
            now = clock(params.now)
            rows = conn.execute(
                _Q["job_release"],
                {
                    "ids": orjson.dumps(params.job_ids).decode(),
                    "worker_id": params.worker_id,
                    "now": now,
                },
            ).fetchall()
        self._wake.notify(params.queues)
        return [_change(r, now) for r in rows]

    def job_rescue_expired(self, now: float | None = None) -> RescueResult:
        with self._db.write() as conn:
            at = clock(now)
            rows = conn.execute(_Q["job_rescue_expired"], {"now": at}).fetchall()
        changes = tuple(_change(r, at, r["started_at"]) for r in rows)
        states = [c.to_state for c in changes]
        result = RescueResult(
            requeued=states.count(JobState.QUEUED),
            failed=states.count(JobState.FAILED),
            cancelled=states.count(JobState.CANCELLED),
            changes=changes,
        )
        woken = {c.queue for c in changes if c.to_state is JobState.QUEUED}
        if woken:
            self._wake.notify(woken)
        return result

    def job_set_progress(self, job_id: str, attempt: int, progress: bytes) -> bool:
        with self._db.write() as conn:
            cursor = conn.execute(
                _Q["job_set_progress"],
                {"id": job_id, "attempt": attempt, "progress": progress.decode()},
            )
        return cursor.rowcount > 0

    def store_compact(self) -> None:
        """Nothing to do: SQLite reuses freed pages, and its WAL checkpoints itself."""

    def job_next_due_in(self, queues: Sequence[str]) -> float | None:
        row = (
            self._db.conn()
            .execute(
                _Q["job_next_due_in"],
                {"queues": orjson.dumps(list(queues)).decode(), "now": time.time()},
            )
            .fetchone()
        )
        return None if row is None or row[0] is None else float(row[0])

    def jobs_wait(self, queues: Sequence[str], timeout: float) -> bool:
        return self._wake.wait(queues, timeout)


def _change(row: Row, at: float, started_at: float | None = None) -> JobChange:
    """The change an outcome, release or rescue made to an active job (`row`: the job's
    id, queue, task, state, attempt and run_at after it)."""
    to_state = _STATES[row["state"]]
    pending = to_state in _BACK_TO_PENDING
    return JobChange(
        id=row["id"],
        queue=row["queue"],
        task=row["task"],
        from_state=JobState.ACTIVE,
        to_state=to_state,
        attempt=row["attempt"],
        at=at,
        run_at=row["run_at"] if pending else None,
        started_at=started_at,
        finished_at=None if pending else at,
    )


def _outcome_json(o: Outcome) -> tuple[Any, ...]:
    """One outcome as a row of the `:outcomes` array of `job_complete_many`."""
    return (
        o.job_id,
        o.worker_id,
        o.attempt,
        o.kind,
        o.finished_at,
        o.run_at,
        o.delay or 0.0,
        None if o.result is None else o.result.decode(),
        error_json(o.error) if o.kind in ("retry", "failed") else None,
    )


def _no_transactional_enqueue(url: str) -> StoreError:
    return StoreError(
        f"the store at {url} cannot enqueue inside your transaction; use PostgreSQL, "
        "or enqueue after your commit"
    )


def _insert_params(job: NewJob, now: float) -> dict[str, Any]:
    """The row of `job` inserted at the store's time `now` (its due time is the store's)."""
    run_at, state = job.due(now)
    return {
        "id": job.id,
        "task": job.task,
        "queue": job.queue,
        "state": state.value,
        "data": job.data.decode(),
        "priority": job.priority,
        "run_at": run_at,
        "max_attempts": job.max_attempts,
        "key": job.key,
        "timeout": job.timeout,
        "backoff": None if job.backoff is None else job.backoff.decode(),
        "enqueued_at": now,
    }
