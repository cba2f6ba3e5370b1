"""The Redis store off the hot path: job reads and listing, operators' changes (cancel,
retry), pruning, and queues (pause, resume, stats)."""

from __future__ import annotations

from typing import Any

from ...model.errors import InvalidTransition
from ...model.job import JobRecord
from ...model.states import JobState
from ..base import JobChange, JobListParams, PruneParams, QueueStats
from ..rows import queue_stats_from, refusal
from .core import RedisCore
from .scripts import num, record, record_from_hash, when

LIST_SCAN = 2000
"""Ids a listing script looks at per call while filtering."""
STATS_SAMPLE = 1000
"""Recent finished jobs per queue that the wait and run averages are taken over."""
_STATES = ("scheduled", "queued", "active", "completed", "failed", "cancelled")


class AdminStore(RedisCore):
    # reads --------------------------------------------------------------------------------
    def _get_in(self, queue: str, job_id: str) -> JobRecord | None:
        fields = self._redis().hgetall(self._queue(queue).job(job_id))
        return record_from_hash(fields) if fields else None

    def job_get(self, job_id: str) -> JobRecord | None:
        queue = self._redis().hget(self.keys.index, job_id)
        return None if queue is None else self._get_in(queue, job_id)

    def job_list(self, params: JobListParams) -> list[JobRecord]:
        queues = [params.queue] if params.queue is not None else self._known_queues()
        found: list[JobRecord] = []
        for queue in queues:
            found.extend(self._list_queue(queue, params))
        found.sort(key=lambda r: r.id, reverse=True)
        return found[: params.limit]

    def _list_queue(self, queue: str, params: JobListParams) -> list[JobRecord]:
        start = "+" if params.before_id is None else "(" + params.before_id
        state = "" if params.state is None else params.state.value
        rows: list[JobRecord] = []
        while len(rows) < params.limit:
            last, looked, flats = self._run(
                "list", queue, start, params.limit - len(rows), state, params.task or "", LIST_SCAN
            )
            rows.extend(record(flat) for flat in flats)
            if looked < LIST_SCAN:
                break
            start = "(" + last
        return rows

    # operators' changes -------------------------------------------------------------------
    def _admin(self, script: str, job_id: str, now: float | None, rule: str) -> JobChange:
        queue = self._redis().hget(self.keys.index, job_id)
        answer = ["missing"] if queue is None else self._run(script, queue, job_id, when(now))
        status = answer[0]
        if status == "key_held":
            raise InvalidTransition(
                f"job {job_id} cannot be retried: job {answer[1]} holds its key"
            )
        if status != "ok":
            raise refusal(job_id, None if status == "missing" else answer[1], rule)
        _, from_state, at, flat = answer
        return JobChange.of_admin_call(record(flat), JobState(from_state), float(at))

    def job_cancel(self, job_id: str, now: float | None = None) -> JobChange:
        return self._admin("cancel", job_id, now, "only pending or active jobs can be cancelled")

    def job_retry(self, job_id: str, now: float | None = None) -> JobChange:
        return self._admin("retry", job_id, now, "only failed or cancelled jobs can be retried")

    def job_prune(self, params: PruneParams) -> int:
        """At most `params.limit` jobs over all queues: one bounded script per queue."""
        total = 0
        for queue in self._known_queues():
            if total >= params.limit:
                break
            deleted = self._run(
                "prune",
                queue,
                when(params.now),
                num(params.keep_completed),
                num(params.keep_failed),
                params.limit - total,
            )
            if deleted:
                self._run_store("index_forget", [self.keys.index], queue, *deleted)
            total += len(deleted)
        return total

    def store_compact(self) -> None:
        """Nothing to do: Redis frees a job's memory when it is deleted."""

    # queues -------------------------------------------------------------------------------
    def _set_paused(self, name: str, paused: bool) -> None:
        keys = self._queue(name)
        pipe = self._redis().pipeline(transaction=False)
        pipe.sadd(self.keys.queues, name)
        pipe.hset(keys.keys[8], "paused", "1" if paused else "0")
        if not paused:
            pipe.publish(self.keys.wake_channel, name)
        pipe.execute()

    def queue_pause(self, name: str) -> None:
        self._set_paused(name, True)

    def queue_resume(self, name: str) -> None:
        self._set_paused(name, False)

    def queue_stats(self, now: float | None = None, name: str | None = None) -> list[QueueStats]:
        queues = [name] if name is not None else self._known_queues()
        if name is not None and not self._redis().sismember(self.keys.queues, name):
            queues = []
        paused: dict[str, bool] = {}
        counts: dict[str, dict[str, int]] = {}
        oldest: dict[str, float | None] = {}
        recent: dict[str, dict[str, Any]] = {}
        for queue in queues:
            figures = self._run("stats", queue, when(now), STATS_SAMPLE)
            paused[queue] = figures[0] == "1"
            counts[queue] = {
                state: int(n) for state, n in zip(_STATES, figures[1:7], strict=True) if int(n)
            }
            oldest[queue] = float(figures[7]) if figures[7] else None
            recent[queue] = {
                "completed_last_minute": int(figures[8]),
                "failed_last_minute": int(figures[9]),
                "avg_wait": float(figures[10]) if figures[10] else None,
                "avg_run": float(figures[11]) if figures[11] else None,
            }
        return queue_stats_from(paused, counts, oldest, recent)
