"""Bulk enqueue, shared by the blocking and the asyncio paths: the rows sent, and the records
built from what the statements answered. Only the awaiting differs between the two paths.

An insert is one statement (plus NOTIFY); a second one reads back the jobs that held the
ids or keys of the batch jobs that were not inserted, only when there were such jobs. The
statement returns the store's now it inserted at, from which the new jobs' records are built
as the statement stored them (`NewJob.due`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from ...model.errors import StoreError
from ...model.job import JobRecord, NewJob
from ..rows import record_from_row


@dataclass(frozen=True, slots=True)
class InsertBatch:
    """One call's jobs, encoded once for the insert statement."""

    jobs: Sequence[NewJob]
    rows: str
    """The jobs as one JSON array, unpacked by the statement (`json_to_recordset`)."""
    ids: frozenset[str]
    queues: list[str]

    @classmethod
    def of(cls, jobs: Sequence[NewJob]) -> InsertBatch:
        rows = orjson.dumps(
            [
                {
                    "id": j.id,
                    "task": j.task,
                    "queue": j.queue,
                    "data": orjson.Fragment(j.data),
                    "priority": j.priority,
                    "run_at": j.run_at,
                    "max_attempts": j.max_attempts,
                    "key": j.key,
                    "timeout": j.timeout,
                    "backoff": None if j.backoff is None else orjson.Fragment(j.backoff),
                    "enqueued_at": j.enqueued_at,
                    "absolute": j.absolute_run_at,
                    "ord": i,
                    "custom": j.custom_id,
                }
                for i, j in enumerate(jobs)
            ]
        ).decode()
        return cls(jobs, rows, frozenset(j.id for j in jobs), sorted({j.queue for j in jobs}))

    def all_inserted(self, rowcount: int) -> bool:
        """Every job was new: the inserted ids need not be read back."""
        return rowcount == len(self.ids)

    def existing_args(self, inserted: Iterable[str]) -> dict[str, Any] | None:
        """Arguments of `job_existing_many` for the jobs not inserted (None: there are none)."""
        new = set(inserted)
        skipped = {job.id: job for job in self.jobs if job.id not in new}
        if not skipped:
            return None
        jobs = list(skipped.values())
        return {
            "ids": [j.id for j in jobs],
            "queues": [j.queue for j in jobs],
            "keys": [j.key for j in jobs],
        }

    def records(
        self,
        inserted: Iterable[str],
        first: dict[str, Any] | None,
        existing: Iterable[dict[str, Any]],
    ) -> list[JobRecord]:
        """One record per job in call order: the new job, or the one that took its id or key
        (a repeat of an id in the batch is the same job). `first`: the insert's first
        returned row, whose enqueued_at is the store's now every new job was stored at
        (None only when no job was new)."""
        new = set(inserted)
        at = 0.0 if first is None else float(first["enqueued_at"])
        found = {row["for_id"]: record_from_row(row) for row in existing}
        by_id: dict[str, JobRecord] = {}
        for job in self.jobs:
            if job.id in by_id:
                continue
            if job.id in new:
                by_id[job.id] = JobRecord.from_new(job, at)
            elif job.id in found:
                by_id[job.id] = found[job.id]
            else:
                raise StoreError(f"job {job.id} was neither inserted nor found")
        return [by_id[job.id] for job in self.jobs]
