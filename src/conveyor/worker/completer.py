"""Batched acknowledgements: outcomes pile up while one write is in flight, then go together.

Progress reports go the same way, coalesced (only the newest per job is written) and always
written before the outcomes of the same round: progress a handler reported before it returned
is stored before its outcome ends the attempt (a progress write after it would be refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from ..backends.base import Backend, JobChange, Outcome
from ..failures import log_failure

log = logging.getLogger("conveyor.worker")

Progress = tuple[str, int, bytes]
"""(job id, attempt, encoded progress)."""
MAX_TRIES = 10
"""An outcome the store refuses this often (about 25 s of backoff, a store restart's worth) is
dropped: its lease expires and the job runs again."""
STOPPING_TRIES = 3
"""Once the worker is stopping, a refused outcome gets this many tries in all, quickly: a stop
must not wait out the full backoff for a write the store keeps refusing."""
STOPPING_MAX_DELAY = 0.2


class Completer:
    """Writes outcomes and progress in rounds on the ack thread (its own store connection,
    so a batch being committed never holds up the next claim), and publishes the changes
    applied. `settled` hears of every outcome that left (written, skipped as stale, or
    dropped), so its job's lease is no longer kept."""

    def __init__(
        self,
        backend: Backend,
        publish: Callable[[Sequence[JobChange]], None],
        settled: Callable[[Sequence[Outcome]], None],
        max_backlog: int,
    ) -> None:
        self._backend = backend
        self._publish = publish
        self._settled = settled
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="conveyor-ack")
        self.max_backlog = max_backlog
        """Outcomes waiting or in flight above which the producer claims nothing more."""
        self._pending: list[Outcome] = []
        self._in_flight = 0
        self._progress: dict[str, Progress] = {}
        self._tries: dict[tuple[str, int], int] = {}
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._closing = False
        self._max_tries = MAX_TRIES
        self._hurry = asyncio.Event()

    async def _write(self, outcomes: Sequence[Outcome]) -> None:
        await asyncio.get_running_loop().run_in_executor(self._pool, self._complete, outcomes)

    def _complete(self, outcomes: Sequence[Outcome]) -> None:
        self._publish(self._backend.job_complete_many(outcomes))

    def _set_progress(self, items: Sequence[Progress]) -> None:
        for job_id, attempt, progress in items:
            try:
                self._backend.job_set_progress(job_id, attempt, progress)
            except Exception:
                log_failure(log, "could not record the progress of job %s", job_id)

    def add(self, outcome: Outcome) -> None:
        self._pending.append(outcome)
        self._idle.clear()
        self._wakeup.set()

    def add_progress(self, job_id: str, attempt: int, progress: bytes) -> None:
        """Queue a progress write; a newer report of the same job replaces an unwritten one."""
        self._progress[job_id] = (job_id, attempt, progress)
        self._idle.clear()
        self._wakeup.set()

    @property
    def backlog(self) -> int:
        """Outcomes not yet stored (waiting or being written)."""
        return len(self._pending) + self._in_flight

    @property
    def full(self) -> bool:
        return self.backlog >= self.max_backlog

    async def run(self) -> None:
        """Write whatever is pending, one round at a time, until closed and drained."""
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending or self._progress:
                await self._write_progress(list(self._progress))
                if not self._pending:
                    continue
                batch, self._pending = self._pending, []
                # progress that arrived meanwhile for these jobs goes first
                await self._write_progress([o.job_id for o in batch])
                self._in_flight = len(batch)
                try:
                    await self._write(batch)
                    self._in_flight = 0
                    self._settled(batch)
                except Exception:
                    log_failure(log, "could not record %d job outcomes; retrying", len(batch))
                    await self._write_one_by_one(batch)
            self._idle.set()
            if self._closing:
                return

    async def _write_progress(self, job_ids: Sequence[str]) -> None:
        """Write the pending progress of these jobs (those that have some)."""
        items = [self._progress.pop(job_id) for job_id in job_ids if job_id in self._progress]
        if items:
            await asyncio.get_running_loop().run_in_executor(self._pool, self._set_progress, items)

    async def _write_one_by_one(self, batch: list[Outcome]) -> None:
        """Isolate an outcome the store refuses, so it cannot hold back the others."""
        failed: list[Outcome] = []
        for outcome in batch:
            key = (outcome.job_id, outcome.attempt)
            try:
                await self._write([outcome])
                self._tries.pop(key, None)
            except Exception:
                self._tries[key] = self._tries.get(key, 0) + 1
                if self._tries[key] < self._max_tries:
                    failed.append(outcome)
                    continue
                log.exception(
                    "dropping the outcome of job %s after %d tries; it reruns when its "
                    "lease expires",
                    outcome.job_id,
                    self._tries.pop(key),
                )
            self._in_flight -= 1
            self._settled([outcome])
        if failed:
            self._in_flight -= len(failed)
            self._pending[:0] = failed
            await self._back_off()

    async def _back_off(self) -> None:
        """Sleep before the next try; cut short (and kept short) once the worker is stopping."""
        delay = min(5.0, 0.05 * 2 ** max(self._tries.values(), default=1))
        if self._hurry.is_set():
            delay = min(delay, STOPPING_MAX_DELAY)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._hurry.wait(), delay)

    @property
    def idle(self) -> bool:
        return self._idle.is_set()

    async def flush(self) -> None:
        """Return once everything added so far is written."""
        await self._idle.wait()

    def hurry(self) -> None:
        """The worker is stopping: give refused outcomes only a few more quick tries."""
        self._max_tries = STOPPING_TRIES
        self._hurry.set()

    def close(self) -> None:
        self._closing = True
        self._wakeup.set()

    def shutdown(self) -> None:
        """After `run` returned: let the ack thread go."""
        self._pool.shutdown(wait=False, cancel_futures=True)
