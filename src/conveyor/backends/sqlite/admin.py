"""The SQLite store off the hot path: admin changes (cancel, retry, prune), queues, the
worker registry and leader leases. A base of `SQLiteBackend`, which provides the file and
the wake channel."""

from __future__ import annotations

import dataclasses
import sqlite3

from ...model.codec import decode
from ...model.errors import InvalidTransition
from ...model.states import PENDING_STATES, JobState
from ..base import JobChange, PruneParams, QueueStats, WorkerInfo
from ..rows import queue_stats_from, record_from_row, refusal, worker_info_json, workers_from_json
from .database import QUERIES as _Q
from .database import Database, clock
from .wake import WakeChannel


class SQLiteAdmin:
    _db: Database
    _wake: WakeChannel

    # admin changes ------------------------------------------------------------------------
    def job_cancel(self, job_id: str, now: float | None = None) -> JobChange:
        with self._db.write() as conn:
            at = clock(now)
            from_state = _state(conn, job_id)
            if from_state in PENDING_STATES:
                row = conn.execute(_Q["job_cancel_pending"], {"id": job_id, "now": at}).fetchone()
            elif from_state is JobState.ACTIVE:
                row = conn.execute(_Q["job_cancel_request"], {"id": job_id}).fetchone()
            else:
                raise refusal(job_id, from_state, "only pending or active jobs can be cancelled")
        record = record_from_row(row, decode)
        return JobChange.of_admin_call(record, from_state, at)

    def job_retry(self, job_id: str, now: float | None = None) -> JobChange:
        try:
            with self._db.write() as conn:
                at = clock(now)
                from_state = _state(conn, job_id)
                if from_state not in (JobState.FAILED, JobState.CANCELLED):
                    rule = "only failed or cancelled jobs can be retried"
                    raise refusal(job_id, from_state, rule)
                row = conn.execute(_Q["job_retry_manual"], {"id": job_id, "now": at}).fetchone()
        except sqlite3.IntegrityError:
            raise InvalidTransition(
                f"job {job_id} cannot be retried: another pending job holds its key"
            ) from None
        record = record_from_row(row, decode)
        self._wake.notify([record.queue])
        return JobChange.of_admin_call(record, from_state, at)

    def job_prune(self, params: PruneParams) -> int:
        with self._db.write() as conn:
            now = clock(params.now)
            cursor = conn.execute(
                _Q["job_prune"],
                {
                    "completed_before": now - params.keep_completed,
                    "failed_before": now - params.keep_failed,
                    "limit": params.limit,
                },
            )
        return cursor.rowcount

    # queues -------------------------------------------------------------------------------
    def queue_pause(self, name: str) -> None:
        with self._db.write() as conn:
            conn.execute(_Q["queue_set_paused"], {"name": name, "paused": 1})

    def queue_resume(self, name: str) -> None:
        with self._db.write() as conn:
            conn.execute(_Q["queue_set_paused"], {"name": name, "paused": 0})
        self._wake.notify([name])

    def queue_stats(self, now: float | None = None, name: str | None = None) -> list[QueueStats]:
        with self._db.snapshot() as conn:  # one consistent state for all four reads
            at = clock(now)
            queues = {
                r["name"]: bool(r["paused"]) for r in conn.execute(_Q["queue_list"], {"name": name})
            }
            counts: dict[str, dict[str, int]] = {}
            for r in conn.execute(_Q["queue_counts"], {"now": at, "name": name}):
                counts.setdefault(r["queue"], {})[r["st"]] = r["n"]
            oldest = {
                r["queue"]: r["oldest"]
                for r in conn.execute(_Q["queue_oldest_queued"], {"now": at, "name": name})
            }
            recent = {
                r["queue"]: r
                for r in conn.execute(
                    _Q["queue_recent"],
                    {"minute_ago": at - 60, "hour_ago": at - 3600, "name": name},
                )
            }
        return queue_stats_from(queues, counts, oldest, recent)

    # workers ------------------------------------------------------------------------------
    def worker_beat(self, info: WorkerInfo, ttl: float) -> None:
        with self._db.write() as conn:
            now = clock(None)
            conn.execute(
                _Q["worker_beat"],
                {
                    "id": info.id,
                    "info": worker_info_json(dataclasses.replace(info, heartbeat_at=now)),
                    "heartbeat_at": now,
                    "expires_at": now + ttl,
                },
            )

    def worker_list(self, now: float | None = None) -> list[WorkerInfo]:
        rows = self._db.conn().execute(_Q["worker_list"], {"now": clock(now)}).fetchall()
        return workers_from_json(r["info"] for r in rows)

    def worker_forget(self, worker_id: str) -> None:
        with self._db.write() as conn:
            conn.execute(_Q["worker_forget"], {"id": worker_id})

    def worker_prune(self, now: float | None = None) -> int:
        with self._db.write() as conn:
            cursor = conn.execute(_Q["worker_prune"], {"now": clock(now)})
        return cursor.rowcount

    # leadership ---------------------------------------------------------------------------
    def leader_elect(self, name: str, holder: str, ttl: float) -> bool:
        with self._db.write() as conn:
            now = clock(None)
            row = conn.execute(
                _Q["leader_elect"],
                {"name": name, "holder": holder, "now": now, "expires_at": now + ttl},
            ).fetchone()
        return row is not None

    def leader_resign(self, name: str, holder: str) -> None:
        with self._db.write() as conn:
            conn.execute(_Q["leader_resign"], {"name": name, "holder": holder})

    def leader_get(self, name: str) -> str | None:
        row = (
            self._db.conn().execute(_Q["leader_get"], {"name": name, "now": clock(None)}).fetchone()
        )
        return None if row is None else str(row[0])


def _state(conn: sqlite3.Connection, job_id: str) -> JobState:
    """The job's state inside the caller's write transaction; JobNotFound if there is none."""
    row = conn.execute(_Q["job_state"], {"id": job_id}).fetchone()
    if row is None:
        raise refusal(job_id, None, "")
    return JobState(row[0])
