"""The attempts a worker runs now: started from a claim, ended into the completer, cancelled
or given up on the lease keeper's word, taken back at shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence

from ..model.job import JobRecord
from .completer import Completer
from .context import JobContext
from .executor import JobExecutor, current_trace
from .handler import Handler
from .lease_keeper import LeaseKeeper
from .observer import JobObserver

log = logging.getLogger("conveyor.worker")


class RunningJobs:
    """Attempts by job id. Every method runs on the event loop unless it says otherwise."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        handlers: Mapping[str, Handler],
        executor: JobExecutor,
        completer: Completer,
        leases: LeaseKeeper,
        observer: JobObserver | None,
        on_ended: Callable[[], None],
        on_slot_freed: Callable[[], None],
    ) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._handlers = handlers
        self._executor = executor
        self._completer = completer
        self._leases = leases
        self._observer = observer
        self._on_ended = on_ended
        """Called when an attempt ended here (its slot is free unless a thread is stuck)."""
        self._on_slot_freed = on_slot_freed
        """Called when a sync handler that outlived its attempt freed its thread."""
        self._running: dict[str, tuple[asyncio.Task[None], JobContext]] = {}

    def __len__(self) -> int:
        return len(self._running)

    def __iter__(self) -> Iterator[str]:
        return iter(tuple(self._running))

    def tasks(self) -> list[asyncio.Task[None]]:
        """Attempts whose outcome is still open (a timed-out one only waits for its thread)."""
        return [task for task, ctx in self._running.values() if ctx.decided is None]

    @property
    def undecided(self) -> int:
        """How many attempts may still end in more than one way: what a burst waits for."""
        return sum(1 for _, ctx in self._running.values() if ctx.decided is None)

    def start(self, jobs: Sequence[JobRecord]) -> None:
        if self._observer is not None:
            # Told before any of them runs: a crash mid-job is then known at once.
            self._observer.jobs_started([self._deadline(job) for job in jobs])
        self._leases.hold([(job.id, job.attempt) for job in jobs])
        for job in jobs:
            ctx = JobContext(job, self._report_progress)
            task = self._loop.create_task(self._execute(ctx))
            self._running[job.id] = (task, ctx)

    def _deadline(self, job: JobRecord) -> tuple[str, int, float | None]:
        """(job id, attempt, when its timeout passes or None), for the observer."""
        timeout = self._executor.timeout_of(job)
        return job.id, job.attempt, None if timeout is None else time.time() + timeout

    async def _execute(self, ctx: JobContext) -> None:
        try:
            outcome = await self._executor.run(ctx)
        except Exception:  # a bug of ours must not orphan the job until its lease expires
            log.exception("job %s: the executor failed", ctx.id)
            outcome = self._executor.failure(ctx.record, None, "internal error", current_trace())
        try:
            if outcome is not None:  # else it was taken back: whoever did settles it
                self._completer.add(outcome)
        finally:
            if self._running.get(ctx.id, (None, None))[1] is ctx:  # not a newer attempt
                del self._running[ctx.id]
            if self._observer is not None and not ctx.orphaned:
                self._observer.job_ended(ctx.id, ctx.attempt)
            self._on_ended()

    def orphan_done(self, ctx: JobContext) -> None:
        """(From the handler's thread) a sync handler that outlived its attempt returned."""
        if self._observer is not None:
            self._observer.job_ended(ctx.id, ctx.attempt)
        self._call_soon(self._on_slot_freed)

    def _report_progress(self, ctx: JobContext, progress: bytes) -> None:
        """(Any thread) queue the write with the completer: it stores it before the outcome."""
        if threading.get_ident() == self._loop_thread:
            self._completer.add_progress(ctx.id, ctx.attempt, progress)
        else:
            self._call_soon(self._completer.add_progress, ctx.id, ctx.attempt, progress)

    def from_thread(self, fn: Callable[[str, int], None]) -> Callable[[str, int], None]:
        """`fn(job id, attempt)`, run on the event loop when called from another thread."""
        return lambda job_id, attempt: self._call_soon(fn, job_id, attempt)

    def _call_soon(self, fn: Callable[..., object], *args: object) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            self._loop.call_soon_threadsafe(fn, *args)

    def cancel(self, job_id: str, attempt: int) -> None:
        """Cooperative: an async handler is cancelled at its next await, a sync one raises
        at its next `progress()` or `check_cancelled()`."""
        entry = self._running.get(job_id)
        if entry is None or entry[1].attempt != attempt or entry[1].cancel_requested:
            return
        task, ctx = entry
        ctx.cancel_requested = True
        ctx.logger.info("cancel requested for job %s", job_id)
        handler = self._handlers.get(ctx.task)
        if handler is not None and handler.is_async:
            task.cancel()

    def give_up(self, job_id: str, attempt: int) -> None:
        """The store no longer lists this attempt as ours (its lease ran out and it was
        rescued): stop it and record nothing, the job's new attempt owns the outcome."""
        entry = self._running.get(job_id)
        if entry is None or entry[1].attempt != attempt or entry[1].released:
            return
        task, ctx = entry
        ctx.released = True
        self._leases.drop([(job_id, attempt)])
        ctx.logger.warning("lost the lease of job %s; abandoning this attempt", job_id)
        task.cancel()

    async def take_back(self) -> tuple[list[tuple[JobContext, float]], list[JobContext]]:
        """Stop every attempt still running (shutdown): returns those whose handler had
        started, with how long it ran, and those whose handler never started. A timed-out
        attempt whose thread still runs gets its decided outcome stored (the worker's hard
        exit ends that thread, so its next attempt cannot overlap it)."""
        left = list(self._running.values())
        started: list[tuple[JobContext, float]] = []
        unstarted: list[JobContext] = []
        for task, ctx in left:
            ran = self._executor.take_back(ctx)
            if ctx.decided is not None:
                self._completer.add(ctx.decided)
            elif ran is None:
                unstarted.append(ctx)
            else:
                started.append((ctx, ran))
            task.cancel()
        if left:
            await asyncio.wait([task for task, _ in left], timeout=5)
        return started, unstarted
