"""The embedded SQLite store: one file, WAL mode, every change one BEGIN IMMEDIATE.

Several worker processes on one machine can share the file: SQLite serialises writers,
claims are single UPDATE ... RETURNING statements, and idle workers are woken through
`WakeChannel` rather than by polling.
"""

from __future__ import annotations

import contextlib
import heapq
import os
import sqlite3
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

import orjson

from ...model.codec import decode
from ...model.errors import InvalidTransition, StoreError
from ...model.job import JobRecord, NewJob
from ..base import (
    Capabilities,
    ClaimParams,
    HeartbeatParams,
    JobListParams,
    Outcome,
    PruneParams,
    QueueStats,
    ReleaseParams,
    RescueResult,
    WorkerInfo,
)
from ..rows import (
    error_json,
    queue_stats_from,
    record_from_row,
    refusal,
    worker_info_json,
    workers_from_json,
)
from ..sqlfile import load_migrations, load_queries
from .wake import WakeChannel

_Q = load_queries(__package__ or "conveyor.backends.sqlite", "queries.sql")
_MIGRATIONS = load_migrations(__package__ or "conveyor.backends.sqlite", "migrations")
SCHEMA_VERSION = _MIGRATIONS[-1][0]

_OUTCOME_QUERY = {
    "completed": _Q["job_complete"],
    "retry": _Q["job_retry_later"],
    "failed": _Q["job_fail"],
    "cancelled": _Q["job_cancelled"],
}


def path_from_url(url: str) -> str:
    """`sqlite:///rel.db` is relative to the working directory, `sqlite:////abs.db` absolute."""
    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "sqlite" or parsed.netloc or not parsed.path or parsed.path == "/":
        raise StoreError(
            f"bad SQLite URL {url!r}; write sqlite:///relative/file.db or sqlite:////abs/file.db"
        )
    return urllib.parse.unquote(parsed.path[1:])


class SQLiteBackend:
    capabilities = Capabilities(
        wakes_other_processes=True, transactional_enqueue=False, local_file=True
    )

    def __init__(self, url: str) -> None:
        self.url = url
        self.path = path_from_url(url)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._wake = WakeChannel(self.path)
        self._opened = False

    # connection handling ----------------------------------------------------------------
    def open(self, migrate: bool = True) -> None:
        """An embedded file always migrates itself: `migrate` is accepted and ignored."""
        del migrate
        if self._opened:
            return
        self._refuse_foreign_file()
        directory = os.path.dirname(os.path.abspath(self.path))
        if not os.path.isdir(directory):
            raise StoreError(f"cannot create {self.path}: directory {directory} does not exist")
        conn = self._conn()
        with self._write(conn):
            self._migrate(conn)
        self._opened = True

    def _refuse_foreign_file(self) -> None:
        """Check an existing file read-only, so a foreign file is never modified.

        The check goes through SQLite, never a plain open(): closing a plain file descriptor
        drops every POSIX lock this process holds on the file, including those of its other
        SQLite connections, and another process could then delete the WAL under them.
        """
        if not os.path.exists(self.path) or os.path.getsize(self.path) == 0:
            return
        uri = "file:" + urllib.parse.quote(os.path.abspath(self.path)) + "?mode=ro"
        probe = sqlite3.connect(uri, uri=True)
        try:
            tables = {r[0] for r in probe.execute("SELECT name FROM sqlite_master")}
        except sqlite3.DatabaseError as exc:
            raise StoreError(
                f"{self.path} is not a SQLite database ({exc}); refusing to touch it. "
                "Point CONVEYOR_URL at a new file or an existing Conveyor store"
            ) from None
        finally:
            probe.close()
        if tables and "conveyor_meta" not in tables:
            sample = ", ".join(sorted(tables)[:5])
            raise StoreError(
                f"{self.path} is a SQLite database but not a Conveyor store "
                f"(it holds {sample}); refusing to touch it. Use another file"
            )

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30.0
            )
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextlib.contextmanager
    def _write(self, conn: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """One atomic write transaction: BEGIN IMMEDIATE takes the write lock up front."""
        conn = conn or self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:  # also after a failed COMMIT: never keep the lock
                conn.execute("ROLLBACK")
            raise

    def _migrate(self, conn: sqlite3.Connection) -> None:
        has_meta = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'conveyor_meta'"
        ).fetchone()
        current = 0
        if has_meta:
            row = conn.execute(_Q["meta_get"], ("schema_version",)).fetchone()
            current = int(row[0]) if row else 0
        if current > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {current}, newer than this Conveyor "
                f"understands ({SCHEMA_VERSION}); upgrade conveyor"
            )
        for version, _name, script in _MIGRATIONS:
            if version > current:
                for statement in script.split(";\n"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(_Q["meta_set"], ("schema_version", str(version)))

    def schema_version(self) -> int:
        row = self._conn().execute(_Q["meta_get"], ("schema_version",)).fetchone()
        return int(row[0]) if row else 0

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._connections.clear()
        self._local = threading.local()
        self._wake.close()
        self._opened = False

    # jobs ---------------------------------------------------------------------------------
    def job_insert_many(self, jobs: Sequence[NewJob], connection: Any = None) -> list[JobRecord]:
        if connection is not None:
            raise StoreError("the SQLite store cannot join another connection's transaction")
        if not jobs:
            return []
        params = [_insert_params(job) for job in jobs]
        queues = [(queue,) for queue in {job.queue for job in jobs}]
        with self._write() as conn:
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
                    self._insert_one(conn, job, p) for job, p in zip(jobs, params, strict=True)
                ]
        if all_new:
            records = [JobRecord.from_new(job) for job in jobs]
        self._wake.notify({job.queue for job in jobs})
        return records

    def _insert_one(
        self, conn: sqlite3.Connection, job: NewJob, params: dict[str, Any]
    ) -> JobRecord:
        if conn.execute(_Q["job_insert"], params).rowcount == 1:
            return JobRecord.from_new(job)
        # The id or the key is taken: hand back the existing job.
        row = conn.execute(_Q["job_get"], (job.id,)).fetchone()
        if row is None and job.key is not None:
            row = conn.execute(_Q["job_get_by_key"], (job.queue, job.key)).fetchone()
        if row is None:
            raise StoreError(f"job {job.id} was neither inserted nor found")
        return record_from_row(row, decode)

    def job_get(self, job_id: str) -> JobRecord | None:
        row = self._conn().execute(_Q["job_get"], (job_id,)).fetchone()
        return None if row is None else record_from_row(row, decode)

    def job_list(self, params: JobListParams) -> list[JobRecord]:
        rows = (
            self._conn()
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
        conn = self._conn()
        with self._write(conn):
            paused = {r[0] for r in conn.execute(_Q["queues_paused"])}
            offers: list[tuple[int, float, str]] = []
            for queue in params.queues:
                if queue not in paused:
                    offers.extend(
                        tuple(row)
                        for row in conn.execute(
                            _Q["job_claim_candidates"],
                            {"queue": queue, "limit": params.limit, "now": params.now},
                        )
                    )
            if not offers:
                return []
            chosen = [job_id for _, _, job_id in heapq.nsmallest(params.limit, offers)]
            rows = conn.execute(
                _Q["job_claim"],
                {
                    "ids": orjson.dumps(chosen).decode(),
                    "now": params.now,
                    "worker_id": params.worker_id,
                    "lease_expires_at": params.now + params.lease_seconds,
                },
            ).fetchall()
        records = [record_from_row(r, decode) for r in rows]
        records.sort(key=lambda r: (r.priority, r.run_at, r.id))
        return records

    def job_complete_many(self, outcomes: Sequence[Outcome]) -> None:
        if not outcomes:
            return
        woken: set[str] = set()
        with self._write() as conn:
            for o in outcomes:
                params: dict[str, Any] = {
                    "id": o.job_id,
                    "worker_id": o.worker_id,
                    "attempt": o.attempt,
                    "finished_at": o.finished_at,
                }
                if o.kind == "completed":
                    params["result"] = None if o.result is None else o.result.decode()
                elif o.kind in ("retry", "failed"):
                    params["error"] = error_json(o.error)
                    if o.kind == "retry":
                        params["run_at"] = o.finished_at if o.run_at is None else o.run_at
                        woken.add(o.queue)  # idle workers re-read the next due time
                conn.execute(_OUTCOME_QUERY[o.kind], params)
        if woken:
            self._wake.notify(woken)

    def job_heartbeat(self, params: HeartbeatParams) -> dict[str, bool]:
        if not params.job_ids:
            return {}
        with self._write() as conn:
            rows = conn.execute(
                _Q["job_heartbeat"],
                {
                    "ids": orjson.dumps(params.job_ids).decode(),
                    "worker_id": params.worker_id,
                    "lease_expires_at": params.now + params.lease_seconds,
                },
            ).fetchall()
        return {r["id"]: bool(r["cancel_requested"]) for r in rows}

    def job_release_many(self, params: ReleaseParams) -> None:
        if not params.job_ids:
            return
        with self._write() as conn:
            conn.execute(
                _Q["job_release"],
                {
                    "ids": orjson.dumps(params.job_ids).decode(),
                    "worker_id": params.worker_id,
                    "now": params.now,
                },
            )
        self._wake.notify(params.queues)

    def job_rescue_expired(self, now: float) -> RescueResult:
        with self._write() as conn:
            states = [r[0] for r in conn.execute(_Q["job_rescue_expired"], {"now": now})]
        result = RescueResult(
            requeued=states.count("queued"),
            failed=states.count("failed"),
            cancelled=states.count("cancelled"),
        )
        if result.requeued:
            self._wake.notify(self._queue_names())
        return result

    def job_cancel(self, job_id: str, now: float) -> JobRecord:
        with self._write() as conn:
            row = conn.execute(_Q["job_cancel_pending"], {"id": job_id, "now": now}).fetchone()
            if row is None:
                row = conn.execute(_Q["job_cancel_request"], {"id": job_id}).fetchone()
            if row is None:
                raise _refusal(conn, job_id, "only pending or active jobs can be cancelled")
        return record_from_row(row, decode)

    def job_retry(self, job_id: str, now: float) -> JobRecord:
        try:
            with self._write() as conn:
                row = conn.execute(_Q["job_retry_manual"], {"id": job_id, "now": now}).fetchone()
                if row is None:
                    raise _refusal(conn, job_id, "only failed or cancelled jobs can be retried")
        except sqlite3.IntegrityError:
            raise InvalidTransition(
                f"job {job_id} cannot be retried: another pending job holds its key"
            ) from None
        record = record_from_row(row, decode)
        self._wake.notify([record.queue])
        return record

    def job_set_progress(self, job_id: str, attempt: int, progress: bytes) -> bool:
        with self._write() as conn:
            cursor = conn.execute(
                _Q["job_set_progress"],
                {"id": job_id, "attempt": attempt, "progress": progress.decode()},
            )
        return cursor.rowcount > 0

    def job_prune(self, params: PruneParams) -> int:
        with self._write() as conn:
            cursor = conn.execute(
                _Q["job_prune"],
                {
                    "completed_before": params.completed_before,
                    "failed_before": params.failed_before,
                },
            )
        return cursor.rowcount

    def store_compact(self) -> None:
        """Nothing to do: SQLite reuses freed pages, and its WAL checkpoints itself."""

    def job_next_due_at(self, queues: Sequence[str]) -> float | None:
        row = (
            self._conn()
            .execute(_Q["job_next_due_at"], {"queues": orjson.dumps(list(queues)).decode()})
            .fetchone()
        )
        return None if row is None or row[0] is None else float(row[0])

    def jobs_wait(self, queues: Sequence[str], timeout: float) -> bool:
        return self._wake.wait(queues, timeout)

    # queues -------------------------------------------------------------------------------
    def queue_pause(self, name: str) -> None:
        with self._write() as conn:
            conn.execute(_Q["queue_set_paused"], {"name": name, "paused": 1})

    def queue_resume(self, name: str) -> None:
        with self._write() as conn:
            conn.execute(_Q["queue_set_paused"], {"name": name, "paused": 0})
        self._wake.notify([name])

    def _queue_names(self) -> list[str]:
        return [r[0] for r in self._conn().execute(_Q["queue_list"], {"name": None})]

    def queue_stats(self, now: float, name: str | None = None) -> list[QueueStats]:
        conn = self._conn()
        conn.execute("BEGIN")  # one consistent snapshot for all four reads
        try:
            queues = {
                r["name"]: bool(r["paused"]) for r in conn.execute(_Q["queue_list"], {"name": name})
            }
            counts: dict[str, dict[str, int]] = {}
            for r in conn.execute(_Q["queue_counts"], {"now": now, "name": name}):
                counts.setdefault(r["queue"], {})[r["st"]] = r["n"]
            oldest = {
                r["queue"]: r["oldest"]
                for r in conn.execute(_Q["queue_oldest_queued"], {"now": now, "name": name})
            }
            recent = {
                r["queue"]: r
                for r in conn.execute(
                    _Q["queue_recent"],
                    {"minute_ago": now - 60, "hour_ago": now - 3600, "name": name},
                )
            }
        finally:
            conn.execute("COMMIT")
        return queue_stats_from(queues, counts, oldest, recent)

    # workers ------------------------------------------------------------------------------
    def worker_beat(self, info: WorkerInfo, ttl: float) -> None:
        with self._write() as conn:
            conn.execute(
                _Q["worker_beat"],
                {
                    "id": info.id,
                    "info": worker_info_json(info),
                    "heartbeat_at": info.heartbeat_at,
                    "expires_at": info.heartbeat_at + ttl,
                },
            )

    def worker_list(self, now: float) -> list[WorkerInfo]:
        rows = self._conn().execute(_Q["worker_list"], {"now": now}).fetchall()
        return workers_from_json(r["info"] for r in rows)

    def worker_forget(self, worker_id: str) -> None:
        with self._write() as conn:
            conn.execute(_Q["worker_forget"], {"id": worker_id})

    def worker_prune(self, now: float) -> int:
        with self._write() as conn:
            cursor = conn.execute(_Q["worker_prune"], {"now": now})
        return cursor.rowcount


def _refusal(conn: sqlite3.Connection, job_id: str, rule: str) -> Exception:
    existing = conn.execute(_Q["job_get"], (job_id,)).fetchone()
    return refusal(job_id, None if existing is None else existing["state"], rule)


def _insert_params(job: NewJob) -> dict[str, Any]:
    return {
        "id": job.id,
        "task": job.task,
        "queue": job.queue,
        "state": job.state.value,
        "data": job.data.decode(),
        "priority": job.priority,
        "run_at": job.run_at,
        "max_attempts": job.max_attempts,
        "key": job.key,
        "timeout": job.timeout,
        "backoff": None if job.backoff is None else job.backoff.decode(),
        "enqueued_at": job.enqueued_at,
    }
