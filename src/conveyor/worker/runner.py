"""The runner: one worker process's loop of claim -> execute -> acknowledge, in batches.

One thread talks to the store (so claims, acks and heartbeats never block the event loop),
one thread waits for wake-ups, and a pool of threads runs sync handlers. Async handlers run
on the event loop itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import psutil

from ..backends.base import ClaimParams, HeartbeatParams, Outcome, ReleaseParams, WorkerInfo
from ..maintenance.pruner import prune_finished
from ..maintenance.rescuer import rescue_expired
from ..model.job import JobRecord
from .completer import Completer
from .context import JobContext
from .executor import JobExecutor, current_trace
from .observer import JobObserver

if TYPE_CHECKING:
    from ..app import Conveyor

log = logging.getLogger("conveyor.worker")
T = TypeVar("T")
_MIN_IDLE_WAIT = 0.002
_LIMIT_CHECK_INTERVAL = 0.5


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class Recycling:
    """When a worker stops by itself, gracefully, so that a supervisor starts a fresh one."""

    max_jobs: int | None = None
    """After this many jobs."""
    max_age: float | None = None
    """After this many seconds."""
    max_rss_mb: float | None = None
    """Once the process's resident memory passes this (checked about twice a second)."""
    parent_pid: int | None = None
    """As soon as this process (its supervisor) is gone."""


class Worker:
    """Works the given queues with up to `concurrency` jobs at once.

    `burst=True` rescues expired leases first, then exits once no job of its queues is due.
    `observer` hears of every attempt's start and end (a supervised child's reporter).
    """

    def __init__(
        self,
        app: Conveyor,
        queues: Iterable[str] | None = None,
        concurrency: int = 10,
        *,
        burst: bool = False,
        batch_size: int | None = None,
        worker_id: str | None = None,
        observer: JobObserver | None = None,
        recycling: Recycling | None = None,
        supervisor_id: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, not {concurrency}")
        self.app = app
        own_queues = sorted({t.defaults.queue for t in app.tasks.values()})
        self.queues: tuple[str, ...] = tuple(queues or own_queues or ["default"])
        self.concurrency = concurrency
        self.burst = burst
        self.batch_size = batch_size or min(concurrency, 100)
        self.worker_id = worker_id or default_worker_id()
        self.settings = app.settings
        self.jobs_done = 0
        self.stop_reason: str | None = None
        self.supervisor_id = supervisor_id
        self.started_at = time.time()
        self._observer = observer
        self._recycling = recycling or Recycling()
        self._running: dict[str, tuple[asyncio.Task[None], JobContext]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._stop: asyncio.Event | None = None
        self._force: asyncio.Event | None = None
        self._nudge: asyncio.Event | None = None
        self._waiting_for_slot = False
        self._waiter: asyncio.Future[bool] | None = None
        self._wait_failures = 0

    # public control -----------------------------------------------------------------------
    def stop(self, *, force: bool = False) -> None:
        """Stop claiming and shut down gracefully (thread-safe). `force` skips the grace."""
        loop = self._loop
        if loop is None:
            return
        loop.call_soon_threadsafe(self._request_stop, force)

    def run_until_stopped(self, *, supervised: bool = False) -> None:
        """Run with SIGTERM/SIGINT handlers: the first starts a graceful stop, the second
        skips the rest of the grace period.

        `supervised`: a supervisor's child ignores SIGINT (a terminal's Ctrl-C reaches the
        whole process group; the supervisor passes it on as SIGTERM, once).
        """
        if supervised:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        asyncio.run(self._run_with_signals(supervised))
        if supervised:  # done: a late signal from the supervisor must not cut the exit short
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)

    async def _run_with_signals(self, supervised: bool) -> None:
        loop = asyncio.get_running_loop()
        if supervised:
            # SIGTERM may reach a child twice (from the supervisor and from a signal to the
            # whole process group): it only ever means "stop gracefully". The supervisor
            # asks for a forced stop with SIGUSR1.
            loop.add_signal_handler(signal.SIGTERM, self._on_signal, signal.SIGTERM, False)
            loop.add_signal_handler(signal.SIGUSR1, self._on_signal, signal.SIGUSR1, True)
        else:
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self._on_signal, sig, None)
        await self.run()

    def _on_signal(self, sig: signal.Signals, force: bool | None) -> None:
        """`force` None: the first signal is graceful, a second one forces."""
        if force is None:
            force = self._stop is not None and self._stop.is_set()
        log.warning(
            "%s: %s",
            sig.name,
            "skipping the grace period"
            if force
            else (f"finishing active jobs (up to {self.settings.grace_period:g} s), then exiting"),
        )
        self._request_stop(force)

    def _recycle(self, reason: str) -> None:
        """Stop gracefully by ourselves (a limit was reached); a supervisor starts anew."""
        if self._stop is not None and not self._stop.is_set():
            log.info("worker %s recycling: %s", self.worker_id, reason)
            self.stop_reason = reason
            if self._observer is not None:
                self._observer.worker_recycling(reason)
            self._request_stop(False)

    def _request_stop(self, force: bool) -> None:
        assert self._stop and self._force and self._nudge
        self._stop.set()
        if force:
            self._force.set()
        self._nudge.set()

    # main loop ----------------------------------------------------------------------------
    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._loop, self._loop_thread = loop, threading.get_ident()
        self._stop, self._force, self._nudge = asyncio.Event(), asyncio.Event(), asyncio.Event()
        # Open the store first: if it fails, nothing has been started yet.
        backend = self._backend = self.app.backend
        self._store_pool = ThreadPoolExecutor(1, thread_name_prefix="conveyor-store")
        # Acknowledgements get their own thread (and store connection), so that a batch of
        # outcomes being committed never holds up the next claim.
        self._ack_pool = ThreadPoolExecutor(1, thread_name_prefix="conveyor-ack")
        self._wait_pool = ThreadPoolExecutor(1, thread_name_prefix="conveyor-wait")
        self._job_pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="conveyor-job")
        self._executor = JobExecutor(
            self.app.tasks,
            self.worker_id,
            self._job_pool,
            on_orphan_done=self._orphan_done,
        )
        self._completer = Completer(self._write_outcomes)
        # Listen before the first claim, so that no wake-up between the two is missed.
        try:
            await self._store(backend.jobs_wait, self.queues, 0.0)
        except Exception:  # a stale wake-up connection: the wait loop reconnects and polls
            log.exception("listening for wake-ups failed at start-up; will retry")
        try:
            await self._store(rescue_expired, backend)
        except Exception:  # the store may be restarting: the maintenance loop tries again
            log.exception("rescue at start-up failed; will retry")
        log.info(
            "worker %s started: queues %s, concurrency %d",
            self.worker_id,
            ",".join(self.queues),
            self.concurrency,
        )
        await self._register()
        if self._observer is not None:
            self._observer.worker_started(self.worker_id)
        completer = loop.create_task(self._completer.run())
        self._maintenance = loop.create_task(self._maintenance_loop())
        services = [loop.create_task(self._heartbeat_loop()), self._maintenance]
        if self._recycling.parent_pid is not None or self._recycling.max_rss_mb is not None:
            services.append(loop.create_task(self._watch_limits()))
        if self._recycling.max_age is not None:
            max_age = self._recycling.max_age
            services.append(
                loop.create_task(self._after(max_age, f"max age {max_age:g} s reached"))
            )
        try:
            await self._produce()
            await self._shutdown()
        finally:
            for service in services:
                service.cancel()
            self._completer.close()
            await asyncio.wait([completer], timeout=10)
            for pool in (self._store_pool, self._ack_pool, self._wait_pool, self._job_pool):
                pool.shutdown(wait=False, cancel_futures=True)
            with contextlib.suppress(Exception):  # else it expires from the registry
                backend.worker_forget(self.worker_id)
            self._loop = None
            log.info("worker %s stopped after %d jobs", self.worker_id, self.jobs_done)

    async def _store(self, fn: Callable[..., T], *args: Any) -> T:
        assert self._loop is not None
        return await self._loop.run_in_executor(self._store_pool, functools.partial(fn, *args))

    async def _write_outcomes(self, outcomes: Sequence[Outcome]) -> None:
        assert self._loop is not None
        await self._loop.run_in_executor(self._ack_pool, self._backend.job_complete_many, outcomes)

    async def _produce(self) -> None:
        assert self._stop and self._nudge
        failures = 0
        while not self._stop.is_set():
            # Sync handlers that outlived their job still hold a thread: not a free slot.
            free = self.concurrency - len(self._running) - self._executor.orphaned_threads
            if free <= 0:
                await self._wait(for_slot=True)
                continue
            # Burst mode may only end on an empty claim that began after every outcome of
            # ours was written: one written during the claim may have made a retry due.
            settled = not self._running and self._completer.idle
            try:
                jobs = await self._store(
                    self._backend.job_claim,
                    ClaimParams(
                        queues=self.queues,
                        limit=min(free, self.batch_size),
                        worker_id=self.worker_id,
                        lease_seconds=self.settings.lease_seconds,
                        now=time.time(),
                    ),
                )
                failures = 0
            except Exception:
                failures += 1
                log.exception("claim failed; retrying")
                await self._pause(min(5.0, 0.1 * 2**failures))
                continue
            if jobs and self._observer is not None:
                # Told before any of them runs: a crash mid-job is then known at once.
                self._observer.jobs_started([self._attempt_deadline(job) for job in jobs])
            for job in jobs:
                self._start(job)
            if jobs:
                continue
            if self.burst:
                if self._running:
                    await self._wait(for_slot=True)
                elif not settled:
                    await self._completer.flush()  # a retry due at once may follow
                else:
                    return
                continue
            await self._wait_for_work()

    async def _wait(self, *, for_slot: bool) -> None:
        assert self._nudge
        self._waiting_for_slot = for_slot
        await self._nudge.wait()
        self._nudge.clear()
        self._waiting_for_slot = False

    async def _pause(self, seconds: float) -> None:
        assert self._stop
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)

    async def _wait_for_work(self) -> None:
        """Sleep until the store wakes us, the next delayed job is due, or the fallback poll."""
        timeout = self.settings.poll_interval
        try:
            next_due = await self._store(self._backend.job_next_due_at, self.queues)
        except Exception:
            log.exception("could not read the next due time")
            next_due = None
        if next_due is not None:
            # A claim just came back empty, so never spin: wait at least a moment.
            timeout = max(_MIN_IDLE_WAIT, min(timeout, next_due - time.time()))
        if self._wait_failures:  # never spin on a failing wait
            await self._pause(min(5.0, 0.1 * 2**self._wait_failures))
        if self._waiter is None:
            assert self._loop
            waiter = self._loop.run_in_executor(
                self._wait_pool, self._backend.jobs_wait, self.queues, timeout
            )
            waiter.add_done_callback(self._on_waiter_done)
            self._waiter = waiter
        await self._wait(for_slot=False)

    def _on_waiter_done(self, fut: asyncio.Future[bool]) -> None:
        self._waiter = None
        if not fut.cancelled() and fut.exception() is not None:
            log.error("waiting for wake-ups failed: %s", fut.exception())
            self._wait_failures += 1
        else:
            self._wait_failures = 0
        assert self._nudge
        self._nudge.set()

    # one job ------------------------------------------------------------------------------
    def _attempt_deadline(self, job: JobRecord) -> tuple[str, int, float | None]:
        """(job id, attempt, when its timeout passes or None), for the observer."""
        timeout = self._executor.timeout_of(job)
        return job.id, job.attempt, None if timeout is None else time.time() + timeout

    def _start(self, job: JobRecord) -> None:
        assert self._loop
        ctx = JobContext(job, self._report_progress)
        task = self._loop.create_task(self._execute(ctx))
        self._running[job.id] = (task, ctx)

    async def _execute(self, ctx: JobContext) -> None:
        try:
            outcome = await self._executor.run(ctx)
        except Exception:  # a bug of ours must not orphan the job until its lease expires
            log.exception("job %s: the executor failed", ctx.id)
            outcome = self._executor.failure(ctx.record, None, "internal error", current_trace())
        try:
            if outcome is not None:
                self._completer.add(outcome)
        finally:
            if self._running.get(ctx.id, (None, None))[1] is ctx:  # not a newer attempt
                del self._running[ctx.id]
            if self._observer is not None and not ctx.orphaned:
                self._observer.job_ended(ctx.id, ctx.attempt)
            self.jobs_done += 1
            max_jobs = self._recycling.max_jobs
            if max_jobs is not None and self.jobs_done >= max_jobs:
                self._recycle(f"max jobs {max_jobs} reached")
            self._slot_freed()

    def _orphan_done(self, ctx: JobContext) -> None:
        """(From the handler's thread) a sync handler that outlived its job returned."""
        if self._observer is not None:
            self._observer.job_ended(ctx.id, ctx.attempt)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._slot_freed)

    def _slot_freed(self) -> None:
        if self._waiting_for_slot and self._nudge:
            self._nudge.set()

    def _report_progress(self, ctx: JobContext, progress: bytes) -> None:
        """From a handler thread write directly; from the loop, hand it to the store thread."""
        args = (ctx.id, ctx.attempt, progress)
        if threading.get_ident() != self._loop_thread:
            self._backend.job_set_progress(*args)
            return
        fut: Future[bool] = self._store_pool.submit(self._backend.job_set_progress, *args)
        fut.add_done_callback(_log_failure)

    # services -----------------------------------------------------------------------------
    def worker_info(self) -> WorkerInfo:
        """How this worker describes itself in the registry (`conveyor workers`)."""
        return WorkerInfo(
            id=self.worker_id,
            kind="worker",
            hostname=socket.gethostname(),
            pid=os.getpid(),
            queues=self.queues,
            concurrency=self.concurrency,
            started_at=self.started_at,
            heartbeat_at=time.time(),
            jobs_done=self.jobs_done,
            current_jobs=tuple(self._running),
            rss_mb=psutil.Process().memory_info().rss / 2**20,
            parent_id=self.supervisor_id,
        )

    async def _register(self) -> None:
        """Beat into the worker registry; an entry outlives three missed heartbeats."""
        ttl = self.settings.lease_seconds + 1.0
        try:
            await self._store(self._backend.worker_beat, self.worker_info(), ttl)
        except Exception:
            log.exception("could not update the worker registry; will retry")

    async def _heartbeat_loop(self) -> None:
        interval = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            await self._register()
            ids = tuple(self._running)
            if not ids:
                continue
            try:
                held = await self._store(
                    self._backend.job_heartbeat,
                    HeartbeatParams(
                        worker_id=self.worker_id,
                        job_ids=ids,
                        lease_seconds=self.settings.lease_seconds,
                        now=time.time(),
                    ),
                )
            except Exception:
                log.exception("heartbeat failed; leases may expire")
                continue
            for job_id in ids:
                if job_id not in held:
                    self._give_up(job_id)
                elif held[job_id]:
                    self._cancel_running(job_id)

    def _cancel_running(self, job_id: str) -> None:
        """Cooperative: an async handler is cancelled at its next await, a sync one raises
        at its next `progress()` or `check_cancelled()`."""
        entry = self._running.get(job_id)
        if entry is None or entry[1].cancel_requested:
            return
        task, ctx = entry
        ctx.cancel_requested = True
        ctx.logger.info("cancel requested for job %s", job_id)
        handler = self.app.tasks.get(ctx.task)
        if handler is not None and handler.is_async:
            task.cancel()

    def _give_up(self, job_id: str) -> None:
        """The store no longer lists this attempt as ours (its lease ran out and it was
        rescued): stop it and record nothing, the job's new attempt owns the outcome."""
        entry = self._running.get(job_id)
        if entry is None or entry[1].released:
            return
        task, ctx = entry
        ctx.released = True
        ctx.logger.warning("lost the lease of job %s; abandoning this attempt", job_id)
        task.cancel()

    async def _maintenance_loop(self) -> None:
        settings = self.settings
        last_prune = 0.0
        last_compact = time.monotonic()
        while True:
            await asyncio.sleep(settings.rescue_interval)
            try:
                await self._store(rescue_expired, self._backend)
                await self._store(self._backend.worker_prune, time.time())
                if time.monotonic() - last_compact >= settings.compact_interval:
                    last_compact = time.monotonic()
                    await self._store(self._backend.store_compact)
                if time.monotonic() - last_prune >= settings.prune_interval:
                    last_prune = time.monotonic()
                    await self._store(
                        prune_finished, self._backend, settings.keep_completed, settings.keep_failed
                    )
            except Exception:
                log.exception("maintenance failed; will retry")

    async def _after(self, seconds: float, reason: str) -> None:
        await asyncio.sleep(seconds)
        self._recycle(reason)

    async def _watch_limits(self) -> None:
        """Stop gracefully when memory passes its limit, or when our supervisor died (a
        child must not run on unsupervised)."""
        limits = self._recycling
        me = psutil.Process()
        while True:
            await asyncio.sleep(_LIMIT_CHECK_INTERVAL)
            if limits.parent_pid is not None and os.getppid() != limits.parent_pid:
                self._recycle(f"supervisor {limits.parent_pid} is gone")
                return
            if limits.max_rss_mb is not None:
                rss_mb = me.memory_info().rss / 2**20
                if rss_mb > limits.max_rss_mb:
                    self._recycle(f"memory {rss_mb:.0f} MB over the {limits.max_rss_mb:g} MB limit")
                    return

    # shutdown -----------------------------------------------------------------------------
    async def _shutdown(self) -> None:
        """Let active jobs finish within the grace period, then release the rest unrun."""
        assert self._force
        self._maintenance.cancel()  # its rescue must not take back jobs we are releasing
        if self._running:
            tasks = [task for task, _ in self._running.values()]
            log.info(
                "waiting up to %g s for %d active jobs", self.settings.grace_period, len(tasks)
            )
            everything: asyncio.Future[Any] = asyncio.gather(*tasks, return_exceptions=True)
            forced: asyncio.Future[Any] = asyncio.ensure_future(self._force.wait())
            await asyncio.wait(
                [everything, forced],
                timeout=self.settings.grace_period,
                return_when=asyncio.FIRST_COMPLETED,
            )
            forced.cancel()
        left = list(self._running.values())
        for task, ctx in left:
            ctx.released = True
            task.cancel()
        if left:
            await asyncio.wait([task for task, _ in left], timeout=5)
            await self._release([ctx for _, ctx in left])
        self._completer.hurry()
        try:
            await asyncio.wait_for(self._completer.flush(), timeout=30)
        except TimeoutError:
            log.error("could not record every outcome; those jobs rerun after their lease")

    async def _release(self, contexts: list[JobContext]) -> None:
        params = ReleaseParams(
            self.worker_id,
            tuple(ctx.id for ctx in contexts),
            tuple({ctx.queue for ctx in contexts}),
            time.time(),
        )
        for attempt in range(3):
            try:
                await self._store(self._backend.job_release_many, params)
                log.warning("released %d unfinished jobs back to their queues", len(contexts))
                return
            except Exception:
                log.exception("could not release unfinished jobs (try %d of 3)", attempt + 1)
                await asyncio.sleep(0.2 * 2**attempt)
        log.error("%d unfinished jobs come back when their lease expires", len(contexts))

    @property
    def active_jobs(self) -> Sequence[str]:
        return tuple(self._running)

    @property
    def has_stuck_threads(self) -> bool:
        """True when a sync handler still runs after its job ended (hard timeout, released):
        a thread cannot be stopped, so the process must exit hard to end it."""
        executor = getattr(self, "_executor", None)
        return executor is not None and executor.threads_busy > 0


def _log_failure(fut: Future[Any]) -> None:
    if fut.exception() is not None:
        log.error("could not record progress: %s", fut.exception())
