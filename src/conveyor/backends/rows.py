"""Turning a store's rows into model objects: one definition for every store.

Each store reads the same columns (ARCHITECTURE section 1); they differ only in whether JSON
columns arrive as text (SQLite, Redis) or already parsed (PostgreSQL), so callers pass `load`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

import orjson

from ..model.errors import InvalidTransition, JobNotFound
from ..model.job import AttemptError, JobRecord
from ..model.states import JobState
from .base import QueueStats, WorkerInfo

LoadJson = Callable[[Any], Any]


class Row(Protocol):
    """A row read by column name: a dict, a psycopg dict row or an sqlite3.Row."""

    def __getitem__(self, key: str, /) -> Any: ...


def as_is(value: Any) -> Any:
    """`load` for a driver that already parsed the JSON columns."""
    return value


def record_from_row(row: Row, load: LoadJson = as_is) -> JobRecord:
    """A JobRecord from a row keyed by column name; `load` parses JSON columns (None stays)."""
    return JobRecord(
        id=row["id"],
        task=row["task"],
        queue=row["queue"],
        state=JobState(row["state"]),
        data=load(row["data"]),
        priority=row["priority"],
        run_at=row["run_at"],
        attempt=row["attempt"],
        max_attempts=row["max_attempts"],
        enqueued_at=row["enqueued_at"],
        key=row["key"],
        timeout=row["timeout"],
        backoff=load(row["backoff"]),
        progress=load(row["progress"]),
        result=load(row["result"]),
        errors=tuple(AttemptError.from_dict(e) for e in load(row["errors"])),
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        worker_id=row["worker_id"],
        lease_expires_at=row["lease_expires_at"],
        cancel_requested=bool(row["cancel_requested"]),
        snoozes=int(_column(row, "snoozes", 0) or 0),
    )


def _column(row: Row, name: str, default: Any) -> Any:
    """A column a store may not return yet (a dict raises KeyError, sqlite3.Row IndexError)."""
    try:
        return row[name]
    except (KeyError, IndexError):
        return default


def error_json(error: AttemptError | None) -> str | None:
    """An attempt's error as the JSON text the stores keep in `errors`."""
    return None if error is None else orjson.dumps(error.to_dict()).decode()


def refusal(job_id: str, state: str | None, rule: str) -> Exception:
    """Why an admin change matched no job: there is none (state None) or its state forbids it."""
    if state is None:
        return JobNotFound(f"no job with id {job_id}")
    return InvalidTransition(f"job {job_id} is {state}; {rule}")


def queue_stats_from(
    paused: Mapping[str, bool],
    counts: Mapping[str, Mapping[str, int]],
    oldest: Mapping[str, float | None],
    recent: Mapping[str, Row],
) -> list[QueueStats]:
    """Assemble per-queue stats from the four reads each store makes (one snapshot).

    `recent[queue]` holds completed_last_minute, failed_last_minute, avg_wait, avg_run.
    """
    stats = []
    for queue in sorted(set(paused) | set(counts)):
        per_state = {s.value: 0 for s in JobState}
        per_state.update(counts.get(queue, {}))
        r = recent.get(queue)
        stats.append(
            QueueStats(
                name=queue,
                paused=paused.get(queue, False),
                counts=per_state,
                oldest_queued_at=oldest.get(queue),
                completed_last_minute=int(r["completed_last_minute"] or 0) if r else 0,
                failed_last_minute=int(r["failed_last_minute"] or 0) if r else 0,
                avg_wait_seconds=r["avg_wait"] if r else None,
                avg_run_seconds=r["avg_run"] if r else None,
            )
        )
    return stats


def worker_info_json(info: WorkerInfo) -> str:
    """A worker's registry entry as the JSON text every store keeps (tuples become lists)."""
    return orjson.dumps(info).decode()


def worker_info_from_json(text: str | bytes) -> WorkerInfo:
    """The WorkerInfo that `worker_info_json` wrote; optional fields may be absent."""
    d = orjson.loads(text)
    rss_mb = d.get("rss_mb")
    return WorkerInfo(
        id=d["id"],
        kind=d["kind"],
        hostname=d["hostname"],
        pid=int(d["pid"]),
        queues=tuple(d["queues"]),
        concurrency=int(d["concurrency"]),
        started_at=float(d["started_at"]),
        heartbeat_at=float(d["heartbeat_at"]),
        jobs_done=int(d.get("jobs_done", 0)),
        current_jobs=tuple(d.get("current_jobs", ())),
        rss_mb=None if rss_mb is None else float(rss_mb),
        parent_id=d.get("parent_id"),
        stats=d.get("stats") or {},
    )


def workers_from_json(texts: Iterable[str | bytes | None]) -> list[WorkerInfo]:
    """Registry entries in the protocol's order, (hostname, started_at, id); None (an entry
    deleted while it was being read) is skipped."""
    found = [worker_info_from_json(text) for text in texts if text is not None]
    found.sort(key=lambda w: (w.hostname, w.started_at, w.id))
    return found
