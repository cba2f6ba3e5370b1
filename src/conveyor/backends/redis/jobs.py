"""The job lifecycle on Redis: insert, claim, outcomes, leases, release, rescue, progress.

Each call is one script per queue it touches (the bulk insert: one script for the whole
batch), with the store's clock read inside the script (`TIME`) unless a test gives `now`.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any

import redis

from ...model.errors import StoreError
from ...model.job import JobRecord, NewJob
from ..base import (
    ClaimParams,
    HeartbeatParams,
    JobChange,
    Outcome,
    ReleaseParams,
    RescueResult,
)
from ..rows import error_json
from .core import RedisCore
from .scripts import changes, num, opt, record, when

SWEEP_LIMIT = 1000
"""Rescue handles at most this many jobs per script call, then calls again."""


class JobStore(RedisCore):
    def job_insert_many(
        self, jobs: Sequence[NewJob], connection: Any = None, *, now: float | None = None
    ) -> list[JobRecord]:
        if connection is not None:
            raise self._no_transactions()
        if not jobs:
            return []
        queues = list(dict.fromkeys(job.queue for job in jobs))
        number = {queue: n for n, queue in enumerate(queues, start=1)}
        keys = [self.keys.index, self.keys.queues]
        for queue in queues:
            keys += self._queue(queue).keys
        args: list[object] = [
            self.keys.wake_channel,
            self.keys.prefix,
            when(now),
            len(queues),
            *queues,
        ]
        for job in jobs:
            args += [
                -number[job.queue] if job.custom_id else number[job.queue],
                job.id,
                job.task,
                job.data.decode(),
                job.priority,
                num(job.run_at if job.absolute_run_at else job.run_at - job.enqueued_at),
                job.max_attempts,
                "1" if job.absolute_run_at else "0",
                opt(job.key),
                opt(None if job.timeout is None else num(job.timeout)),
                opt(None if job.backoff is None else job.backoff.decode()),
            ]
        try:
            answer = self._run_store("insert", keys, *args)
        except redis.ResponseError as exc:  # refused before its first write
            raise StoreError(
                f"the Redis store at {self._where()} refused the batch, nothing was stored: {exc}"
            ) from None
        at = float(answer[0])  # the store's now the script enqueued at
        records = [JobRecord.from_new(job, at) for job in jobs]
        for position, flat in zip(answer[1::2], answer[2::2], strict=True):
            records[position - 1] = record(flat)
        return records

    async def job_insert_many_async(
        self, jobs: Sequence[NewJob], connection: Any
    ) -> list[JobRecord]:
        raise self._no_transactions()

    def _no_transactions(self) -> StoreError:
        return StoreError(
            f"the store at {self._where()} cannot enqueue inside your transaction; "
            "use PostgreSQL, or enqueue after your commit"
        )

    def job_claim(self, params: ClaimParams) -> list[JobRecord]:
        if params.limit < 1:
            return []
        if len(params.queues) == 1:
            shares = {params.queues[0]: params.limit}
        else:
            shares = self._shares(params)
        records: list[JobRecord] = []
        for queue, count in shares.items():
            flats = self._run(
                "claim",
                queue,
                count,
                params.worker_id,
                when(params.now),
                num(params.lease_seconds),
            )
            records.extend(record(flat) for flat in flats)
        self._held.add((r.id, r.queue) for r in records)
        records.sort(key=lambda r: (r.priority, r.run_at, r.id))
        return records

    def _shares(self, params: ClaimParams) -> dict[str, int]:
        """How many jobs to claim from each queue so that priority holds across them: each
        queue offers its best `limit`, the best `limit` offers win."""
        pipe = self._redis().pipeline(transaction=False)
        for queue in params.queues:
            self._run("peek", queue, params.limit, when(params.now), client=pipe)
        offers = []
        for queue, answer in zip(params.queues, pipe.execute(), strict=True):
            offers += [
                (float(score), member, queue)
                for member, score in zip(answer[::2], answer[1::2], strict=True)
            ]
        shares: dict[str, int] = {}
        for _, _, queue in heapq.nsmallest(params.limit, offers):
            shares[queue] = shares.get(queue, 0) + 1
        return shares

    def job_complete_many(self, outcomes: Sequence[Outcome]) -> list[JobChange]:
        by_queue: dict[str, list[Outcome]] = {}
        for o in outcomes:
            by_queue.setdefault(o.queue, []).append(o)
        applied: list[JobChange] = []
        for queue, group in by_queue.items():
            args: list[object] = []
            for o in group:
                args += [
                    o.job_id,
                    o.attempt,
                    o.worker_id,
                    o.kind,
                    when(o.finished_at),
                    opt(None if o.result is None else o.result.decode()),
                    opt(error_json(o.error)),
                    when(o.run_at),
                    "" if o.delay is None else num(o.delay),
                ]
            applied += changes(self._run("complete", queue, *args), queue)
            # Written, or skipped as stale: either way no longer this process's job.
            self._held.forget(o.job_id for o in group)
        return applied

    def job_heartbeat(self, params: HeartbeatParams) -> dict[str, bool]:
        held: dict[str, bool] = {}
        for queue, ids in self._queues_of(params.job_ids).items():
            answer = self._run(
                "heartbeat",
                queue,
                params.worker_id,
                when(params.now),
                num(params.lease_seconds),
                *ids,
            )
            held.update(
                (job_id, bool(cancel))
                for job_id, cancel in zip(answer[::2], answer[1::2], strict=True)
            )
        self._held.forget(job_id for job_id in params.job_ids if job_id not in held)
        return held

    def job_release_many(self, params: ReleaseParams) -> list[JobChange]:
        released: list[JobChange] = []
        for queue, ids in self._queues_of(params.job_ids).items():
            answer = self._run("release", queue, params.worker_id, when(params.now), *ids)
            released += changes(answer, queue)
        self._held.forget(params.job_ids)
        return released

    def job_rescue_expired(self, now: float | None = None) -> RescueResult:
        totals = [0, 0, 0]
        found: list[JobChange] = []
        for queue in self._known_queues():
            while True:
                requeued, failed, cancelled, seen, flat = self._run(
                    "rescue", queue, when(now), SWEEP_LIMIT
                )
                totals = [totals[0] + requeued, totals[1] + failed, totals[2] + cancelled]
                found += changes(flat, queue)
                if seen < SWEEP_LIMIT:
                    break
        return RescueResult(
            requeued=totals[0], failed=totals[1], cancelled=totals[2], changes=tuple(found)
        )

    def job_set_progress(self, job_id: str, attempt: int, progress: bytes) -> bool:
        queues = list(self._queues_of([job_id]))
        if not queues:
            return False
        return bool(self._run("progress", queues[0], job_id, attempt, progress.decode()))

    def job_next_due_in(self, queues: Sequence[str]) -> float | None:
        pipe = self._redis().pipeline(transaction=False)
        pipe.time()
        for queue in queues:
            keys = self._queue(queue)
            pipe.hget(keys.keys[8], "paused")
            pipe.zrange(keys.keys[1], 0, 0, withscores=True)
        (seconds, micros), *answers = pipe.execute()
        due = [
            first[0][1]
            for paused, first in zip(answers[::2], answers[1::2], strict=True)
            if paused != "1" and first
        ]
        if not due:
            return None
        return float(min(due) - (seconds + micros / 1_000_000))

    def jobs_wait(self, queues: Sequence[str], timeout: float) -> bool:
        return self._waiter().wait(queues, timeout)
