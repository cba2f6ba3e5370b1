"""The jobs this process claimed, by queue: a bounded cache in front of the store's index.

Heartbeats, progress and releases name only job ids, and a job's keys live under its queue:
remembering the queue of each claimed job saves a lookup in the store-wide index per call. An
entry is dropped once the job's outcome is written, it is released, or a heartbeat finds its
lease lost. Anything else (an outcome never written, a job the engine stopped renewing) is
capped: past `HELD_CAP` entries the oldest are dropped, with a warning, which costs only an
index lookup should that job be named again.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Iterable

log = logging.getLogger("conveyor.store")

HELD_CAP = 50_000
"""Far above any worker's concurrency: reaching it means entries were never dropped."""
WARN_EVERY = 60.0
"""Seconds between warnings about the cap."""


class HeldJobs:
    def __init__(self, cap: int = HELD_CAP) -> None:
        self._queues: dict[str, str] = {}
        self._lock = threading.Lock()
        self._cap = cap
        self._warned_at = -WARN_EVERY

    def add(self, jobs: Iterable[tuple[str, str]]) -> None:
        """Remember (job id, queue) pairs; drop the oldest beyond the cap."""
        with self._lock:
            self._queues.update(jobs)
            excess = len(self._queues) - self._cap
            if excess <= 0:
                return
            for job_id in list(itertools.islice(self._queues, excess)):  # oldest first
                del self._queues[job_id]
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY:
            self._warned_at = now
            log.warning(
                "the Redis store remembers %d claimed jobs, its cap: dropped the %d oldest "
                "(their outcomes were never written?); they are looked up in the store instead",
                self._cap,
                excess,
            )

    def split(self, job_ids: Iterable[str]) -> tuple[dict[str, list[str]], list[str]]:
        """The ids grouped by the queue remembered for them, and the ids not remembered."""
        groups: dict[str, list[str]] = {}
        unknown: list[str] = []
        with self._lock:
            for job_id in job_ids:
                queue = self._queues.get(job_id)
                if queue is None:
                    unknown.append(job_id)
                else:
                    groups.setdefault(queue, []).append(job_id)
        return groups, unknown

    def forget(self, job_ids: Iterable[str]) -> None:
        with self._lock:
            for job_id in job_ids:
                self._queues.pop(job_id, None)

    def __len__(self) -> int:
        return len(self._queues)
