"""Reads and operator actions: job lookups, cancel, manual retry, pruning, compaction, queues.

None of these is on the claim path; they use the durable pool (compaction its own
connection), so a slow prune or VACUUM never holds a connection the engine needs.
"""

from __future__ import annotations

from typing import Any

import psycopg

from ...model.errors import InvalidTransition
from ...model.job import JobRecord
from ...model.states import JobState
from ..base import JobChange, JobListParams, PruneParams, QueueStats
from ..rows import queue_stats_from, record_from_row
from .core import PostgresCore


def admin_change(row: dict[str, Any]) -> JobChange:
    """The JobChange of a single-job admin call, from the job's row after the call plus its
    `from_state` and `at` columns."""
    return JobChange.of_admin_call(record_from_row(row), JobState(row["from_state"]), row["at"])


class AdminStatements(PostgresCore):
    def job_get(self, job_id: str) -> JobRecord | None:
        with self._tx() as cur:
            cur.execute(self._q["job_get"], {"id": job_id})
            row = cur.fetchone()
        return None if row is None else record_from_row(row)

    def job_list(self, params: JobListParams) -> list[JobRecord]:
        with self._tx() as cur:
            cur.execute(
                self._q["job_list"],
                {
                    "queue": params.queue,
                    "state": params.state.value if params.state else None,
                    "task": params.task,
                    "before_id": params.before_id,
                    "limit": params.limit,
                },
            )
            rows = cur.fetchall()
        return [record_from_row(r) for r in rows]

    def job_cancel(self, job_id: str, now: float | None = None) -> JobChange:
        with self._tx() as cur:
            cur.execute(self._q["job_cancel_pending"], {"id": job_id, "now": now})
            row = cur.fetchone()
            if row is None:
                cur.execute(self._q["job_cancel_request"], {"id": job_id, "now": now})
                row = cur.fetchone()
            if row is None:
                raise self._refusal(cur, job_id, "only pending or active jobs can be cancelled")
        return admin_change(row)

    def job_retry(self, job_id: str, now: float | None = None) -> JobChange:
        try:
            with self._tx() as cur:
                cur.execute(self._q["job_retry_manual"], {"id": job_id, "now": now})
                row = cur.fetchone()
                if row is None:
                    raise self._refusal(cur, job_id, "only failed or cancelled jobs can be retried")
                self._notify(cur, {row["queue"]})
        except psycopg.errors.UniqueViolation:
            raise InvalidTransition(
                f"job {job_id} cannot be retried: another pending job holds its key"
            ) from None
        return admin_change(row)

    def job_prune(self, params: PruneParams) -> int:
        with self._tx() as cur:
            cur.execute(
                self._q["job_prune"],
                {
                    "keep_completed": params.keep_completed,
                    "keep_failed": params.keep_failed,
                    "limit": params.limit,
                    "now": params.now,
                },
            )
            return cur.rowcount

    def store_compact(self) -> None:
        """VACUUM the hot table, which churns two dead row versions per job. Autovacuum
        may be off or slow (its nap is a minute); one worker at a time does it, the others
        skip while the advisory lock is held (a session lock: it ends with the connection)."""
        lock = {"lock": f"conveyor:compact:{self.schema}"}
        with self._durable.connect() as conn:
            got = conn.execute(self._q["compact_try_lock"], lock).fetchone()
            if got is None or not got["pg_try_advisory_lock"]:
                return
            conn.execute(self._q["compact_jobs"])

    # queues -------------------------------------------------------------------------------
    def queue_pause(self, name: str) -> None:
        with self._tx() as cur:
            cur.execute(self._q["queue_set_paused"], {"name": name, "paused": True})

    def queue_resume(self, name: str) -> None:
        with self._tx() as cur:
            cur.execute(self._q["queue_set_paused"], {"name": name, "paused": False})
            self._notify(cur, {name})

    def queue_stats(self, now: float | None = None, name: str | None = None) -> list[QueueStats]:
        args = {"now": now, "name": name}
        with self._tx() as cur:
            cur.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cur.execute(self._q["queue_list"], args)
            queues = {r["name"]: r["paused"] for r in cur.fetchall()}
            cur.execute(self._q["queue_counts"], args)
            counts: dict[str, dict[str, int]] = {}
            for row in cur.fetchall():
                per_queue = counts.setdefault(row["queue"], {})
                per_queue[row["st"]] = per_queue.get(row["st"], 0) + row["n"]
            cur.execute(self._q["queue_oldest_queued"], args)
            oldest = {r["queue"]: r["oldest"] for r in cur.fetchall()}
            cur.execute(self._q["queue_recent"], args)
            recent = {row["queue"]: row for row in cur.fetchall()}
        return queue_stats_from(queues, counts, oldest, recent)
