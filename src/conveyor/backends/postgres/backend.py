"""The PostgreSQL store: many worker machines share one database.

Claims take a batch in one statement with `FOR UPDATE SKIP LOCKED`; finished jobs move from
the hot `jobs` table to `jobs_done` in the same statement that finishes them, so the claim
path never walks history. Idle workers are woken by LISTEN/NOTIFY (`listener.py`).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import orjson
import psycopg
import psycopg_pool
from psycopg import sql
from psycopg.rows import dict_row
from psycopg.types.json import set_json_loads
from psycopg_pool import ConnectionPool

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
from .listener import Listener

_PACKAGE = __package__ or "conveyor.backends.postgres"
_RAW_QUERIES = load_queries(_PACKAGE, "queries.sql")
_MIGRATIONS = load_migrations(_PACKAGE, "migrations")
SCHEMA_VERSION = _MIGRATIONS[-1][0]
DEFAULT_SCHEMA = "conveyor"


def split_url(url: str) -> tuple[str, str]:
    """(conninfo URL without our own `schema` parameter, schema name)."""
    parsed = urllib.parse.urlsplit(url)
    if parsed.scheme not in ("postgres", "postgresql") or (not parsed.netloc and not parsed.path):
        raise StoreError(f"bad PostgreSQL URL {url!r}; write postgresql://user@host:5432/dbname")
    params = urllib.parse.parse_qsl(parsed.query, keep_blank_values=True)
    schema = DEFAULT_SCHEMA
    kept = []
    for name, value in params:
        if name == "schema":
            schema = value
        else:
            kept.append((name, value))
    if not schema:
        raise StoreError("the schema parameter of the PostgreSQL URL is empty")
    query = urllib.parse.urlencode(kept)
    return urllib.parse.urlunsplit(parsed._replace(query=query)), schema


def _configure(conn: psycopg.Connection[Any]) -> None:
    set_json_loads(orjson.loads, conn)


class PostgresBackend:
    capabilities = Capabilities(
        wakes_other_processes=True, transactional_enqueue=True, local_file=False
    )

    def __init__(self, url: str, *, pool_size: int = 4) -> None:
        self.url = url
        self.conninfo, self.schema = split_url(url)
        self.channel = f"conveyor.{self.schema}"
        identifier = sql.Identifier(self.schema)
        self._q = {
            name: sql.SQL(text).format(schema=identifier) for name, text in _RAW_QUERIES.items()
        }
        self._pool_size = pool_size
        self._pool: ConnectionPool | None = None
        self._fast_pool: ConnectionPool | None = None
        self._known_queues: set[str] = set()
        """Queues this process has seen registered, so enqueue skips that round trip."""
        self._listener = Listener(self.conninfo, self.channel)

    # connections --------------------------------------------------------------------------
    def open(self, migrate: bool = True) -> None:
        if self._pool is not None:
            return
        try:  # one direct attempt first: a clear error now, not a pool retrying for 10 s
            psycopg.connect(self.conninfo, connect_timeout=5).close()
        except psycopg.Error as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise StoreError(
                f"cannot connect to PostgreSQL at {self._safe_url()}: {reason}"
            ) from None
        self._pool = self._make_pool("durable", {}, check=True)
        # Claims, acknowledgements, heartbeats and progress commit without waiting for the
        # WAL flush: a database crash can undo the last fraction of a second of them, which
        # at-least-once delivery absorbs (the job runs again). Enqueues stay durable.
        self._fast_pool = self._make_pool("fast", {"options": "-c synchronous_commit=off"})
        try:
            self._migrate(apply=migrate)
        except BaseException:
            self.close()
            raise

    def _make_pool(self, role: str, extra: dict[str, Any], check: bool = False) -> ConnectionPool:
        """`check`: test each connection as it is handed out (one round trip), so that an
        enqueue after a server restart succeeds; engine traffic retries instead."""
        pool: ConnectionPool = ConnectionPool(
            self.conninfo,
            min_size=1,
            max_size=self._pool_size,
            kwargs={"row_factory": dict_row, **extra},
            configure=_configure,
            check=ConnectionPool.check_connection if check else None,
            open=False,
            name=f"conveyor-{self.schema}-{role}",
        )
        try:
            pool.open(wait=True, timeout=10)
        except psycopg_pool.PoolTimeout as exc:
            pool.close()
            self.close()
            raise StoreError(f"cannot connect to PostgreSQL at {self._safe_url()}: {exc}") from None
        return pool

    def _safe_url(self) -> str:
        parsed = urllib.parse.urlsplit(self.conninfo)
        host = parsed.hostname or "localhost"
        return f"{host}:{parsed.port or 5432}{parsed.path}"

    @contextmanager
    def _tx(
        self, connection: Any = None, *, fast: bool = False
    ) -> Iterator[psycopg.Cursor[dict[str, Any]]]:
        """One transaction on a pooled connection, or a cursor inside the caller's own.

        `fast`: on a connection whose commits do not wait for the WAL flush (engine traffic).
        """
        if connection is not None:
            with connection.cursor(row_factory=dict_row) as cur:
                yield cur
            return
        pool = self._fast_pool if fast else self._pool
        if pool is None:
            raise StoreError("the PostgreSQL store is not open")
        with (
            pool.connection() as conn,
            conn.transaction(),
            conn.cursor(row_factory=dict_row) as cur,
        ):
            yield cur

    def _migrate(self, *, apply: bool) -> None:
        with self._tx() as cur:
            if apply:
                cur.execute(self._q["migrate_lock"], {"lock": f"conveyor:migrate:{self.schema}"})
                cur.execute(self._q["schema_create"])
                cur.execute(self._q["meta_create"])
            current = self._schema_version(cur)
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"schema {self.schema!r} has version {current}, newer than this Conveyor "
                    f"understands ({SCHEMA_VERSION}); upgrade conveyor"
                )
            if current < SCHEMA_VERSION and not apply:
                raise StoreError(
                    f"schema {self.schema!r} is at version {current}, this Conveyor needs "
                    f"{SCHEMA_VERSION}; run `conveyor migrate`"
                )
            for version, _name, script in _MIGRATIONS:
                if version > current:
                    for statement in script.split(";\n"):
                        if statement.strip() and not _only_comments(statement):
                            cur.execute(
                                sql.SQL(statement).format(schema=sql.Identifier(self.schema))
                            )
                    cur.execute(
                        self._q["meta_set"], {"key": "schema_version", "value": str(version)}
                    )

    def _schema_version(self, cur: psycopg.Cursor[dict[str, Any]]) -> int:
        cur.execute(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %s "
            "AND table_name = 'meta'",
            (self.schema,),
        )
        if cur.fetchone() is None:
            return 0
        cur.execute(self._q["meta_get"], {"key": "schema_version"})
        row = cur.fetchone()
        return int(row["value"]) if row else 0

    def schema_version(self) -> int:
        with self._tx() as cur:
            return self._schema_version(cur)

    def close(self) -> None:
        self._listener.close()
        for pool in (self._pool, self._fast_pool):
            if pool is not None:
                pool.close()
        self._pool = self._fast_pool = None

    # jobs ---------------------------------------------------------------------------------
    def job_insert_many(self, jobs: Sequence[NewJob], connection: Any = None) -> list[JobRecord]:
        if not jobs:
            return []
        if connection is not None and not isinstance(connection, psycopg.Connection):
            raise TypeError("connection must be a psycopg (3) Connection in a transaction")
        rows = orjson.dumps(
            [
                {
                    "id": j.id,
                    "task": j.task,
                    "queue": j.queue,
                    "state": j.state.value,
                    "data": orjson.Fragment(j.data),
                    "priority": j.priority,
                    "run_at": j.run_at,
                    "max_attempts": j.max_attempts,
                    "key": j.key,
                    "timeout": j.timeout,
                    "backoff": None if j.backoff is None else orjson.Fragment(j.backoff),
                    "enqueued_at": j.enqueued_at,
                    "ord": i,
                    "custom": j.custom_id,
                }
                for i, j in enumerate(jobs)
            ]
        ).decode()
        new_queues = {job.queue for job in jobs} - self._known_queues
        if new_queues:
            # Registered in our own short transaction: a new queue's row must not stay
            # locked (blocking other enqueues to it) until a caller's transaction commits.
            with self._tx() as cur:
                cur.execute(self._q["queue_touch_many"], {"queues": sorted(new_queues)})
            self._known_queues |= new_queues  # queue rows are never deleted
        with self._tx(connection) as cur:
            cur.execute(self._q["job_insert_many"], {"rows": rows})
            distinct = {job.id for job in jobs}
            if cur.rowcount == len(distinct):
                inserted = distinct  # all new: no need to read the ids back
            else:
                inserted = {row["id"] for row in cur.fetchall()}
            by_id: dict[str, JobRecord] = {}
            for job in jobs:
                if job.id not in by_id:  # a repeat of an id in the batch is the same job
                    by_id[job.id] = (
                        JobRecord.from_new(job) if job.id in inserted else self._existing(cur, job)
                    )
            records = [by_id[job.id] for job in jobs]
            self._notify(cur, {job.queue for job in jobs})
        return records

    def _existing(self, cur: psycopg.Cursor[dict[str, Any]], job: NewJob) -> JobRecord:
        """The job that took this one's id or key."""
        cur.execute(self._q["job_get"], {"id": job.id})
        row = cur.fetchone()
        if row is None and job.key is not None:
            cur.execute(self._q["job_get_by_key"], {"queue": job.queue, "key": job.key})
            row = cur.fetchone()
        if row is None:
            raise StoreError(f"job {job.id} was neither inserted nor found")
        return record_from_row(row)

    def _notify(self, cur: psycopg.Cursor[dict[str, Any]], queues: set[str]) -> None:
        """Delivered at commit, so a worker never wakes for a job it cannot see yet."""
        cur.execute(self._q["notify"], {"channel": self.channel, "queues": sorted(queues)})

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

    def job_claim(self, params: ClaimParams) -> list[JobRecord]:
        with self._tx(fast=True) as cur:
            cur.execute(
                self._q["job_claim"],
                {
                    "queues": list(params.queues),
                    "limit": params.limit,
                    "now": params.now,
                    "worker_id": params.worker_id,
                    "lease_expires_at": params.now + params.lease_seconds,
                },
            )
            rows = cur.fetchall()
        records = [record_from_row(r) for r in rows]
        records.sort(key=lambda r: (r.priority, r.run_at, r.id))
        return records

    def job_complete_many(self, outcomes: Sequence[Outcome]) -> None:
        retries = [o for o in outcomes if o.kind == "retry"]
        # (outcome, only if a cancel was requested): a retry of a job whose cancel arrived
        # meanwhile is not rescheduled by the first statement and ends cancelled instead.
        moves = [(o, False) for o in outcomes if o.kind != "retry"]
        moves += [(replace(o, kind="cancelled"), True) for o in retries]
        with self._tx(fast=True) as cur:
            cur.execute(self._q["job_lock"], {"ids": [o.job_id for o in outcomes]})
            if retries:
                cur.execute(
                    self._q["job_retry_later_many"],
                    {
                        "ids": [o.job_id for o in retries],
                        "attempts": [o.attempt for o in retries],
                        "workers": [o.worker_id for o in retries],
                        "errors": [error_json(o.error) for o in retries],
                        "run_ats": [o.run_at or o.finished_at for o in retries],
                        "finished_ats": [o.finished_at for o in retries],
                    },
                )
                self._notify(cur, {o.queue for o in retries})
            if moves:
                cur.execute(
                    self._q["job_finish_many"],
                    {
                        "ids": [o.job_id for o, _ in moves],
                        "attempts": [o.attempt for o, _ in moves],
                        "workers": [o.worker_id for o, _ in moves],
                        "states": [o.kind for o, _ in moves],
                        "results": [o.result.decode() if o.result else None for o, _ in moves],
                        "errors": [error_json(o.error) for o, _ in moves],
                        "finished_ats": [o.finished_at for o, _ in moves],
                        "only_if_cancel": [only for _, only in moves],
                    },
                )

    def job_heartbeat(self, params: HeartbeatParams) -> dict[str, bool]:
        if not params.job_ids:
            return {}
        with self._tx(fast=True) as cur:
            cur.execute(self._q["job_lock"], {"ids": list(params.job_ids)})
            cur.execute(
                self._q["job_heartbeat"],
                {
                    "ids": list(params.job_ids),
                    "worker_id": params.worker_id,
                    "lease_expires_at": params.now + params.lease_seconds,
                },
            )
            rows = cur.fetchall()
        return {r["id"]: r["cancel_requested"] for r in rows}

    def job_release_many(self, params: ReleaseParams) -> None:
        if not params.job_ids:
            return
        args = {"ids": list(params.job_ids), "worker_id": params.worker_id, "now": params.now}
        with self._tx(fast=True) as cur:
            cur.execute(self._q["job_lock"], args)
            cur.execute(self._q["job_release_cancelled"], args)
            cur.execute(self._q["job_release"], args)
            self._notify(cur, set(params.queues))

    def job_rescue_expired(self, now: float) -> RescueResult:
        with self._tx(fast=True) as cur:
            cur.execute(self._q["job_lock_expired"], {"now": now})
            cur.execute(self._q["job_rescue_finish"], {"now": now})
            finished = [r["state"] for r in cur.fetchall()]
            cur.execute(self._q["job_rescue_requeue"], {"now": now})
            requeued = [r["queue"] for r in cur.fetchall()]
            if requeued:
                self._notify(cur, set(requeued))
        return RescueResult(
            requeued=len(requeued),
            failed=finished.count("failed"),
            cancelled=finished.count("cancelled"),
        )

    def job_cancel(self, job_id: str, now: float) -> JobRecord:
        with self._tx() as cur:
            cur.execute(self._q["job_cancel_pending"], {"id": job_id, "now": now})
            row = cur.fetchone()
            if row is None:
                cur.execute(self._q["job_cancel_request"], {"id": job_id})
                row = cur.fetchone()
            if row is None:
                raise self._refusal(cur, job_id, "only pending or active jobs can be cancelled")
        return record_from_row(row)

    def job_retry(self, job_id: str, now: float) -> JobRecord:
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
        return record_from_row(row)

    def _refusal(self, cur: psycopg.Cursor[dict[str, Any]], job_id: str, rule: str) -> Exception:
        cur.execute(self._q["job_get"], {"id": job_id})
        existing = cur.fetchone()
        return refusal(job_id, None if existing is None else existing["state"], rule)

    def job_set_progress(self, job_id: str, attempt: int, progress: bytes) -> bool:
        with self._tx(fast=True) as cur:
            cur.execute(
                self._q["job_set_progress"],
                {"id": job_id, "attempt": attempt, "progress": progress.decode()},
            )
            return cur.rowcount > 0

    def job_prune(self, params: PruneParams) -> int:
        with self._tx() as cur:
            cur.execute(
                self._q["job_prune"],
                {
                    "completed_before": params.completed_before,
                    "failed_before": params.failed_before,
                },
            )
            return cur.rowcount

    def store_compact(self) -> None:
        """VACUUM the hot table, which churns two dead row versions per job. Autovacuum
        may be off or slow (its nap is a minute); one worker at a time does it, the others
        skip while the advisory lock is held."""
        lock = {"lock": f"conveyor:compact:{self.schema}"}
        with psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5) as conn:
            got = conn.execute(self._q["compact_try_lock"], lock).fetchone()
            if got is None or not got[0]:
                return
            conn.execute(self._q["compact_jobs"])

    def job_next_due_at(self, queues: Sequence[str]) -> float | None:
        with self._tx(fast=True) as cur:
            cur.execute(self._q["job_next_due_at"], {"queues": list(queues)})
            row = cur.fetchone()
        value = None if row is None else row["min"]
        return None if value is None else float(value)

    def jobs_wait(self, queues: Sequence[str], timeout: float) -> bool:
        return self._listener.wait(queues, timeout)

    # queues -------------------------------------------------------------------------------
    def queue_pause(self, name: str) -> None:
        with self._tx() as cur:
            cur.execute(self._q["queue_set_paused"], {"name": name, "paused": True})

    def queue_resume(self, name: str) -> None:
        with self._tx() as cur:
            cur.execute(self._q["queue_set_paused"], {"name": name, "paused": False})
            self._notify(cur, {name})

    def queue_stats(self, now: float, name: str | None = None) -> list[QueueStats]:
        args = {"now": now, "name": name, "minute_ago": now - 60, "hour_ago": now - 3600}
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

    # workers ------------------------------------------------------------------------------
    def worker_beat(self, info: WorkerInfo, ttl: float) -> None:
        with self._tx() as cur:
            cur.execute(
                self._q["worker_beat"],
                {
                    "id": info.id,
                    "info": worker_info_json(info),
                    "heartbeat_at": info.heartbeat_at,
                    "expires_at": info.heartbeat_at + ttl,
                },
            )

    def worker_list(self, now: float) -> list[WorkerInfo]:
        with self._tx() as cur:
            cur.execute(self._q["worker_list"], {"now": now})
            rows = cur.fetchall()
        return workers_from_json(r["info"] for r in rows)

    def worker_forget(self, worker_id: str) -> None:
        with self._tx() as cur:
            cur.execute(self._q["worker_forget"], {"id": worker_id})

    def worker_prune(self, now: float) -> int:
        with self._tx() as cur:
            cur.execute(self._q["worker_prune"], {"now": now})
            return cur.rowcount


def _only_comments(statement: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in statement.splitlines())
